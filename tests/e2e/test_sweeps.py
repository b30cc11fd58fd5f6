"""Real multiruns end to end: through `mlflow run`, from the scheduler, and on another launcher."""

from __future__ import annotations

import json
import subprocess
import sys

import mlflow
from mlflow import MlflowClient

from core import contracts
from pipeline import graph
from pipeline.processes.step import read_outputs
from tests.support.factories import gate_decisions, mlflow_run


def children(run_id: str) -> list:
    return mlflow.search_runs(
        search_all_experiments=True, filter_string=f"tags.`mlflow.parentRunId` = '{run_id}'", output_format="list"
    )


def test_sweep_through_mlflow_run_then_from_the_scheduler_unchanged(project_env, tmp_path):
    """Six jobs: two good ones, one that fails at training, three that cannot be composed;
    then the same sweep again through ops.retrain, which reruns no good job."""
    result = mlflow_run(project_env, tmp_path, "-m model=logistic_regression,random_forest model.C=-1,0.5,10")
    assert result.returncode == 0, result.stderr[-4000:]

    (sweep_run,) = mlflow.search_runs(
        search_all_experiments=True, filter_string="tags.`pipeline.step` = 'sweep'", output_format="list"
    )
    assert sweep_run.info.status == "FINISHED"
    jobs = {
        run.data.tags["sweep.overrides"]: run
        for run in children(sweep_run.info.run_id)
        if run.data.tags.get(contracts.STEP_TAG) == "sweep_job"
    }
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
    launched = sorted(
        (run.info.start_time, run.info.end_time)
        for run in jobs.values()
        if "logistic_regression" in run.data.tags["sweep.overrides"]
    )
    assert any(later[0] < earlier[1] for earlier, later in zip(launched, launched[1:], strict=False)), launched
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
    assert "best of 6 jobs (4 failed)" in sweep_run.data.tags[contracts.OUTCOME_DETAIL_TAG]

    # Both good models were registered; only the best went through the gate.
    client = MlflowClient()
    versions = {
        v.version: client.get_model_version("iris-classifier", v.version)
        for v in client.search_model_versions("name = 'iris-classifier'")
    }
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
    assert [run.data.tags["mlflow.parentRunId"] for run in gate_decisions()] == [sweep_run.info.run_id]

    # The same sweep from the scheduler command, nothing changed: no good job trains
    # again, the best job's gated rerun is all cache hits, no version is added.
    again = subprocess.run(
        [sys.executable, "-m", "ops.retrain", "-m", "model=logistic_regression,random_forest", "model.C=-1,0.5,10"],
        cwd=tmp_path,
        env={**project_env, "PYTHONPATH": str(contracts.PROJECT_DIR)},
        capture_output=True,
        text=True,
        timeout=900,
    )
    assert again.returncode == 0, again.stderr[-4000:]
    latest, first = mlflow.search_runs(
        search_all_experiments=True,
        filter_string="tags.`pipeline.step` = 'sweep'",
        order_by=["attributes.start_time DESC"],
        output_format="list",
    )
    assert first.info.run_id == sweep_run.info.run_id
    assert {latest.data.tags[f"pipeline.step.{step}.cache"] for step in graph.NAMES} == {"hit"}
    assert latest.data.tags[contracts.OUTCOME_DETAIL_TAG].endswith(
        "nothing changed: every step cached; champion is version " + latest.data.tags["registered_model_version"]
    )
    rerun = [
        run
        for run in children(latest.info.run_id)
        if run.data.tags.get(contracts.STEP_TAG) == "sweep_job" and run.info.status == "FINISHED"
    ]
    assert sorted(run.data.tags["sweep.overrides"] for run in rerun) == [
        "model=logistic_regression model.C=0.5",
        "model=logistic_regression model.C=10",
    ]
    for job in rerun:
        assert {job.data.tags[f"pipeline.step.{step}.cache"] for step in graph.NAMES} == {"hit"}
    assert len(client.search_model_versions("name = 'iris-classifier'")) == 2


def test_sweep_from_python_on_another_launcher_registers_only_the_best(project_env, tmp_path):
    """submitit's local executor stands in for a cluster (hydra/launcher=submitit_slurm):
    the same sweep, without code changes; with sweep.candidates=none only the best
    job's model (by log_loss, smaller is better) is registered."""
    sweep = [
        "hydra/launcher=submitit_local",
        "model=knn,gradient_boosting",
        "sweep.candidates=none",
        "sweep.metric=log_loss",
    ]
    result = subprocess.run(
        [sys.executable, "-m", "pipeline.main", "-m", *sweep],
        cwd=tmp_path,
        env={**project_env, "PYTHONPATH": str(contracts.PROJECT_DIR)},
        capture_output=True,
        text=True,
        timeout=900,
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
    # As the MLflow UI shows them: names that say what each run is, tags to filter by.
    assert sweep_run.info.run_name == "sweep 2 jobs"
    assert sorted(run.info.run_name for run in jobs) == ["job model=gradient_boosting", "job model=knn"]
    assert {run.data.tags[contracts.TRIGGER_TAG] for run in jobs} == {"sweep"}
    assert {run.data.tags[contracts.OUTCOME_TAG] for run in jobs} == {"not_gated"}
    tags = sweep_run.data.tags
    assert (tags[contracts.TRIGGER_TAG], tags[contracts.OUTCOME_TAG], tags[contracts.MODEL_CLASS_TAG]) == (
        "manual",
        "promoted",
        "GradientBoostingClassifier",
    )
    assert tags["mlflow.note.content"].startswith("**promoted**: best of 2 jobs (0 failed): promoted version 1")
    assert "| evaluate v1 | FINISHED |" in tags["mlflow.note.content"]
    gated = {run.info.run_name for run in children(sweep_run.info.run_id)} - {run.info.run_name for run in jobs}
    assert "evaluate v1" in gated and gated <= {"train", "serialize", "package_pyfunc", "evaluate v1"}, gated

    # The same sweep from the scheduler, nothing changed: no run at all; counted on the sweep run.
    before = len(mlflow.search_runs(search_all_experiments=True, output_format="list"))
    again = subprocess.run(
        [sys.executable, "-m", "ops.retrain", "-m", *sweep],
        cwd=tmp_path,
        env={**project_env, "PYTHONPATH": str(contracts.PROJECT_DIR)},
        capture_output=True,
        text=True,
        timeout=900,
    )
    assert again.returncode == 0, again.stderr[-4000:]
    assert f"no new run: unchanged rerun 1 counted on run {sweep_run.info.run_id} (sweep 2 jobs;" in again.stdout
    assert len(mlflow.search_runs(search_all_experiments=True, output_format="list")) == before
    assert MlflowClient().get_run(sweep_run.info.run_id).data.metrics["unchanged_reruns"] == 1
    (found,) = MlflowClient().search_model_versions("name = 'iris-classifier'")
    version = MlflowClient().get_model_version("iris-classifier", found.version)
    model = mlflow.pyfunc.load_model(f"models:/iris-classifier/{version.version}")
    assert model.metadata.metadata["estimator"] == "GradientBoostingClassifier"
    assert version.aliases == ["champion"] and version.tags["sweep.outcome"] == "best"
    # The other job's model was logged and validated, not registered.
    (knn_run,) = [run for run in jobs if run.data.tags["sweep.overrides"] == "model=knn"]
    outputs = read_outputs(knn_run.info.run_id)
    assert outputs["pyfunc_model_uri"].startswith("models:/m-") and "registered_model_uri" not in outputs
