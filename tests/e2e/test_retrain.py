"""Scheduled retraining end to end: cache, force, data changes, lineage, lock, faults."""

from __future__ import annotations

import os
import signal
import socket
import subprocess
import sys
from pathlib import Path

import mlflow
import pandas as pd
import pytest
from mlflow import MlflowClient

from core import contracts, locks
from model.dispatch_model import sha256_file
from ops import make_batch, reproduce, retrain
from pipeline import graph
from tests.support.helpers import wait_until

MODEL = "iris-classifier"


def retrain_cmd(*args) -> list[str]:
    return [sys.executable, "-m", "ops.retrain", *args]


def run_retrain(env, tmp_path, *args, timeout=600) -> subprocess.CompletedProcess:
    env = {**env, "PYTHONPATH": str(contracts.PROJECT_DIR)}
    return subprocess.run(retrain_cmd(*args), env=env, cwd=tmp_path, capture_output=True, text=True, timeout=timeout)


def parent_runs():
    runs = mlflow.search_runs(
        search_all_experiments=True,
        filter_string=f"tags.`{contracts.STEP_TAG}` = 'main'",
        order_by=["attributes.start_time DESC"],
        output_format="list",
    )
    return runs


def step_states(parent) -> dict[str, tuple[str, str]]:
    tags = parent.data.tags
    return {
        s: (tags.get(f"pipeline.step.{s}.status", "NOT RUN"), tags.get(f"pipeline.step.{s}.reason", ""))
        for s in graph.NAMES
    }


def versions():
    return sorted(int(v.version) for v in MlflowClient().search_model_versions(f"name='{MODEL}'"))


def test_cache_force_config_and_data_changes(project_env, tmp_path):
    batch = tmp_path / "batch.csv"
    make_batch.main([str(batch)])
    data = ["data=file", f"data.path={batch}"]

    first = run_retrain(project_env, tmp_path, *data)
    assert first.returncode == 0, first.stderr[-3000:]
    assert "outcome: promoted version 1 to champion" in first.stdout
    assert {s for s, _ in step_states(parent_runs()[0]).values()} == {"FINISHED"}

    again = run_retrain(project_env, tmp_path, *data)
    assert again.returncode == 0, again.stderr[-3000:]
    assert "nothing changed" in again.stdout and "no new run: unchanged rerun 1" in again.stdout
    assert versions() == [1]
    # No run at all: no step process started and no pipeline run was made; the rerun
    # is counted on the pipeline run it found unchanged.
    assert len(mlflow.search_runs(search_all_experiments=True, output_format="list")) == 4 + 1
    (parent,) = parent_runs()
    assert parent.data.metrics["unchanged_reruns"] == 1

    forced = run_retrain(project_env, tmp_path, "--force", "evaluate", *data)
    assert forced.returncode == 0, forced.stderr[-3000:]
    states = step_states(parent_runs()[0])
    assert states["evaluate"] == ("FINISHED", "forced")
    assert states["train"][0] == states["package_pyfunc"][0] == "CACHED"

    atol = run_retrain(project_env, tmp_path, *data, "validation.atol=1e-8")
    assert atol.returncode == 0, atol.stderr[-3000:]
    states = step_states(parent_runs()[0])
    assert states["evaluate"][0] == "FINISHED" and states["evaluate"][1].startswith("config changed")
    assert [states[s][0] for s in ("train", "serialize", "package_pyfunc")] == ["CACHED"] * 3
    assert versions() == [1]

    make_batch.main([str(batch), "--append", "30", "--seed", "3"])
    grown = run_retrain(project_env, tmp_path, *data)
    assert grown.returncode == 0, grown.stderr[-3000:]
    states = step_states(parent_runs()[0])
    assert states["train"] == ("FINISHED", states["train"][1])
    assert states["train"][1].startswith("data changed")
    assert all(status == "FINISHED" for status, _ in states.values())
    assert versions() == [1, 2]
    v2 = MlflowClient().get_model_version(MODEL, "2")
    assert v2.tags["gate.outcome"] in {"promoted", "challenger"}

    # Lineage on the new version.
    assert v2.tags["lineage.data_digest"] == sha256_file(batch)
    assert v2.tags["lineage.overrides"] == " ".join(data)
    assert v2.tags["lineage.pipeline_run_id"] == parent_runs()[0].info.run_id
    assert v2.tags["lineage.git_commit"] and v2.tags["lineage.git_dirty"] in {"true", "false"}
    assert "scikit-learn" in v2.tags["lineage.packages"] and "newton-cg" in v2.tags["lineage.config"]
    for step in graph.NAMES[:3]:
        assert mlflow.get_run(v2.tags[f"lineage.{step}_run_id"]).info.status == "FINISHED"
    assert pd.read_csv(batch).shape[0] == 180
    assert reproduce.reproduce(MODEL, "2") == {"predict": True, "predict_proba": True, "predict_log_proba": True}


def wait_for_running_step(step: str, timeout: float = 300) -> None:
    """Until a ``step`` run is RUNNING in the test's store (which the pipeline is writing to)."""
    from mlflow.exceptions import MlflowException

    def attempt(_timeout):
        return (
            mlflow.search_runs(
                search_all_experiments=True,
                filter_string=f"tags.`{contracts.STEP_TAG}` = '{step}' and attributes.status = 'RUNNING'",
                output_format="list",
            )
            or None
        )

    wait_until(attempt, timeout, f"a RUNNING {step} run", transient=(MlflowException,))


