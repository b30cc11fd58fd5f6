"""Spark scoring on a standalone cluster (a master and one worker started here from the
pyspark package): the champion travels with the job, the executor checks its files before
loading them, and a copy that differs fails the job with one line."""

from __future__ import annotations

import re
import sys

import mlflow
import numpy as np
import pandas as pd
import pytest
from sklearn.linear_model import LogisticRegression

from core import contracts
from core.integrity import load_verified
from tests.support.factories import FEATURES, package, rows
from tests.support.spark_cluster import Cluster, run_driver, standalone_cluster

pytest.importorskip("pyspark", reason="pyspark is not installed (requirements-dev.lock)")

VERIFIED = "verified the files of models:/iris-classifier/1"


@pytest.fixture(scope="module")
def cluster(tmp_path_factory) -> Cluster:
    with standalone_cluster(tmp_path_factory.mktemp("spark-cluster")) as running:
        yield running


@pytest.fixture
def champion_v1(tmp_path, cfg) -> None:
    """Version 1 of the default registered model, champion (as ``make run`` leaves it)."""
    info, _, _ = package(LogisticRegression(max_iter=5000), tmp_path, cfg)
    version = mlflow.register_model(info.model_uri, contracts.MODEL_NAME).version
    mlflow.MlflowClient().set_registered_model_alias(contracts.MODEL_NAME, contracts.CHAMPION_ALIAS, str(version))


def executor_logs(cluster: Cluster, app_name: str = "score_spark") -> dict[str, str]:
    """The stderr of every executor of the newest application named ``app_name``, by path."""
    state = cluster.state()
    apps = [app for app in state["completedapps"] + state["activeapps"] if app["name"] == app_name]
    assert apps, f"the master ran no application {app_name!r}: {state}"
    newest = max(apps, key=lambda app: app["starttime"])
    logs = {str(p): p.read_text(errors="replace") for p in (cluster.work_dir / newest["id"]).glob("*/stderr")}
    assert logs, f"application {newest['id']} ran no executor on the worker"
    return logs


def test_the_champion_scores_on_the_cluster_as_in_process(cluster, champion_v1, tmp_path):
    frame = rows(300)
    frame.to_parquet(tmp_path / "in.parquet")
    out = tmp_path / "scored"
    command = ["serving.spark", "--master", cluster.url, "--input", str(tmp_path / "in.parquet")]
    result = run_driver([*command, "--output", str(out), "--predict-method", "predict_proba"])
    assert result.returncode == 0, result.stderr[-3000:]

    scored = pd.read_parquet(out).sort_values("id", ascending=False).reset_index(drop=True)
    expected = load_verified(contracts.CHAMPION_URI).predict(
        frame[FEATURES], params={"predict_method": "predict_proba"}
    )
    assert scored["note"].tolist() == frame["note"].tolist()
    np.testing.assert_allclose(scored[["proba_0", "proba_1", "proba_2"]].to_numpy(), expected, rtol=0, atol=1e-12)
    # The rows were scored on the worker's executor, which fetched the model from the driver
    # (the worker has no tracking store and no project) and checked it before loading it,
    # in the driver's Python (PYSPARK_PYTHON), which the worker was not told of.
    logs = executor_logs(cluster)
    assert any(re.search(r"Fetching spark://\S+/files/model-\w+\.zip", text) for text in logs.values()), logs
    checked = [line for text in logs.values() for line in text.splitlines() if VERIFIED in line]
    assert checked and all(line.endswith(f"running {sys.executable}") for line in checked), logs


def test_a_copy_changed_after_the_driver_checked_it_fails_on_the_executor(cluster, champion_v1, tmp_path):
    rows(20).to_parquet(tmp_path / "in.parquet")
    marker = tmp_path / "the-changed-code-ran"
    out = tmp_path / "scored"
    command = ["tests.support.spark_tampered", str(marker), "--master", cluster.url]
    # One attempt per task: a refusal is final (Spark's default of 4 would refuse 3 more times).
    once = {"spark.task.maxFailures": "1"}
    result = run_driver([*command, "--input", str(tmp_path / "in.parquet"), "--output", str(out)], conf=once)

    assert result.returncode == 1, result.stderr[-3000:]
    errors = [line for line in result.stderr.splitlines() if line.startswith("score_spark: error:")]
    assert errors == result.stderr.splitlines()[-1:], result.stderr[-3000:]  # one line, the last
    assert "refusing to load models:/iris-classifier/1 on the Spark executor at " in errors[0]
    assert "the copy shipped with the job differs from the files recorded when it was logged" in errors[0]
    assert not marker.exists(), "the changed model code ran"
    assert not out.exists(), "a refused job left output"
    logs = executor_logs(cluster)
    assert any("UntrustedModel: refusing to load" in text for text in logs.values()), logs
    assert not any(VERIFIED in text for text in logs.values())
