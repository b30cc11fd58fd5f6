"""What a killed pipeline leaves is cleaned up by the next one: runs left RUNNING by a dead
driver are ended KILLED with the reason, and an evaluate that failed after its decision was
recorded is reported as the registry holds it (the summary never says failed while the
champion has moved)."""

from __future__ import annotations

import subprocess
import sys

import mlflow
from mlflow import MlflowClient
from mlflow.utils.mlflow_tags import MLFLOW_PARENT_RUN_ID

from core import contracts
from core.config import compose_config
from core.gate import GATE_RUN_TAG
from pipeline import record
from pipeline.processes.step import process_identity
from pipeline.run import _decision_of_failed_evaluate
from pipeline.summary import StepResult

NAME = "iris-classifier"


def dead_driver() -> str:
    ended = subprocess.Popen([sys.executable, "-c", "pass"])
    identity = process_identity(ended.pid)
    ended.wait()
    return identity


def test_runs_left_running_by_a_dead_driver_are_ended_killed_with_the_reason():
    import socket

    client = MlflowClient()
    experiment = mlflow.set_experiment("abandoned").experiment_id
    host = record.host()
    gone = dead_driver()
    abandoned = client.create_run(experiment, tags={record.DRIVER_TAG: f"{host}/{gone}"})
    step = client.create_run(experiment, tags={MLFLOW_PARENT_RUN_ID: abandoned.info.run_id})
    alive = client.create_run(experiment, tags={record.DRIVER_TAG: record.driver()})
    elsewhere = client.create_run(experiment, tags={record.DRIVER_TAG: f"another-host/{gone}"})
    # The same name in another container (pid namespace), and a name with LIKE's wildcard in it.
    container = client.create_run(experiment, tags={record.DRIVER_TAG: f"{socket.gethostname()}:1/{gone}"})
    wildcard = client.create_run(experiment, tags={record.DRIVER_TAG: f"{host.replace('-', '_')}x/{gone}"})

    assert record.end_abandoned_runs(experiment) == [abandoned.info.run_id]
    for run in (abandoned, step):
        ended = client.get_run(run.info.run_id)
        assert ended.info.status == "KILLED"
        assert ended.data.tags[contracts.ERROR_TAG] == (
            f"ended by a later pipeline: its driver (pid {gone.partition('@')[0]} on {host}) was gone"
        )
    for run in (alive, elsewhere, container, wildcard):  # alive, or where its processes cannot be seen from here
        assert client.get_run(run.info.run_id).info.status == "RUNNING"


def test_an_evaluate_that_failed_after_recording_its_decision_is_reported_as_the_registry_holds_it(champion):
    client, cfg = MlflowClient(), compose_config([])
    version = str(mlflow.register_model(champion["pyfunc_model_uri"], NAME).version)
    with mlflow.start_run() as killed:  # stands for an evaluate killed after its aliases moved
        pass
    client.set_model_version_tag(NAME, version, GATE_RUN_TAG, killed.info.run_id)
    client.set_model_version_tag(NAME, version, "gate.outcome", "promoted")
    client.set_model_version_tag(NAME, version, contracts.VALIDATION_STATUS_TAG, "passed")
    client.set_registered_model_alias(NAME, "champion", version)

    result = StepResult("evaluate", run_id=killed.info.run_id, status="FAILED", error="killed or crashed")
    decided = _decision_of_failed_evaluate(cfg, f"models:/{NAME}/{version}", result)
    assert decided == {"validation_status": "passed", "gate_outcome": "promoted", "champion_version": version}
    assert result.status == "FINISHED" and "ended after its decision was recorded" in result.reason

    other = StepResult("evaluate", run_id="another-run", status="FAILED", error="boom")  # not its decision
    assert _decision_of_failed_evaluate(cfg, f"models:/{NAME}/{version}", other) == {}
    assert other.status == "FAILED"
