"""The sweep's choice of winner against a real registry: the jobs table reads what each
job's model offers, the champion's methods and rolled-back versions come from the
registry, and a job the gate would refuse does not win (no sweep is launched)."""

from __future__ import annotations

import mlflow
from mlflow import MlflowClient
from mlflow.utils.mlflow_tags import MLFLOW_PARENT_RUN_ID
from sklearn.neighbors import KNeighborsClassifier

from core import contracts
from core.config import compose_config
from pipeline.sweeps import job as sweep_job
from pipeline.sweeps import sweep
from pipeline.sweeps import winner as sweep_winner
from tests.support.factories import package

# What the default sweep model=logistic_regression,knn records for its two jobs on iris.
LOGISTIC = {"accuracy": 1.0, "f1_macro": 1.0, "roc_auc_ovr": 1.0, "log_loss": 0.14005276995674823}
KNN = {"accuracy": 1.0, "f1_macro": 1.0, "roc_auc_ovr": 1.0, "log_loss": 0.017027520792199904}


def record_job(sweep_run_id: str, overrides: str, metrics: dict, pyfunc_model_uri: str, version: str = ""):
    """A finished job run under the sweep run, tagged as ``sweep_job.run_job`` tags one."""
    client = MlflowClient()
    experiment_id = mlflow.get_run(sweep_run_id).info.experiment_id
    outputs = {"validation_status": "passed", "pyfunc_model_uri": pyfunc_model_uri}
    if version:
        outputs["registered_model_version"] = version
    run = client.create_run(
        experiment_id,
        tags={
            MLFLOW_PARENT_RUN_ID: sweep_run_id,
            contracts.STEP_TAG: sweep_job.JOB_STEP,
            "sweep.overrides": overrides,
            **{contracts.OUTPUT_TAG_PREFIX + key: value for key, value in outputs.items()},
        },
    )
    for name, value in metrics.items():
        client.log_metric(run.info.run_id, name, value)
    client.set_terminated(run.info.run_id, "FINISHED")


def test_the_sweep_picks_the_job_the_gate_can_promote(champion, cfg, tmp_path):
    """Champion: the default logistic regression (version 1). kNN ties on accuracy and
    beats it on log loss but lacks predict_log_proba: the logistic job wins."""
    knn, _, _ = package(KNeighborsClassifier(), tmp_path, cfg)
    with mlflow.start_run() as sweep_run:
        pass
    record_job(sweep_run.info.run_id, "model=logistic_regression", LOGISTIC, champion["pyfunc_model_uri"], "1")
    record_job(sweep_run.info.run_id, "model=knn", KNN, knn.model_uri)
    jobs = sweep.jobs_table(sweep_run.info.run_id, [["model=logistic_regression"], ["model=knn"]])
    assert list(jobs["methods"]) == ["predict, predict_proba, predict_log_proba", "predict, predict_proba"]

    needs = sweep_winner.gate_needs(MlflowClient(), cfg, list(jobs["registered_version"]))
    assert needs == sweep_winner.GateNeeds(
        ("accuracy", "log_loss"), "1", ("predict", "predict_proba", "predict_log_proba"), frozenset()
    )
    assert sweep_winner.best_job(jobs, "accuracy", needs)["overrides"] == "model=logistic_regression"

    # With gate.keep_methods=false the gate would take kNN, and so does the sweep.
    allowed = sweep_winner.gate_needs(MlflowClient(), compose_config(["gate.keep_methods=false"]), ["1"])
    assert allowed.champion_methods == ()
    assert sweep_winner.best_job(jobs, "accuracy", allowed)["overrides"] == "model=knn"

    # A rolled-back version is read as such from the registry.
    MlflowClient().set_model_version_tag("iris-classifier", "1", "gate.outcome", "rolled_back")
    assert sweep_winner.gate_needs(MlflowClient(), cfg, ["1", ""]).rolled_back == {"1"}


def test_an_unchanged_sweep_is_looked_up_whatever_quotes_its_overrides_hold():
    """A sweep's overrides may quote values (registry.model_name='iris x'): finding the sweep
    it repeats must not put them in a search filter, where the quotes break it."""
    from pipeline import unchanged

    arguments = ["registry.model_name='iris x'", "model=knn,svc"]
    experiment_id = mlflow.get_experiment_by_name("tests").experiment_id
    client = mlflow.MlflowClient()
    run = client.create_run(experiment_id, tags={"pipeline.step": "sweep", "sweep.overrides": " ".join(arguments)})
    client.set_terminated(run.info.run_id, "FINISHED")
    # Found, and not repeated: it never reached the gate (no best job).
    assert unchanged.repeated_sweep(arguments, set(), [], experiment_id) is None
