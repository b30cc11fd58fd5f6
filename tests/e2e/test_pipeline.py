"""End to end: the real `mlflow run . --env-manager local` in a temporary tracking store.

The default pipeline's `mlflow run` is the one that built the session's champion store
(tests/support/champion_store.py): its test reads a copy of that store and what the
command printed, rather than running the same pipeline again.
"""

from __future__ import annotations

import json

import mlflow
import numpy as np
import pandas as pd
import pytest
from mlflow import MlflowClient
from mlflow.exceptions import MlflowException
from sklearn.datasets import load_iris
from sklearn.linear_model import LogisticRegression
from sklearn.model_selection import train_test_split

from core import contracts
from pipeline import graph
from pipeline.processes.step import read_outputs
from tests.support import champion_store
from tests.support.factories import mlflow_run

STEP_NAMES = list(graph.NAMES)


def runs_by_entry_point() -> dict[str, list]:
    runs = mlflow.search_runs(search_all_experiments=True, output_format="list")
    grouped: dict[str, list] = {}
    for run in runs:
        grouped.setdefault(run.data.tags.get("mlflow.project.entryPoint"), []).append(run)
    return grouped


def test_pipeline_registers_the_tutorial_model_as_champion(champion, champion_template):
    # `mlflow run .` with the default config exited 0 (champion_store.build checks it).
    stdout = (champion_template / champion_store.STDOUT).read_text()

    runs = runs_by_entry_point()
    (parent,) = runs["main"]
    children = {name: runs[name] for name in STEP_NAMES}
    assert all(len(found) == 1 for found in children.values())
    children = {name: found[0] for name, found in children.items()}
    for child in children.values():
        assert child.data.tags["mlflow.parentRunId"] == parent.info.run_id
        assert child.info.status == "FINISHED"
        assert mlflow.artifacts.load_text(f"runs:/{child.info.run_id}/config.yaml")

    # URIs flow from one step to the next as parameters.
    out = {name: read_outputs(run.info.run_id) for name, run in children.items()}
    assert all(set(out[name]) <= set(graph.BY_NAME[name].outputs) for name in out), out
    assert children["serialize"].data.params["model_uri"] == out["train"]["model_uri"]
    assert children["package_pyfunc"].data.params["joblib_uri"] == out["serialize"]["joblib_uri"]
    assert children["evaluate"].data.params["model_uri"] == out["package_pyfunc"]["registered_model_uri"]
    assert children["evaluate"].data.params["holdout_uri"] == out["train"]["holdout_uri"]
    assert all(
        uri.startswith(("runs:/", "models:/")) for step in out.values() for k, uri in step.items() if k.endswith("_uri")
    )

    version = MlflowClient().get_model_version_by_alias("iris-classifier", "champion")
    assert version.tags[contracts.VALIDATION_STATUS_TAG] == "passed"
    assert parent.data.tags[contracts.VALIDATION_STATUS_TAG] == "passed"
    assert parent.data.tags["registered_model_version"] == str(version.version)
    for name in STEP_NAMES:
        assert name in stdout
    assert "validation: passed" in stdout

    # The tutorial, done by hand: same holdout, same predictions.
    iris = load_iris()
    x_train, x_test, y_train, _ = train_test_split(iris.data[:, 2:], iris.target, test_size=0.2, random_state=9001)
    direct = LogisticRegression(random_state=0, max_iter=5000, solver="newton-cg").fit(x_train, y_train)
    champion = mlflow.pyfunc.load_model("models:/iris-classifier@champion")
    frame = pd.DataFrame(x_test, columns=["petal length (cm)", "petal width (cm)"])
    assert len(frame) == 30
    np.testing.assert_array_equal(champion.predict(frame, params={"predict_method": "predict"}), direct.predict(x_test))
    np.testing.assert_allclose(champion.predict(frame), direct.predict_proba(x_test), rtol=0, atol=1e-9)
    np.testing.assert_allclose(
        champion.predict(frame, params={"predict_method": "predict_log_proba"}),
        direct.predict_log_proba(x_test),
        rtol=0,
        atol=1e-9,
    )


