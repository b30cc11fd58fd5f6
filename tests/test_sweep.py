"""Sweeps: expansion, per-job failures, selection of the best job, and real multiruns end to end."""

from __future__ import annotations

import json
import subprocess
import sys

import mlflow
import pandas as pd
import pytest
from hydra.errors import ConfigCompositionException
from mlflow import MlflowClient

from core import contracts
from core.config import Metric, compose_config
from core.metrics import HOLDOUT_METRICS
from hydra_plugins.pipeline_sweeper.pipeline_sweeper import compose_errors, expand
from pipeline import graph, sweep
from pipeline.step import read_outputs
from tests.factories import mlflow_run


def test_expansion_is_hydras_cartesian_product():
    (jobs,) = expand(["model=logistic_regression,random_forest", "model.C=0.1,1", "data.test_size=0.3"])
    assert jobs == [
        ["model=logistic_regression", "model.C=0.1", "data.test_size=0.3"],
        ["model=logistic_regression", "model.C=1", "data.test_size=0.3"],
        ["model=random_forest", "model.C=0.1", "data.test_size=0.3"],
        ["model=random_forest", "model.C=1", "data.test_size=0.3"],
    ]


def test_combinations_that_cannot_be_composed_are_named_with_hydras_message():
    from hydra.errors import MissingConfigException

    errors = compose_errors(["model=logistic_regression,random_forest,no_such_model", "model.C=0.5"],
                            compose_config)
    assert [job for job, _ in errors] == [
        ["model=random_forest", "model.C=0.5"], ["model=no_such_model", "model.C=0.5"]
    ]
    job, err = errors[0]
    assert sweep.uncomposable_message(job, err) == (
        "cannot compose the config: Could not override 'model.C'. "
        "That key does not exist with model=random_forest model.C=0.5."
    )
    # A config option that does not exist: the sweep refuses it before any job (exit 2).
    assert isinstance(errors[1][1], MissingConfigException) and "no_such_model" in str(errors[1][1])


@pytest.mark.parametrize(
    ("argv", "expected"),
    [
        (["-m", "model=knn"], (True, ["model=knn"])),
        (["--multirun", "model=knn"], (True, ["model=knn"])),
        (["--force", "", "-m model=knn,svc data.test_size=0.3"], (True, ["--force", "", "model=knn,svc data.test_size=0.3"])),
        (["model=knn"], (False, ["model=knn"])),
        (["model.C=0.5 -m"], (False, ["model.C=0.5 -m"])),  # only a leading flag counts
    ],
)
def test_multirun_flag(argv, expected):
    assert sweep.multirun_flag(argv) == expected


def test_the_sweeps_own_overrides_are_not_part_of_a_job():
    assert sweep.job_overrides(["model=knn", "sweep.metric=f1_macro", "sweep.candidates=none"]) == ["model=knn"]
    # Hydra's own overrides configure the launcher, not the job (Hydra keeps them apart too).
    assert sweep.job_overrides(["hydra/launcher=joblib", "hydra.launcher.n_jobs=2", "model.C=1",
                                f"+hydra.job.env_set.{sweep.SWEEP_RUN_ENV}=abc"]) == ["model.C=1"]


def test_the_sweeps_run_and_force_are_not_user_config():
    """They reach the jobs through Hydra's hydra.job.env_set, not as config keys a user could set."""
    with pytest.raises(ConfigCompositionException, match="sweep.run_id"):
        compose_config(["sweep.run_id=abc"])
    with pytest.raises(ConfigCompositionException, match="sweep.force"):
        compose_config(["sweep.force=all"])


def table(rows):
    base = {"status": "FINISHED", "validation": "passed", "accuracy": 0.9, "f1_macro": 0.9,
            "roc_auc_ovr": 0.99, "log_loss": 0.1}
    return pd.DataFrame([{**base, "job": number, **row} for number, row in enumerate(rows)])


def test_best_job_is_the_best_validated_one():
    jobs = table([
        {"accuracy": 0.95},
        {"accuracy": 0.99, "status": "FAILED"},  # failed jobs never win
        {"accuracy": 0.97, "validation": "failed"},
        {"accuracy": 0.96},
        {"accuracy": 0.90},
    ])
    assert sweep.best_job(jobs, "accuracy")["job"] == 3


def test_each_metric_has_its_own_direction():
    jobs = table([{"log_loss": 0.3}, {"log_loss": 0.2}, {"log_loss": 0.5}])
    assert sweep.best_job(jobs, "log_loss")["job"] == 1  # smaller is better


def test_ties_go_to_the_better_other_metrics_then_the_first_job():
    jobs = table([{"accuracy": 1.0, "log_loss": 0.14}, {"accuracy": 1.0, "log_loss": 0.02}, {"accuracy": 1.0}])
    assert sweep.best_job(jobs, "accuracy")["job"] == 1
    assert sweep.best_job(table([{}, {}]), "accuracy")["job"] == 0


