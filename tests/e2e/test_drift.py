"""Drift end to end, from the champion store (version 1, trained on iris): `make drift`,
and `mlflow run -e score` recording the check on its run."""

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
