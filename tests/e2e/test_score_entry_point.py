"""The `score` entry point through `mlflow run`: parameters in, a scored file and a run out."""

from __future__ import annotations

import subprocess
import sys

import mlflow
import numpy as np
import pandas as pd
import pytest
from sklearn.linear_model import LogisticRegression

from core import contracts
from tests.support.factories import FEATURES, package, rows


@pytest.fixture
def model_and_estimator(tmp_path, cfg):
    info, estimator, _ = package(LogisticRegression(max_iter=5000), tmp_path, cfg)
    return mlflow.pyfunc.load_model(info.model_uri), estimator, info.model_uri


def test_score_entry_point_through_mlflow_run(model_and_estimator, tmp_path, project_env):
    _, estimator, logged_uri = model_and_estimator
    version = str(mlflow.register_model(logged_uri, contracts.MODEL_NAME).version)
    mlflow.MlflowClient().set_registered_model_alias(contracts.MODEL_NAME, contracts.CHAMPION_ALIAS, version)
    model_uri = contracts.CHAMPION_URI
    source, out = tmp_path / "in.parquet", tmp_path / "out.csv"
    frame = rows(50)
    frame.to_parquet(source)
    result = subprocess.run(
        [
            sys.executable,
            "-m",
            "mlflow",
            "run",
            str(contracts.PROJECT_DIR),
            "-e",
            "score",
            "--env-manager",
            "local",
            "-P",
            f"input={source}",
            "-P",
            f"output={out}",
            "-P",
            f"model_uri={model_uri}",
            "-P",
            "predict_method=predict",
        ],
        cwd=tmp_path,
        env=project_env,
        capture_output=True,
        text=True,
        timeout=300,
    )
    assert result.returncode == 0, result.stderr[-3000:]
    np.testing.assert_array_equal(pd.read_csv(out)["prediction"], estimator.predict(frame[FEATURES]))
    (run,) = mlflow.search_runs(filter_string="tags.`mlflow.project.entryPoint` = 'score'", output_format="list")
    assert run.data.metrics["rows_scored"] == 50
    assert run.info.run_name == "score in.parquet"  # as the MLflow UI's runs table shows it
    assert run.data.tags[contracts.SCORED_BY_VERSION_KEY] == version  # the version the alias named when it ran
    assert run.data.tags[contracts.SCORED_BY_URI_KEY] == f"models:/{contracts.MODEL_NAME}/{version}"