def test_a_job_without_a_gated_metric_cannot_win():
    # An SVC has no log_loss: with log_loss gated it could never be promoted.
    jobs = table([{"accuracy": 1.0, "log_loss": None}, {"accuracy": 0.97}])
    assert sweep.best_job(jobs, "accuracy", gated=["accuracy", "log_loss"])["job"] == 1
    assert sweep.best_job(jobs, "accuracy", gated=["accuracy"])["job"] == 0


def test_no_eligible_job():
    assert sweep.best_job(table([{"status": "FAILED"}]), "accuracy") is None


def test_every_metric_a_sweep_can_rank_by_is_a_holdout_metric():
    assert [m.value for m in Metric] == list(HOLDOUT_METRICS)


@pytest.mark.parametrize(
    ("argv", "message"),
    [
        (["model.C=0.1,,1"], "invalid sweep"),
        (["model.C=0.1,1", "sweep.metric=recall"],
         "sweep.metric=recall: Invalid value 'recall', expected one of [accuracy, f1_macro, roc_auc_ovr, log_loss]"),
        (["model.C=0.1,1", "sweep.candidates=some"], "Invalid value 'some', expected one of [register, none]"),
        (["model=logistic_regresion,knn"], "Could not find 'model/logistic_regresion'"),
    ],
)
def test_malformed_sweep_exits_2_before_any_run(project_env, tmp_path, argv, message):
    result = subprocess.run(
        [sys.executable, "-m", "pipeline.main", "-m", *argv],
        cwd=tmp_path, env={**project_env, "PYTHONPATH": str(contracts.PROJECT_DIR)},
        capture_output=True, text=True, timeout=120,
    )
    assert result.returncode == 2, result.stderr[-2000:]
    assert message in result.stderr
    assert mlflow.search_runs(search_all_experiments=True, output_format="list") == []


def children(run_id: str) -> list:
    return mlflow.search_runs(
        search_all_experiments=True, filter_string=f"tags.`mlflow.parentRunId` = '{run_id}'",
        output_format="list",
    )


@pytest.mark.slow
def test_sweep_through_mlflow_run_then_from_the_scheduler_unchanged(project_env, tmp_path):
    """Six jobs: two good ones, one that fails at training, three that cannot be composed;
    then the same sweep again through ops.retrain, which reruns no good job."""
    result = mlflow_run(project_env, tmp_path, "-m model=logistic_regression,random_forest model.C=-1,0.5,10")
    assert result.returncode == 0, result.stderr[-4000:]

    (sweep_run,) = mlflow.search_runs(
        search_all_experiments=True, filter_string="tags.`pipeline.step` = 'sweep'", output_format="list"
    )
    assert sweep_run.info.status == "FINISHED"
    jobs = {run.data.tags["sweep.overrides"]: run for run in children(sweep_run.info.run_id)
            if run.data.tags.get(contracts.STEP_TAG) == "sweep_job"}
    assert len(jobs) == 6
    status = {overrides: run.info.status for overrides, run in jobs.items()}
    assert status == {
        "model=logistic_regression model.C=-1": "FAILED",
        "model=logistic_regression model.C=0.5": "FINISHED",
        "model=logistic_regression model.C=10": "FINISHED",
        "model=random_forest model.C=-1": "FAILED",
        "model=random_forest model.C=0.5": "FAILED",
        "model=random_forest model.C=10": "FAILED",
    }
    # Hydra's joblib launcher ran the three composable jobs, two at a time.
    assert "Joblib.Parallel(" in result.stdout + result.stderr
    launched = sorted((run.info.start_time, run.info.end_time) for run in jobs.values()
                      if "logistic_regression" in run.data.tags["sweep.overrides"])
    assert any(later[0] < earlier[1] for earlier, later in zip(launched, launched[1:])), launched
    errors = {overrides: run.data.tags[contracts.ERROR_TAG] for overrides, run in jobs.items()}
    assert "failed at step train: cannot fit LogisticRegression" in errors["model=logistic_regression model.C=-1"]
    assert "'C' parameter" in errors["model=logistic_regression model.C=-1"]
    assert "Could not override 'model.C'" in errors["model=random_forest model.C=0.5"]

    # Each good job is a nested pipeline: its four steps are its own children.
    good = jobs["model=logistic_regression model.C=10"]
    steps = {run.data.tags["mlflow.project.entryPoint"]: run for run in children(good.info.run_id)}
    assert set(steps) == {"train", "serialize", "package_pyfunc", "evaluate"}
    assert steps["train"].data.params["model.C"] == "10"
    assert good.data.metrics["accuracy"] > 0.9

    # The table of all jobs, as the UI shows it.
    logged = json.loads(mlflow.artifacts.load_text(f"runs:/{sweep_run.info.run_id}/sweep/jobs.json"))
    assert len(logged["data"]) == 6 and "accuracy" in logged["columns"]
    assert "best of 6 jobs (4 failed)" in sweep_run.data.tags["pipeline.outcome"]

    # Both good models were registered; only the best went through the gate.
    client = MlflowClient()
    versions = {v.version: client.get_model_version("iris-classifier", v.version)
                for v in client.search_model_versions("name = 'iris-classifier'")}
    assert len(versions) == 2
    best = sweep_run.data.tags["sweep.best_overrides"]
    champion = client.get_model_version_by_alias("iris-classifier", "champion")
    assert champion.tags["sweep.outcome"] == "best" and champion.tags["gate.outcome"] == "promoted"
    # Registered by the best job's own pipeline, whose overrides and run it records.
    assert champion.tags["lineage.overrides"].startswith(best)
    assert champion.tags["lineage.pipeline_run_id"] == sweep_run.data.tags["sweep.best_run_id"]
    (other,) = [v for number, v in versions.items() if number != champion.version]
    assert other.tags["sweep.outcome"] == "candidate" and other.aliases == []
    assert "gate.outcome" not in other.tags and other.tags[contracts.VALIDATION_STATUS_TAG] == "passed"
    # One gate decision in the whole sweep: the evaluate run directly under the sweep run.
    gated = [run for run in mlflow.search_runs(search_all_experiments=True, output_format="list")
             if run.data.tags.get("mlflow.project.entryPoint") == "evaluate"
             and read_outputs(run.info.run_id).get("gate_outcome") in ("promoted", "challenger")]
    assert [run.data.tags["mlflow.parentRunId"] for run in gated] == [sweep_run.info.run_id]

    # The same sweep from the scheduler command, nothing changed: no good job trains
    # again, the best job's gated rerun is all cache hits, no version is added.
    again = subprocess.run(
        [sys.executable, "-m", "ops.retrain", "-m", "model=logistic_regression,random_forest", "model.C=-1,0.5,10"],
        cwd=tmp_path, env={**project_env, "PYTHONPATH": str(contracts.PROJECT_DIR)},
        capture_output=True, text=True, timeout=900,
    )
    assert again.returncode == 0, again.stderr[-4000:]
    latest, first = mlflow.search_runs(
        search_all_experiments=True, filter_string="tags.`pipeline.step` = 'sweep'",
        order_by=["attributes.start_time DESC"], output_format="list",
    )
    assert first.info.run_id == sweep_run.info.run_id
    assert {latest.data.tags[f"pipeline.step.{step}.cache"] for step in graph.NAMES} == {"hit"}
    assert latest.data.tags["pipeline.outcome"].endswith(
        "nothing changed: every step cached; champion is version " + latest.data.tags["registered_model_version"])
    rerun = [run for run in children(latest.info.run_id) if run.data.tags.get(contracts.STEP_TAG) == "sweep_job"
             and run.info.status == "FINISHED"]
    assert sorted(run.data.tags["sweep.overrides"] for run in rerun) == [
        "model=logistic_regression model.C=0.5", "model=logistic_regression model.C=10"]
    for job in rerun:
        assert {job.data.tags[f"pipeline.step.{step}.cache"] for step in graph.NAMES} == {"hit"}
    assert len(client.search_model_versions("name = 'iris-classifier'")) == 2