def kill_step_processes(step: str, tmp_path: Path) -> None:
    """SIGKILL this test's own ``steps.<step>`` processes (matched by their tracking store, in
    ``/proc/<pid>/environ``: Linux only, the tests that call it are skipped elsewhere)."""
    if not sys.platform.startswith("linux"):
        pytest.skip("reads /proc: Linux only")
    store = str(tmp_path)
    pids = subprocess.run(["pgrep", "-f", f"steps.{step}"], capture_output=True, text=True).stdout.split()
    killed = 0
    for pid in pids:
        try:
            environ = Path(f"/proc/{pid}/environ").read_bytes()
        except OSError:
            continue
        if store.encode() in environ:
            os.kill(int(pid), signal.SIGKILL)
            killed += 1
    assert killed, f"no steps.{step} process of this test was found"


def test_killed_step_fails_the_run_and_the_next_run_resumes(project_env, tmp_path):
    env = {**project_env, "PYTHONPATH": str(contracts.PROJECT_DIR)}
    process = subprocess.Popen(
        retrain_cmd(), env=env, cwd=tmp_path, stdout=subprocess.PIPE, stderr=subprocess.STDOUT, text=True
    )
    wait_for_running_step("package_pyfunc")
    kill_step_processes("package_pyfunc", tmp_path)
    output, _ = process.communicate(timeout=300)
    assert process.returncode == 1, output[-3000:]
    parent = parent_runs()[0]
    assert parent.info.status == "FAILED"
    assert step_states(parent)["package_pyfunc"][0] == "FAILED"
    client = MlflowClient()
    for version in client.search_model_versions(f"name='{MODEL}'"):
        assert version.tags.get(contracts.VALIDATION_STATUS_TAG) != "passed"
        assert not version.aliases

    resumed = run_retrain(project_env, tmp_path)
    assert resumed.returncode == 0, resumed.stderr[-3000:]
    states = step_states(parent_runs()[0])
    assert [states[s][0] for s in graph.NAMES] == ["CACHED", "CACHED", "FINISHED", "FINISHED"]
    champion = client.get_model_version_by_alias(MODEL, "champion")
    assert champion.tags[contracts.VALIDATION_STATUS_TAG] == "passed"

    # A tampered joblib artifact is refused: the pipeline fails and nothing moves.
    serialize_run = parent_runs()[0].data.tags["pipeline.step.serialize.run_id"]
    stored = Path(mlflow.artifacts.download_artifacts(f"runs:/{serialize_run}/estimator/estimator.joblib"))
    artifact_dir = Path(mlflow.get_run(serialize_run).info.artifact_uri.removeprefix("file://"))
    original = artifact_dir / "estimator" / "estimator.joblib"
    original.write_bytes(stored.read_bytes()[:100])  # truncated
    tampered = run_retrain(project_env, tmp_path, "--force", "package_pyfunc")
    assert tampered.returncode == 1
    assert "Refusing to load" in tampered.stderr + tampered.stdout
    assert client.get_model_version_by_alias(MODEL, "champion").version == champion.version
    assert parent_runs()[0].data.tags[contracts.OUTCOME_TAG] == "failed"
    assert "Refusing to load" in parent_runs()[0].data.tags[contracts.OUTCOME_DETAIL_TAG]
    assert all(
        v.tags.get(contracts.VALIDATION_STATUS_TAG) != "passed" or v.version == champion.version
        for v in client.search_model_versions(f"name='{MODEL}'")
    )


def test_lock_makes_a_second_run_exit_with_a_distinct_code(project_env, tmp_path, tracking_store):
    with locks.file_lock(locks.lock_path(tracking_store), wait=0):
        busy = run_retrain(project_env, tmp_path, "--wait", "1")
    assert busy.returncode == retrain.EXIT_LOCKED
    assert "another pipeline run holds" in busy.stderr and "waited 1 s" in busy.stderr
    assert parent_runs() == []


def test_two_pipelines_on_a_fresh_store_both_finish_one_trains(project_env, tmp_path):
    fresh = tmp_path / "fresh"
    uri = f"sqlite:///{fresh / 'mlflow.db'}"
    env = {**project_env, "MLFLOW_TRACKING_URI": uri, "PYTHONPATH": str(contracts.PROJECT_DIR)}
    env.pop("MLFLOW_EXPERIMENT_NAME")
    processes = [
        subprocess.Popen(
            retrain_cmd("--wait", "600"),
            env=env,
            cwd=tmp_path,
            stdout=subprocess.PIPE,
            stderr=subprocess.STDOUT,
            text=True,
        )
        for _ in range(2)
    ]
    outputs = [p.communicate(timeout=600)[0] for p in processes]
    assert [p.returncode for p in processes] == [0, 0], outputs[0][-2000:] + outputs[1][-2000:]
    assert sum("promoted version 1 to champion" in o for o in outputs) == 1
    assert sum("nothing changed" in o for o in outputs) == 1
    client = MlflowClient(tracking_uri=uri)
    assert [v.version for v in client.search_model_versions(f"name='{MODEL}'")] in ([1], ["1"])
    assert (fresh / "mlruns").is_dir()


def test_unreachable_tracking_server_fails_fast(project_env, tmp_path):
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        port = sock.getsockname()[1]
    env = {**project_env, "MLFLOW_TRACKING_URI": f"http://127.0.0.1:{port}"}
    # One check, no retries: MLflow's own client would retry for minutes (253 s seen), past
    # this deadline (subprocess.TimeoutExpired) even on a loaded machine.
    result = run_retrain(env, tmp_path, "--connect-timeout", "5", timeout=150)
    assert result.returncode == retrain.EXIT_UNAVAILABLE
    assert f"tracking server http://127.0.0.1:{port} is unreachable" in result.stderr
