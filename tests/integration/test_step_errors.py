"""How a step process ends when its body fails: a refusal in one line, a bug with its traceback."""

from __future__ import annotations

import logging

import mlflow
import pytest
from mlflow import MlflowClient
from mlflow.exceptions import MlflowException
from mlflow.protos.databricks_pb2 import INVALID_PARAMETER_VALUE, TEMPORARILY_UNAVAILABLE

from core import contracts
from core.errors import StepError
from pipeline.step import DRIVER_PID_ENV, ParentDied, check_pipeline_alive, run_in_mlflow_run


def fail_with(error):
    def body():
        raise error

    return body


def ended(body, caplog) -> tuple[logging.LogRecord, dict]:
    """Run ``body`` as a step does; the error it logged and its run's tags."""
    caplog.set_level(logging.ERROR, logger="pipeline.step")
    with pytest.raises(SystemExit) as exit_info:
        run_in_mlflow_run(body)
    assert exit_info.value.code == 1
    (run,) = mlflow.search_runs(search_all_experiments=True, output_format="list")
    assert run.info.status == "FAILED"
    (record,) = [r for r in caplog.records if r.name == "pipeline.step"]
    return record, run.data.tags


@pytest.mark.parametrize(
    "error",
    [StepError("data file /x.csv: column 'y' is missing"),
     MlflowException("models:/iris-classifier/9 does not exist", INVALID_PARAMETER_VALUE)],
)
def test_a_refusal_is_one_line_and_recorded(error, caplog):
    record, tags = ended(fail_with(error), caplog)
    assert record.exc_info is None
    assert tags[contracts.ERROR_TAG] == (getattr(error, "message", None) or str(error))


def test_a_tampered_joblib_file_is_a_refusal_not_a_bug(tmp_path, caplog):
    import joblib

    from model.dispatch_model import load_verified_estimator, sha256_file

    path = tmp_path / "estimator.joblib"
    joblib.dump({"an": "estimator"}, path)
    digest = sha256_file(path)
    path.write_bytes(path.read_bytes() + b"tampered")
    record, tags = ended(lambda: load_verified_estimator(path, digest), caplog)
    assert record.exc_info is None
    assert tags[contracts.ERROR_TAG].startswith("Refusing to load") and digest in tags[contracts.ERROR_TAG]


@pytest.mark.parametrize(
    "error",
    [KeyError("holdout_uri"), ValueError("operands could not be broadcast"),
     MlflowException("API request failed with error code 503", TEMPORARILY_UNAVAILABLE)],
)
def test_anything_else_keeps_its_traceback_and_is_recorded(error, caplog):
    record, tags = ended(fail_with(error), caplog)
    assert record.exc_info is not None and record.exc_info[1] is error
    assert tags[contracts.ERROR_TAG].startswith(type(error).__name__ + ": ")


def test_a_step_checks_its_pipeline_is_alive_before_it_changes_the_registry(monkeypatch):
    """The second guard, for a step whose parent-death signal could not be set (not Linux):
    the driver must still be its parent, and the pipeline's run still RUNNING."""
    import os

    with mlflow.start_run() as pipeline:
        with mlflow.start_run(nested=True):
            monkeypatch.setenv(DRIVER_PID_ENV, str(os.getppid()))
            check_pipeline_alive()  # alive: nothing raised
            monkeypatch.setenv(DRIVER_PID_ENV, str(os.getpid()))  # not this process's parent
            with pytest.raises(ParentDied, match=r"driver \(pid \d+\) has ended; this step was orphaned"):
                check_pipeline_alive()
            monkeypatch.setenv(DRIVER_PID_ENV, str(os.getppid()))
            MlflowClient().set_terminated(pipeline.info.run_id, "FAILED")
            with pytest.raises(ParentDied, match=f"run {pipeline.info.run_id} is FAILED, no longer RUNNING"):
                check_pipeline_alive()
