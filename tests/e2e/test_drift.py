"""Drift end to end, from the champion store (version 1, trained on iris): `make drift`,
`mlflow run -e score` recording the check on its run, and `ops.retrain --when drift`
running the real pipeline only for a batch on which the champion's accuracy dropped."""

from __future__ import annotations

import subprocess
import sys

import mlflow
import pandas as pd
from mlflow import MlflowClient
from sklearn.datasets import load_iris

from core import contracts
from core.drift_record import MODEL_ID_TAG

NAME = contracts.MODEL_NAME


def iris() -> pd.DataFrame:
    """The rows the champion's data were (its features and target; a table with other columns
    would train a version with other inputs, which the gate keeps as challenger)."""
    return load_iris(as_frame=True).frame[["petal length (cm)", "petal width (cm)", "target"]]


def run(command: list[str], env, cwd, timeout: float = 600) -> subprocess.CompletedProcess:
    env = {**env, "PYTHONPATH": str(contracts.PROJECT_DIR)}
    return subprocess.run(command, env=env, cwd=cwd, capture_output=True, text=True, timeout=timeout)


def drift_run():
    (found,) = mlflow.search_runs(
        search_all_experiments=True, filter_string=f"tags.`{MODEL_ID_TAG}` != ''", output_format="list"
    )
    return found


def test_make_drift_and_the_score_entry_point_record_each_check(champion, project_env, tmp_path):
    frame = iris()
    setosa = tmp_path / "setosa.csv"
    frame[frame.target == 0].to_csv(setosa, index=False)
    made = run(["make", "-s", "-C", str(contracts.PROJECT_DIR), "drift", f"INPUT={setosa}"], project_env, tmp_path)
    assert made.returncode == 0, made.stderr[-3000:]
    assert "against iris-classifier version 1: 2 of 2 features drifted (share 1.00)" in made.stdout

    out = tmp_path / "out.csv"
    scored = run(
        [sys.executable, "-m", "mlflow", "run", str(contracts.PROJECT_DIR), "-e", "score", "--env-manager", "local"]
        + ["-P", f"input={setosa}", "-P", f"output={out}"],
        project_env,
        tmp_path,
    )
    assert scored.returncode == 0, scored.stderr[-3000:]
    (score,) = mlflow.search_runs(filter_string="tags.`mlflow.project.entryPoint` = 'score'", output_format="list")
    assert score.data.metrics["drift.share"] == 1.0 and score.data.metrics["batch.labelled_rows"] == 50
    assert "drift_report.html" in {a.path for a in MlflowClient().list_artifacts(score.info.run_id)}
    assert "artifactPath/drift_report.html" in score.data.tags["mlflow.note.content"]
    history = drift_run()  # both checks on version 1's one drift run
    assert history.data.metrics["checks"] == 2 and history.info.run_id in score.data.tags["mlflow.note.content"]


def test_retrain_when_drift_runs_the_pipeline_only_for_a_drop_of_accuracy(champion, project_env, tmp_path):
    steady = tmp_path / "steady.csv"
    iris().sample(90, random_state=0).to_csv(steady, index=False)
    command = [sys.executable, "-m", "ops.retrain", "--when", "drift", "data=file", f"data.path={steady}"]
    quiet = run(command, project_env, tmp_path)
    assert quiet.returncode == 0, quiet.stderr[-3000:]
    assert quiet.stdout.startswith("retrain: not retraining: ") and "pipeline" not in quiet.stdout
    assert len(mlflow.search_runs(filter_string=f"tags.`{contracts.STEP_TAG}` = 'main'", output_format="list")) == 1

    relabelled = tmp_path / "relabelled.csv"
    moved = iris().sample(150, random_state=1)
    moved["target"] = (moved["target"] + 1) % 3  # the same flowers, named otherwise
    moved.to_csv(relabelled, index=False)
    command = [sys.executable, "-m", "ops.retrain", "--when", "drift", "data=file", f"data.path={relabelled}"]
    acted = run(command, project_env, tmp_path)
    assert acted.returncode == 0, acted.stderr[-3000:]
    first = acted.stdout.splitlines()[0]
    assert first.startswith("retraining: ", len("retrain: ")) and "> drift.retrain.max_drop 0.05" in first
    assert "outcome: promoted version 2 to champion" in acted.stdout
    assert drift_run().data.metrics["checks"] == 2  # both checks on version 1's drift run
