"""``ops.retrain --when drift``: the pipeline runs only when the newest batch drifted from the
champion's training data or the champion's gated metric dropped on its labelled rows; one
line says why, and the check is recorded on the champion's drift run. The pipeline itself is
stubbed here (tests/e2e/test_drift_retrain.py runs it for real)."""

from __future__ import annotations

import os

import mlflow
import pandas as pd
import pytest
from sklearn.datasets import load_iris

from core import contracts
from core.drift_record import MODEL_ID_TAG
from ops import retrain


@pytest.fixture
def pipeline_runs(monkeypatch):
    """The pipeline runs retrain would start: recorded, not run."""
    started = []
    monkeypatch.setattr(retrain, "run_pipeline", lambda overrides, force: started.append(list(overrides)) or 0)
    # retrain.main sets both for the pipeline it starts: restored after the test.
    monkeypatch.setenv("PATH", os.environ["PATH"])
    monkeypatch.setenv(contracts.TRIGGER_ENV, "manual")
    return started


def iris() -> pd.DataFrame:
    return load_iris(as_frame=True).frame


def written(frame: pd.DataFrame, path) -> str:
    frame.to_csv(path, index=False)
    return str(path)


def test_a_drop_of_the_champions_accuracy_on_labelled_rows_retrains(champion, pipeline_runs, tmp_path, capsys):
    relabelled = iris().sample(90, random_state=0)
    relabelled["target"] = (relabelled["target"] + 1) % 3
    batch = written(relabelled, tmp_path / "relabelled.csv")
    retrain.main(["--when", "drift", "--input", batch, "data=file", f"data.path={batch}"])
    (line,) = capsys.readouterr().out.splitlines()
    assert line.startswith(f"retrain: retraining: {batch} against iris-classifier version 1: 0 of 2 features drifted")
    assert "accuracy 0.0" in line and "> drift.retrain.max_drop 0.05" in line and "(report runs:/" in line
    assert pipeline_runs == [["data=file", f"data.path={batch}"]]


def test_an_unshifted_labelled_batch_does_nothing_and_says_why(champion, pipeline_runs, tmp_path, capsys):
    batch = written(iris().sample(90, random_state=0), tmp_path / "sample.csv")
    retrain.main(["--when", "drift", "data=file", f"data.path={batch}"])  # the batch: data.path
    (line,) = capsys.readouterr().out.splitlines()
    assert line.startswith(f"retrain: not retraining: {batch} against iris-classifier version 1: 0 of 2 features")
    assert "(share 0.00 < drift.retrain.share 0.3)" in line and "≤ drift.retrain.max_drop 0.05" in line
    assert pipeline_runs == []
    (run,) = mlflow.search_runs(
        search_all_experiments=True, filter_string=f"tags.`{MODEL_ID_TAG}` != ''", output_format="list"
    )
    assert run.data.metrics["drift.share"] == 0.0  # the check is recorded all the same


def test_features_that_drifted_retrain_without_labels(champion, pipeline_runs, tmp_path, capsys):
    frame = iris()
    batch = written(frame[frame.target == 2].drop(columns="target"), tmp_path / "virginica.csv")
    retrain.main(["--when", "drift", "--input", batch])
    (line,) = capsys.readouterr().out.splitlines()
    assert "retraining:" in line and "(share 1.00 ≥ drift.retrain.share 0.3); no labelled rows" in line
    assert pipeline_runs == [[]]
    # Fewer labelled rows than drift.retrain.min_labelled_rows: reported, not acted on.
    few = iris().sample(10, random_state=0)
    few["target"] = (few["target"] + 1) % 3
    retrain.main(["--when", "drift", "--input", written(few, tmp_path / "few.csv")])
    assert "10 labelled rows, fewer than drift.retrain.min_labelled_rows 30" in capsys.readouterr().out
    assert len(pipeline_runs) == 1


def test_without_a_champion_to_compare_with_it_retrains(pipeline_runs, tmp_path, capsys):
    batch = written(iris(), tmp_path / "batch.csv")
    retrain.main(["--when", "drift", "--input", batch])
    assert (
        capsys.readouterr().out.strip()
        == f"retrain: retraining: iris-classifier has no champion to compare {batch} with"
    )
    assert pipeline_runs == [[]]


@pytest.mark.parametrize(
    "args, code, message",
    [
        (["--when", "drift"], 2, "--when drift needs the newest batch: --input FILE, or data=file data.path=FILE"),
        (["--input", "x.csv"], 2, "--input is read only with --when drift"),
        (["--when", "drift", "--input", "x.csv", "-m", "model=knn,svc"], 2, "no -m"),
        (["--when", "drift", "--input", "missing.csv"], 1, "Input file missing.csv does not exist"),
    ],
)
def test_bad_arguments_or_input_are_one_line_and_nothing_runs(champion, pipeline_runs, capsys, args, code, message):
    with pytest.raises(SystemExit) as exit_info:
        retrain.main(args)
    assert exit_info.value.code == code
    err = capsys.readouterr().err
    assert message in err and len(err.strip().splitlines()) == 1
    assert pipeline_runs == []
