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
from pipeline.processes.step import ParentDied, check_pipeline_alive, process_identity, run_in_mlflow_run
from pipeline.processes.step_server import DRIVER_ENV


def fail_with(error):
    def body():
        raise error

    return body


def ended(body, caplog) -> tuple[logging.LogRecord, dict]:
    """Run ``body`` as a step does; the error it logged and its run's tags."""
    caplog.set_level(logging.ERROR, logger="pipeline.processes.step")
    with pytest.raises(SystemExit) as exit_info:
        run_in_mlflow_run(body)
    assert exit_info.value.code == 1
    (run,) = mlflow.search_runs(search_all_experiments=True, output_format="list")
    assert run.info.status == "FAILED"
    (record,) = [r for r in caplog.records if r.name == "pipeline.processes.step"]
    return record, run.data.tags


@pytest.mark.parametrize(
    "error",
    [
        StepError("data file /x.csv: column 'y' is missing"),
        MlflowException("models:/iris-classifier/9 does not exist", INVALID_PARAMETER_VALUE),
    ],
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
    [
        KeyError("holdout_uri"),
        ValueError("operands could not be broadcast"),
        MlflowException("API request failed with error code 503", TEMPORARILY_UNAVAILABLE),
    ],
)
def test_anything_else_keeps_its_traceback_and_is_recorded(error, caplog):
    record, tags = ended(fail_with(error), caplog)
    assert record.exc_info is not None and record.exc_info[1] is error
    assert tags[contracts.ERROR_TAG].startswith(type(error).__name__ + ": ")


def test_a_step_checks_its_pipeline_is_alive_before_it_changes_the_registry(monkeypatch):
    """The guard on every platform: the driver (pid and start time) must be alive, whoever
    the step's parent is, and the pipeline's run still RUNNING."""
    import os
    import subprocess
    import sys

    with mlflow.start_run() as pipeline:
        with mlflow.start_run(nested=True):
            monkeypatch.setenv(DRIVER_ENV, process_identity(os.getppid()))
            check_pipeline_alive()  # alive: nothing raised
            monkeypatch.setenv(DRIVER_ENV, process_identity())  # not the parent, but alive: a forked step's case
            check_pipeline_alive()
            ended = subprocess.Popen([sys.executable, "-c", "pass"])
            gone = process_identity(ended.pid)
            ended.wait()
            monkeypatch.setenv(DRIVER_ENV, gone)
            with pytest.raises(ParentDied, match=r"driver \(pid \d+\) has ended; this step was orphaned"):
                check_pipeline_alive()
            pid, _, started = process_identity().partition("@")  # same pid, another start: a reused pid
            monkeypatch.setenv(DRIVER_ENV, f"{pid}@{float(started) - 5:.3f}")
            with pytest.raises(ParentDied, match="has ended"):
                check_pipeline_alive()
            monkeypatch.setenv(DRIVER_ENV, process_identity(os.getppid()))
            MlflowClient().set_terminated(pipeline.info.run_id, "FAILED")
            with pytest.raises(ParentDied, match=f"run {pipeline.info.run_id} is FAILED, no longer RUNNING"):
                check_pipeline_alive()


# A step body that gets SIGTERM (what PR_SET_PDEATHSIG sends when the driver dies) in the
# middle of a store write: while SQLite inserts its second metric row (an adapter for floats
# runs Python code inside the insert), so the first row is in and the write lock is held.
TERMINATED_MID_WRITE = """
import os, signal, sqlite3, time
import mlflow
from pipeline.processes.loading import run_as_process
from pipeline.processes.step import run_in_mlflow_run

values = []

def adapt(value):
    values.append(value)
    if len(values) == 2:
        os.kill(os.getpid(), signal.SIGTERM)
    return value

def body():
    sqlite3.register_adapter(float, adapt)
    mlflow.log_metrics({"first": 1.0, "second": 2.0, "third": 3.0})
    time.sleep(60)
    raise AssertionError("SIGTERM did not stop the step")

run_as_process(lambda: run_in_mlflow_run(body))
"""


def test_a_step_told_to_stop_inside_a_store_write_finishes_the_write_then_stops(project_env, tmp_path):
    """The signal is held until the store call returns: raised inside it, it left SQLite's
    write lock to a half-closed connection, the run could not be ended (``database is
    locked`` for 20 s, twice) and stayed RUNNING forever."""
    import subprocess
    import sys

    script = tmp_path / "step.py"
    script.write_text(TERMINATED_MID_WRITE)
    env = {**project_env, "PYTHONPATH": str(contracts.PROJECT_DIR)}
    done = subprocess.run([sys.executable, str(script)], env=env, capture_output=True, text=True, timeout=120)
    assert done.returncode == 1, done.stderr[-3000:]
    (run,) = mlflow.search_runs(search_all_experiments=True, output_format="list")
    assert run.info.status == "FAILED", done.stderr[-3000:]
    assert run.data.tags[contracts.ERROR_TAG].startswith("stopped: the process that started this one has ended")
    assert run.data.metrics == {"first": 1.0, "second": 2.0, "third": 3.0}  # the write under way is whole
    assert "database is locked" not in done.stderr


@pytest.mark.parametrize("arrives", ["SIGTERM", "SIGALRM bringing back a held SIGTERM"])
@pytest.mark.parametrize("receiver", ["main thread", "another thread"])
def test_a_stop_during_a_registry_change_waits_until_the_change_is_whole(arrives, receiver, monkeypatch):
    """A signal sent to the process goes to any thread not blocking it (MLflow runs threads
    of its own); Python runs the handler in the main thread either way, so the hold must
    not rest on the main thread's signal mask."""
    import signal
    import threading
    import time

    from pipeline.processes import step

    monkeypatch.setattr(step, "_held_signal", signal.SIGTERM if "held" in arrives else None)
    sent = signal.SIGTERM if arrives == "SIGTERM" else signal.SIGALRM
    previous = {sig: signal.signal(sig, step._parent_died) for sig in (signal.SIGTERM, signal.SIGALRM)}
    other_done = threading.Event()
    other = threading.Thread(target=other_done.wait)
    other.start()
    written = []
    try:
        with pytest.raises(ParentDied, match="signal SIGTERM"):
            with step.signals_deferred():
                signal.pthread_kill(threading.main_thread().ident if receiver == "main thread" else other.ident, sent)
                written.append("version tags")
                time.sleep(0.2)  # a registry write under way
                written.append("aliases")
            time.sleep(10)  # a signal delivered late to the other thread is raised here
    finally:
        other_done.set()
        other.join()
        for sig, handler in previous.items():
            signal.signal(sig, handler)
    assert written == ["version tags", "aliases"]
