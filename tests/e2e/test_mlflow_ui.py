"""What the MLflow UI shows, read back through MLflow's client: the experiment the runs go
to, the names, descriptions and tags of a pipeline's runs, and the one record that its
unchanged scheduled reruns leave instead of a run each."""

from __future__ import annotations

import subprocess
import sys

import mlflow
import pytest
from mlflow import MlflowClient
from mlflow.utils.mlflow_tags import MLFLOW_RUN_NOTE

from core import contracts, tracking
from pipeline import graph
from tests.support.factories import mlflow_run


def retrain(env, cwd, *args) -> subprocess.CompletedProcess:
    return subprocess.run(
        [sys.executable, "-m", "ops.retrain", *args],
        cwd=cwd,
        capture_output=True,
        text=True,
        env={**env, "PYTHONPATH": str(contracts.PROJECT_DIR)},
        timeout=600,
    )


def pipeline_runs():
    return mlflow.search_runs(
        search_all_experiments=True,
        filter_string=f"tags.`{contracts.STEP_TAG}` = 'main'",
        order_by=["attributes.start_time DESC"],
        output_format="list",
    )


def all_runs():
    return mlflow.search_runs(search_all_experiments=True, output_format="list")


def test_a_pipeline_run_says_what_happened_and_unchanged_reruns_add_no_run(champion, project_env, tmp_path):
    client = MlflowClient()
    (run,) = pipeline_runs()
    tags = run.data.tags
    assert run.info.run_name == "pipeline"
    assert (tags[contracts.OUTCOME_TAG], tags[contracts.OUTCOME_DETAIL_TAG]) == (
        "promoted",
        "promoted version 1 to champion",
    )
    assert (tags[contracts.MODEL_CLASS_TAG], tags[contracts.TRIGGER_TAG]) == ("LogisticRegression", "manual")
    steps = {
        child.info.run_name: child
        for child in all_runs()
        if child.data.tags.get("mlflow.parentRunId") == run.info.run_id
    }
    assert set(steps) == {"train", "serialize", "package_pyfunc", "evaluate v1"}
    # The description: the outcome, each step with its cache decision and a link to its run.
    note = tags[MLFLOW_RUN_NOTE]
    assert note.startswith("**promoted**: promoted version 1 to champion")
    for name, child in steps.items():
        assert f"| {name} | FINISHED | miss | no earlier finished {name.split()[0]} run |" in note
        assert f"(#/experiments/{run.info.experiment_id}/runs/{child.info.run_id})" in note
    assert "[iris-classifier v1](#/models/iris-classifier/versions/1)" in note and "trigger: manual" in note

    # Unchanged reruns from the scheduler: no run each, one record on that run that grows.
    before = len(all_runs())
    for tick in (1, 2):
        result = retrain(project_env, tmp_path)
        assert result.returncode == 0, result.stderr[-3000:]
        assert f"no new run: unchanged rerun {tick} counted on run {run.info.run_id} (pipeline;" in result.stdout
    assert len(all_runs()) == before
    history = client.get_metric_history(run.info.run_id, "unchanged_reruns")
    assert sorted((m.step, m.value) for m in history) == [(1, 1.0), (2, 2.0)]
    counted = client.get_run(run.info.run_id).data.tags
    assert counted["pipeline.last_unchanged"].endswith(" UTC (schedule)")
    assert counted[MLFLOW_RUN_NOTE].startswith(note)
    assert counted[MLFLOW_RUN_NOTE].count("**Unchanged reruns since:** 2, the last at") == 1

    # A rerun that changes something is a run of its own, named after its overrides.
    changed = retrain(project_env, tmp_path, "--trigger", "manual", "validation.atol=1e-08")
    assert changed.returncode == 0, changed.stderr[-3000:]
    latest = pipeline_runs()[0]
    assert latest.info.run_name == "pipeline atol=1e-08"
    assert f"pipeline atol=1e-08 (run {latest.info.run_id})" in changed.stdout
    assert latest.data.tags[contracts.TRIGGER_TAG] == "manual"
    assert latest.data.tags[contracts.OUTCOME_TAG] == "promoted"  # re-validated, still champion
    assert "| evaluate v1 | FINISHED | miss | config changed" in latest.data.tags[MLFLOW_RUN_NOTE]
    assert {f"| {step} | CACHED | hit |" in latest.data.tags[MLFLOW_RUN_NOTE] for step in graph.NAMES[:3]} == {True}


@pytest.fixture
def no_experiment_env(project_env, monkeypatch):
    """The environment of a user who set no MLFLOW_EXPERIMENT_NAME: the config decides."""
    monkeypatch.delenv("MLFLOW_EXPERIMENT_NAME")
    return {key: value for key, value in project_env.items() if key != "MLFLOW_EXPERIMENT_NAME"}


def test_runs_go_to_the_experiment_the_config_names(no_experiment_env, tracking_store, tmp_path, capsys):
    client = MlflowClient()
    tracking.main([])  # what `make run` calls before `mlflow run --experiment-name`
    assert capsys.readouterr().out.strip() == "iris-dynamic-dispatch"
    created = client.get_experiment_by_name("iris-dynamic-dispatch")
    # Its artifacts beside the database, not in whatever directory the command ran in.
    assert (
        created.artifact_location
        == f"{contracts.sqlite_artifact_root(contracts.sqlite_path(tracking_store))}/{created.experiment_id}"
    )
    tracking.main(["-m model=knn,svc experiment.name=nightly"])
    assert capsys.readouterr().out.strip() == "nightly" and client.get_experiment_by_name("nightly")

    with pytest.raises(SystemExit) as swept:
        tracking.main(["experiment.name=a,b"])
    assert swept.value.code == 2 and "experiment.name cannot be swept" in capsys.readouterr().err
    client.delete_experiment(created.experiment_id)
    with pytest.raises(SystemExit) as deleted:
        tracking.main([])
    assert deleted.value.code == 2
    assert (
        f"experiment 'iris-dynamic-dispatch' (id {created.experiment_id}) is deleted: restore it"
        in capsys.readouterr().err
    )


def test_mlflow_run_in_another_experiment_than_the_overrides_name_is_refused(no_experiment_env, tmp_path):
    """`mlflow run` chooses the experiment before the project starts; an override naming
    another one cannot be honoured, so nothing runs."""
    result = mlflow_run(no_experiment_env, tmp_path, "experiment.name=nightly")
    assert result.returncode != 0
    assert (
        "mlflow run made this run in experiment 'Default', the config names 'nightly'; "
        "start it with `mlflow run . --experiment-name 'nightly'`"
    ) in result.stderr
    assert [run.data.tags.get("mlflow.project.entryPoint") for run in all_runs()] == ["main"]
