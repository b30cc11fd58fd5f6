"""Batch scoring on generated tables: whatever the file holds, ``score`` either writes
a complete output (exit 0, one row per input row) or refuses in one line (exit 1),
and never shows a traceback or leaves a temporary file.

The tables are what users really send, badly: columns missing, extra, duplicated,
named like an output column or in odd unicode; numbers too large for float32, tiny,
infinite, missing; text, empty strings and booleans where numbers belong; chunk sizes
of any sign. Hypothesis draws them from a fixed seed (``derandomize``), so a failure
shows again on every run, shrunk to a small table.
"""

from __future__ import annotations

import csv
import tempfile
from pathlib import Path

import mlflow
import numpy as np
import pandas as pd
import pyarrow as pa
import pyarrow.parquet as pq
import pytest
from hypothesis import HealthCheck, event, given, settings
from hypothesis import strategies as st
from sklearn.ensemble import RandomForestClassifier
from sklearn.linear_model import LogisticRegression

from model.dispatch_model import PREDICT_METHODS
from serving import batch as score
from tests.support.factories import package

# A trained model behind each of the model's refusals: a forest refuses values beyond
# float32, the logistic regression refuses gaps, the text-and-boolean pipeline refuses
# values that are not true or false.
MODELS = ("forest", "logistic", "tabular")
FEATURES = {
    "forest": ["petal length (cm)", "petal width (cm)"],
    "logistic": ["petal length (cm)", "petal width (cm)"],
    "tabular": ["code", "flag", "size"],
}


@pytest.fixture
def models(tmp_path, cfg, monkeypatch):
    """(URI, loaded model) of each of :data:`MODELS`, packaged once for all
    examples; batch scoring's loader answers those URIs with the loaded models,
    as loading them again for each example would take most of the test's time."""
    from hydra.utils import instantiate

    from core.config import compose_config
    from steps import package_pyfunc, serialize, train

    built = {}
    for name, estimator in (
        ("forest", RandomForestClassifier(n_estimators=5, random_state=0)),
        ("logistic", LogisticRegression(max_iter=5000)),
    ):
        (tmp_path / name).mkdir()
        info, _, _ = package(estimator, tmp_path / name, cfg)
        built[name] = info.model_uri
    frame = pd.DataFrame(
        {
            "code": ["01", "02", "10", None] * 10,
            "flag": [True, False] * 20,
            "size": [1.0, np.nan, 3.0, 4.5] * 10,
            "label": ["a", "b", "b", "a"] * 10,
        }
    )
    fitted = train.fit_estimator(
        instantiate(compose_config(["model=tabular_logistic_regression"]).model),
        frame,
        ["code", "flag", "size"],
        "label",
    )
    digest = serialize.serialize_estimator(fitted, tmp_path / "tabular.joblib")
    with mlflow.start_run():
        info = package_pyfunc.log_dispatch_model(
            str(tmp_path / "tabular.joblib"), digest, fitted, frame[["code", "flag", "size"]]
        )
    built["tabular"] = info.model_uri
    from serving import batch

    loaded = {uri: batch.load_verified(uri) for uri in built.values()}
    monkeypatch.setattr(batch, "load_verified", loaded.__getitem__)
    return {name: (uri, loaded[uri]) for name, uri in built.items()}


# Values a model takes, most of the time: a table is not refused at its first cell.
PLAUSIBLE = {
    "petal length (cm)": st.floats(min_value=0.1, max_value=7.0),
    "petal width (cm)": st.floats(min_value=0.1, max_value=2.5),
    "code": st.one_of(st.sampled_from(["01", "02", "10"]), st.none()),
    "flag": st.one_of(st.booleans(), st.none()),
    "size": st.one_of(st.floats(min_value=0.0, max_value=9.0), st.none()),
}
NUMBERS = st.one_of(
    st.floats(allow_nan=True, allow_infinity=True),
    # beyond float32, the largest double, a subnormal, signed zero, a gap
    st.sampled_from([1e39, -1e39, 3.5e38, 1e308, 5e-324, -0.0, float("nan")]),
    st.integers(min_value=-(2**70), max_value=2**70),
)
ODD = st.one_of(
    st.text(max_size=6),
    st.sampled_from(["", " ", "nan", "NA", "inf", "-Infinity", "1e400", "0x10", "1,5", "true", "01", "\u00e9"]),
    st.booleans(),
    st.none(),
)
# Names an output column takes, the features of the models, and any text.
NAMES = st.one_of(
    st.text(max_size=8),
    st.sampled_from(["prediction", "proba_0", "proba_a", "log_proba_2", "id", "", "petal width (cm)", "code"]),
)


@st.composite
def column(draw, name: str, length: int) -> list:
    """A feature's plausible values (half the time), the same with one odd value
    somewhere, or extreme numbers, or anything."""
    plausible = PLAUSIBLE.get(name, st.text(max_size=5))
    kind = draw(st.sampled_from(["plausible"] * 4 + ["one odd"] * 2 + ["numbers", "anything"]))
    anything = st.one_of(NUMBERS, ODD)
    values = draw(
        st.lists({"numbers": NUMBERS, "anything": anything}.get(kind, plausible), min_size=length, max_size=length)
    )
    if kind == "one odd" and length:
        values[draw(st.integers(0, length - 1))] = draw(anything)
    return values


