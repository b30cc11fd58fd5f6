"""Only a live pipeline promotes: a step orphaned by a pipeline killed with SIGKILL moves no
alias, whether its steps are forked by the step server or not, and with or without Linux's
parent-death signal (as on macOS, where only the step's own check of its driver holds);
the next run evaluates again and promotes."""

from __future__ import annotations

import re
import subprocess
import sys

import pytest
from mlflow import MlflowClient

from core import contracts
from core.locks import file_lock, lock_path
from pipeline.processes.step_server import PARENT_DEATH_SIGNAL_ENV, PRELOAD_ENV
from tests.support.helpers import log_tail, wait_until

NAME = "iris-classifier"


def evaluate_runs(status: str | None = None) -> list:
    query = "tags.`mlflow.project.entryPoint` = 'evaluate'"
    if status:
        query += f" and attributes.status = '{status}'"
    return MlflowClient().search_runs(
        [r.experiment_id for r in MlflowClient().search_experiments()], query, order_by=["attributes.start_time DESC"]
    )


@pytest.mark.parametrize(
    "setting",
    [
        {},  # Linux's defaults: the step server, the parent-death signal
        {PARENT_DEATH_SIGNAL_ENV: "0"},  # the step server, no parent-death signal
        {PARENT_DEATH_SIGNAL_ENV: "0", PRELOAD_ENV: "0"},  # what macOS has: neither
    ],
    ids=["server+signal", "server", "neither"],
)
def test_a_pipeline_killed_during_evaluate_moves_no_alias_and_the_next_run_resumes(
    setting, champion, project_env, tmp_path
):
    client = MlflowClient()
    env = {**project_env, "PYTHONPATH": str(contracts.PROJECT_DIR), **setting}
    v1 = champion["registered_model_version"]
    client.delete_registered_model_alias(NAME, "champion")  # so that evaluate would promote version 1
    log = tmp_path / "killed-pipeline.log"
    with file_lock(lock_path(contracts.tracking_uri(), "gate"), wait=5):  # evaluate waits at the gate
        with open(log, "w") as out:
            driver = subprocess.Popen(
                [sys.executable, "-m", "pipeline.main"],
                cwd=tmp_path,
                env=env,
                stdout=out,
                stderr=subprocess.STDOUT,
                start_new_session=True,
            )
        running = wait_until(  # validated: the step is at work (and soon waits at the gate)
            lambda _: next((r for r in evaluate_runs("RUNNING") if "validation_checks_failed" in r.data.metrics), None),
            timeout=600,
            what="an evaluate run that validated the version",
            alive=lambda: None if driver.poll() is None else f"the pipeline exited: {log_tail(log)}",
        )
        driver.kill()  # SIGKILL: no handler runs in the driver
        driver.wait()
    # The gate is free now: an orphaned evaluate would take it and promote.
    ended = wait_until(
        lambda _: (run := client.get_run(running.info.run_id)).info.status != "RUNNING" and run or None,
        timeout=120,
        what="the orphaned evaluate run to end",
        log=log,
    )
    assert ended.info.status == "FAILED"
    # Stopped by the parent-death signal, or, when that arrived during a store call and was
    # held until it returned, by the check before the gate that finds the driver gone.
    assert re.match(
        r"stopped: the (process that started this one|pipeline's driver \(pid \d+\)) has ended",
        ended.data.tags[contracts.ERROR_TAG],
    )
    assert "champion" not in client.get_registered_model(NAME).aliases
    if setting:
        return  # resuming is the same whatever stopped the orphan

    resumed = subprocess.run(
        [sys.executable, "-m", "pipeline.main"], cwd=tmp_path, env=env, capture_output=True, text=True, timeout=600
    )
    assert resumed.returncode == 0, resumed.stdout[-3000:] + resumed.stderr[-3000:]
    assert f"promoted version {v1} to champion" in resumed.stdout
    for step in ("train", "serialize", "package_pyfunc"):
        assert f"{step} " in resumed.stdout and "CACHED" in resumed.stdout.split(f"  {step}", 1)[1].splitlines()[0]
    assert client.get_registered_model(NAME).aliases == {"champion": int(v1)}