def test_overrides_in_one_option_reach_every_step_and_a_model_without_probabilities_is_gated_on_labels(
    project_env, tmp_path
):
    """One run for two things: several overrides in one ``-P hydra_options`` (a config
    group among them) reach every step; and an SVC, which offers ``predict`` only, is
    validated on labels and kept from champion by the default gate (log_loss)."""
    overrides = "model=svc model.C=0.5 data.test_size=0.3"
    result = mlflow_run(project_env, tmp_path, overrides)
    assert result.returncode == 0, result.stderr[-3000:]
    runs = runs_by_entry_point()
    (train_run,) = runs["train"]
    assert train_run.data.params["model.C"] == "0.5"
    assert train_run.data.params["data.test_size"] == "0.3"
    holdout_uri = read_outputs(train_run.info.run_id)["holdout_uri"]
    assert len(pd.read_parquet(mlflow.artifacts.download_artifacts(holdout_uri))) == 45
    for name in ["main", *STEP_NAMES]:
        (run,) = runs[name]
        assert run.data.tags[contracts.OVERRIDES_TAG] == overrides
        config = mlflow.artifacts.load_text(f"runs:/{run.info.run_id}/config.yaml")
        assert "C: 0.5" in config and "sklearn.svm.SVC" in config

    assert "validation: passed" in result.stdout
    client = MlflowClient()
    version = client.get_model_version("iris-classifier", "1")
    assert version.tags[contracts.VALIDATION_STATUS_TAG] == "passed"
    # The default gate compares log_loss, which an SVC cannot give: not champion.
    assert version.tags["gate.outcome"] == "challenger"
    assert "log_loss cannot be computed" in version.tags["gate.reason"]
    assert version.aliases == ["challenger"]
    (evaluate_run,) = runs["evaluate"]
    checks = json.loads(mlflow.artifacts.load_text(f"runs:/{evaluate_run.info.run_id}/validation.json"))
    names = {check["name"] for check in checks["checks"]}
    assert {"predict_labels_identical", "predict_proba_rejected", "predict_log_proba_rejected"} <= names
    assert "predict_proba_matches_reference" not in names


def test_unknown_override_fails_before_training(project_env, tmp_path):
    result = mlflow_run(project_env, tmp_path, "model.nonexistent=1")
    assert result.returncode != 0
    assert "Could not override 'model.nonexistent'" in result.stderr
    runs = runs_by_entry_point()
    assert set(runs) == {"main"}
    assert runs["main"][0].info.status == "FAILED"
    assert MlflowClient().search_registered_models() == []


def test_failed_validation_fails_the_pipeline_and_moves_no_alias(champion, project_env, tmp_path):
    # The champion's joblib file damaged in the store: its files no longer match their record. A
    # config only evaluate reads changes, so train, serialize and package_pyfunc come
    # from the cache and evaluate re-validates the champion, version 1.
    for stored in (tmp_path / "artifacts").rglob("artifacts/estimator.joblib"):
        stored.write_bytes(stored.read_bytes() + b"tampered")
    result = mlflow_run(project_env, tmp_path, "validation.atol=1e-12")
    assert result.returncode != 0
    assert "validation: failed" in result.stdout
    runs = {
        name: [r for r in found if r.info.run_id != champion.get(f"{name}_run_id")]
        for name, found in runs_by_entry_point().items()
    }
    (parent,) = [r for r in runs["main"] if r.info.run_id != champion["pipeline_run_id"]]
    assert parent.info.status == "FAILED"
    assert parent.data.tags["pipeline.step.package_pyfunc.status"] == "CACHED"
    (evaluate_run,) = runs["evaluate"]
    assert evaluate_run.info.status == "FAILED"
    assert (
        "load_model (UntrustedModel: refusing to load models:/iris-classifier/1: its files in the artifact store differ"
    ) in evaluate_run.data.tags[contracts.ERROR_TAG]
    client = MlflowClient()
    version = client.get_model_version("iris-classifier", "1")
    assert version.tags[contracts.VALIDATION_STATUS_TAG] == "failed"
    # Fail closed: the version that failed loses the champion alias it held.
    assert version.aliases == []
    with pytest.raises(MlflowException):
        client.get_model_version_by_alias("iris-classifier", "champion")


def test_estimator_that_cannot_be_built_fails_before_training(project_env, tmp_path):
    result = mlflow_run(project_env, tmp_path, "model._target_=sklearn.linear_model.NoSuchModel")
    assert result.returncode != 0
    assert "failed at step train: cannot build the estimator from config 'model'" in result.stdout
    assert "NoSuchModel" in result.stdout
    assert "train" not in runs_by_entry_point()
    assert MlflowClient().search_registered_models() == []