@pytest.mark.slow
def test_sweep_from_python_on_another_launcher_registers_only_the_best(project_env, tmp_path):
    """submitit's local executor stands in for a cluster (hydra/launcher=submitit_slurm):
    the same sweep, without code changes; with sweep.candidates=none only the best
    job's model (by log_loss, smaller is better) is registered."""
    result = subprocess.run(
        [sys.executable, "-m", "pipeline.main", "-m", "hydra/launcher=submitit_local", "model=knn,gradient_boosting",
         "sweep.candidates=none", "sweep.metric=log_loss"],
        cwd=tmp_path, env={**project_env, "PYTHONPATH": str(contracts.PROJECT_DIR)},
        capture_output=True, text=True, timeout=900,
    )
    assert result.returncode == 0, result.stderr[-4000:]
    assert list((tmp_path / "multirun").glob("*/*/.submitit")), "submitit did not launch the jobs"
    assert "sweep run" in result.stdout and "promoted version 1 to champion" in result.stdout
    (sweep_run,) = mlflow.search_runs(
        search_all_experiments=True, filter_string="tags.`pipeline.step` = 'sweep'", output_format="list"
    )
    jobs = [run for run in children(sweep_run.info.run_id) if run.data.tags.get(contracts.STEP_TAG) == "sweep_job"]
    assert sorted(run.data.tags["sweep.overrides"] for run in jobs) == ["model=gradient_boosting", "model=knn"]
    assert all(run.info.status == "FINISHED" for run in jobs)
    assert "gradient_boosting" in sweep_run.data.tags["sweep.best_overrides"]
    (found,) = MlflowClient().search_model_versions("name = 'iris-classifier'")
    version = MlflowClient().get_model_version("iris-classifier", found.version)
    model = mlflow.pyfunc.load_model(f"models:/iris-classifier/{version.version}")
    assert model.metadata.metadata["estimator"] == "GradientBoostingClassifier"
    assert version.aliases == ["champion"] and version.tags["sweep.outcome"] == "best"
    # The other job's model was logged and validated, not registered.
    (knn_run,) = [run for run in jobs if run.data.tags["sweep.overrides"] == "model=knn"]
    outputs = read_outputs(knn_run.info.run_id)
    assert outputs["pyfunc_model_uri"].startswith("models:/m-") and "registered_model_uri" not in outputs