@st.composite
def tables(draw):
    """(model name, the table to score, predict method, chunk size, --id-columns or None)."""
    model = draw(st.sampled_from(MODELS))
    length = draw(st.integers(min_value=0, max_value=25))
    kept = st.sampled_from([True] * 19 + [False])  # now and then a feature is missing
    names = [name for name in FEATURES[model] if draw(kept)]
    names += draw(st.lists(NAMES, max_size=3))
    names = draw(st.permutations(names))
    frame = pd.DataFrame(
        {position: draw(column(name, length)) for position, name in enumerate(names)}, index=range(length), dtype=object
    )
    frame.columns = names  # duplicates allowed: a CSV header may repeat a name
    method = draw(st.sampled_from(PREDICT_METHODS))
    chunk_size = draw(st.sampled_from([1, 2, 3, 7, 100_000, 0, -1]))
    id_columns = draw(
        st.one_of(st.none(), st.none(), st.lists(st.sampled_from(names or ["id"]), max_size=2).map(",".join))
    )
    return model, frame, method, chunk_size, id_columns


def write_input(frame: pd.DataFrame, path: Path, encoding: str) -> bool:
    """Write ``frame`` as CSV (in ``encoding``; what latin-1 cannot hold becomes ``?``)
    or Parquet; False if Parquet cannot hold it (a repeated name). A Parquet column
    mixing types is written as its text, as a CSV would hold it."""
    if path.suffix == ".csv":
        path.write_bytes(frame.to_csv(index=False).encode(encoding, errors="replace"))
        return True
    if frame.columns.duplicated().any():
        return False
    arrays = {}
    for name in frame.columns:
        try:
            arrays[name] = pa.array(frame[name].tolist(), from_pandas=True)
        except (pa.ArrowInvalid, pa.ArrowTypeError, OverflowError):
            arrays[name] = pa.array([None if v is None else str(v) for v in frame[name]])
    pq.write_table(pa.table(arrays), path)
    return True


def output_rows(path: Path) -> tuple[int, list[str]]:
    """The number of rows and the column names of a written output."""
    if path.suffix == ".parquet":
        table = pq.read_table(path)
        return table.num_rows, table.column_names
    with open(path, newline="", encoding="utf-8") as handle:
        header = next(csv.reader(handle))  # as written: pandas would rename a repeated name
    return len(pd.read_csv(path, dtype=str, keep_default_na=False)), header


EARLIER = b"an earlier result"


@settings(
    max_examples=150,
    deadline=10_000,
    derandomize=True,
    database=None,
    # The models and tmp_path are shared by the examples on purpose (each
    # example writes in its own directory); building them per example is minutes.
    suppress_health_check=[HealthCheck.function_scoped_fixture, HealthCheck.too_slow],
)
@given(
    case=tables(),
    formats=st.sampled_from([(".csv", ".csv"), (".csv", ".parquet"), (".parquet", ".csv"), (".parquet", ".parquet")]),
    encoding=st.sampled_from(["utf-8"] * 3 + ["latin-1"]),
    output=st.sampled_from(["absent"] * 3 + ["earlier"] * 2 + ["directory"]),
)
def test_any_table_is_scored_whole_or_refused_in_one_line(models, capsys, case, formats, encoding, output):
    model, frame, method, chunk_size, id_columns = case
    model_uri, loaded = models[model]
    with tempfile.TemporaryDirectory() as folder:
        folder = Path(folder)
        source, out = folder / f"in{formats[0]}", folder / f"out{formats[1]}"
        if not write_input(frame, source, encoding):
            return
        if output == "earlier":
            out.write_bytes(EARLIER)
        elif output == "directory":
            out.mkdir()
        argv = [
            "--input",
            str(source),
            "--output",
            str(out),
            "--model-uri",
            model_uri,
            "--predict-method",
            method,
            f"--chunk-size={chunk_size}",
            "--no-progress",
        ]
        if id_columns is not None:
            argv.append(f"--id-columns={id_columns}")
        capsys.readouterr()
        try:
            score.main(argv)
            code = 0
        except SystemExit as exit_info:
            code = exit_info.code
        err = capsys.readouterr().err.splitlines()
        event("scored" if code == 0 else "refused")
        assert list(folder.rglob("*.partial")) == []
        if code == 0:
            rows, names = output_rows(out)
            assert rows == len(frame)
            assert all(line.startswith("score: outside the training data's contract: ") for line in err), err
            outputs = score.output_columns(method, loaded.metadata.metadata["classes"])
            assert names[-len(outputs) :] == outputs and len(names) == len(set(names))
        else:
            assert code == 1
            assert len(err) == 1 and err[0].startswith("score: error: "), err
            if output == "earlier":
                assert out.read_bytes() == EARLIER
            elif output == "directory":
                assert list(out.iterdir()) == []
            else:
                assert not out.exists()
