"""A sweep on a Ray cluster (hydra/launcher=ray) end to end, on a Ray head the test starts
(tests/support/ray_head.py); skipped, saying why, where Ray is not installed or the
head does not start."""

from __future__ import annotations

import os
import re
import subprocess
import sys
from pathlib import Path

import mlflow
import pytest
from mlflow import MlflowClient

from core import contracts
from pipeline import graph
from tests.support.factories import gate_decisions
from tests.support.ray_head import ray_head

SWEEP_WAIT = 900  # seconds for the whole sweep on a busy machine


def children(run_id: str) -> list:
    return mlflow.search_runs(
        search_all_experiments=True, filter_string=f"tags.`mlflow.parentRunId` = '{run_id}'", output_format="list"
    )


def test_sweep_on_a_ray_cluster(project_env, tmp_path):
    """hydra/launcher=ray with RAY_ADDRESS naming a one-machine Ray head: each job runs in
    a Ray worker as a nested run of the sweep run, with the launching environment's
    store, sweep folder and Python (the head's environment names another store and
    folder, and has no venv on PATH), and the gate decides once, for the best job, in
    the launching process."""
    venv_bin = str(Path(sys.executable).parent)
    node_env = {name: value for name, value in project_env.items() if not name.startswith(("MLFLOW_", "PIPELINE_"))}
    node_env["PATH"] = os.pathsep.join(p for p in node_env.get("PATH", "").split(os.pathsep) if p != venv_bin)
    node = tmp_path / "node"
    node.mkdir()
    # The node's own settings, which the launching environment's must override.
    node_env.update(MLFLOW_TRACKING_URI=f"sqlite:///{node / 'node.db'}", PIPELINE_SWEEP_DIR=str(node / "sweeps"))
    with ray_head(node, node_env) as head:
        driver = subprocess.Popen(
            [sys.executable, "-m", "pipeline.main", "-m", "hydra/launcher=ray", "model=logistic_regression,knn"],
            cwd=tmp_path,
            env={
                **project_env,
                "PYTHONPATH": str(contracts.PROJECT_DIR),
                "RAY_ADDRESS": head.address,
                "PIPELINE_SWEEP_DIR": str(tmp_path / "sweeps"),
            },
            stdout=subprocess.PIPE,
            stderr=subprocess.STDOUT,
            text=True,
        )
        try:
            output, _ = driver.communicate(timeout=SWEEP_WAIT)
        except subprocess.TimeoutExpired:
            driver.kill()
            pytest.fail(f"the sweep did not end within {SWEEP_WAIT} s:\n{driver.communicate()[0][-4000:]}")
    assert driver.returncode == 0, output[-4000:]

    (sweep_run,) = mlflow.search_runs(
        search_all_experiments=True, filter_string="tags.`pipeline.step` = 'sweep'", output_format="list"
    )
    jobs = {
        run.data.tags["sweep.overrides"]: run
        for run in children(sweep_run.info.run_id)
        if run.data.tags.get(contracts.STEP_TAG) == "sweep_job"
    }
    assert sorted(jobs) == ["model=knn", "model=logistic_regression"]
    assert {run.info.status for run in jobs.values()} == {"FINISHED"}
    # In Ray's workers: the program MLflow records as each job's source is Ray's worker,
    # and each job's summary reached the launching process through Ray's log
    # streaming, from a worker process other than the launching one.
    assert sweep_run.data.tags["mlflow.source.name"].endswith(os.path.join("pipeline", "main.py"))
    for overrides, run in jobs.items():
        assert run.data.tags["mlflow.source.name"].endswith(
            os.path.join("ray", "_private", "workers", "default_worker.py")
        )
        streamed = re.search(rf"\(PoolActor pid=(\d+)\)\S*\s+job {overrides} \(run {run.info.run_id}\)", output)
        assert streamed and int(streamed.group(1)) != driver.pid, output[-4000:]
        steps = {step.data.tags["mlflow.project.entryPoint"] for step in children(run.info.run_id)}
        assert steps == set(graph.NAMES)
    # Hydra's records of the jobs went to the launching environment's PIPELINE_SWEEP_DIR.
    assert len(list((tmp_path / "sweeps").glob("*/*/[01]/.hydra"))) == 2
    assert not (node / "sweeps").exists() and not (node / "node.db").exists()
    # One gate decision in the whole sweep, in the launching process: the evaluate run under the sweep run.
    assert [run.data.tags["mlflow.parentRunId"] for run in gate_decisions()] == [sweep_run.info.run_id]
    champion = MlflowClient().get_model_version_by_alias("iris-classifier", "champion")
    assert champion.tags["sweep.outcome"] == "best"
