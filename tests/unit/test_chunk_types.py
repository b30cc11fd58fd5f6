"""Batch scoring's refusals (core.chunk_types, serving.batch): one short line naming
the file, row and column, never MLflow's quote of the rows."""

from __future__ import annotations

from pathlib import Path

import pandas as pd
import pytest
from mlflow.exceptions import MlflowException

from core.chunk_types import ScoringError, check_chunk
from serving import batch

SOURCE = Path("in.csv")


def test_a_gap_in_an_integer_column_names_row_and_column():
    chunk = pd.DataFrame({"count": [3, None, 5], "size": [1.0, None, 2.0]}, index=[40, 41, 42])
    with pytest.raises(ScoringError) as refused:
        check_chunk(chunk, {"size": "double", "count": "long"}, SOURCE)
    assert str(refused.value) == (
        "in.csv: row 41, column 'count': empty, where the model takes a whole number "
        "(its signature types the column long, which has no gap)"
    )
    # The first problem in the column is named, a gap or a value.
    with pytest.raises(ScoringError, match=r"row 40, column 'count': 'x' is not a whole number"):
        check_chunk(pd.DataFrame({"count": ["x", None]}, index=[40, 41]), {"count": "long"}, SOURCE)
    assert check_chunk(chunk, {"size": "double"}, SOURCE)["size"].isna().sum() == 1  # a gap where it may be


def test_an_mlflow_refusal_is_one_short_line_without_rows(monkeypatch, capsys, tmp_path):
    rows = pd.DataFrame({"count": [123456.0] * 200})
    dump = (
        f"Failed to enforce schema of data '{rows}' with schema '['count': long (required)]'. "
        "Error: Incompatible input types for column count. Can not safely convert float64 to int64."
    )
    monkeypatch.setattr(batch, "scored_by", lambda uri: (uri, {}))
    monkeypatch.setattr(batch, "load_verified", lambda uri: object())

    def refuse(*args, **kwargs):
        raise MlflowException(dump)

    monkeypatch.setattr(batch, "score_file", refuse)
    with pytest.raises(SystemExit):
        batch.main(
            ["--input", str(tmp_path / "in.csv"), "--output", str(tmp_path / "out.csv"), "--model-uri", "models:/m/1"]
        )
    (line,) = capsys.readouterr().err.splitlines()
    assert "123456" not in line and len(line) < 600
    assert "Incompatible input types for column count" in line
