"""Shared fixtures. Every test gets its own SQLite tracking store under tmp_path.

Expensive state is built once per session and copied per test: an empty migrated
store (``empty_store``), and a store in which the real pipeline already ran
(``champion_template``: version 1 registered, validated and champion). A test that
asks for the ``champion`` fixture starts from a copy of the latter.
"""

from __future__ import annotations

import json
import shutil
import subprocess
import sys
from pathlib import Path

import mlflow
import pytest

from steps import common, locks
from tests.factories import CHAMPION_OUTPUTS, EXPERIMENT, copy_store, new_store, pipeline_outputs, venv_env


@pytest.fixture(scope="session")
def empty_store(tmp_path_factory: pytest.TempPathFactory) -> Path:
    """An empty, fully migrated SQLite store, created once (migrating takes seconds)."""
    path = tmp_path_factory.mktemp("template") / "mlflow.db"
    mlflow.MlflowClient(tracking_uri=f"sqlite:///{path}").search_experiments()
    return path


@pytest.fixture(scope="session")
def champion_template(tmp_path_factory: pytest.TempPathFactory, empty_store: Path, worker_id: str) -> Path:
    """A store in which ``python -m steps.main`` ran with the default config: four real
    step runs, version 1 of ``iris-classifier`` registered, validated and champion.

    Built once for the whole session, by whichever xdist worker needs it first
    (the others wait on a file lock), and only ever copied (:func:`copy_store`).
    """
    shared = tmp_path_factory.getbasetemp()
    if worker_id != "master":
        shared = shared.parent  # the directory every worker's basetemp is in
    template = shared / "champion-store"
    with locks.file_lock(shared / "champion-store.lock", wait=1800):
        if (template / CHAMPION_OUTPUTS).exists():
            return template
        shutil.rmtree(template, ignore_errors=True)
        template.mkdir()
        uri = new_store(empty_store, template)
        result = subprocess.run(
            [sys.executable, "-m", "steps.main"], cwd=template, capture_output=True, text=True, timeout=900,
            env=venv_env(MLFLOW_TRACKING_URI=uri, MLFLOW_EXPERIMENT_NAME=EXPERIMENT,
                         PIPELINE_LOCK_DIR=str(template / "locks"), PYTHONPATH=str(common.PROJECT_DIR)),
        )
        assert result.returncode == 0, result.stdout[-3000:] + result.stderr[-3000:]
        assert "promoted version 1 to champion" in result.stdout, result.stdout[-3000:]
        (template / CHAMPION_OUTPUTS).write_text(json.dumps(pipeline_outputs(uri)))
    return template


@pytest.fixture(autouse=True)
def tracking_store(empty_store: Path, tmp_path: Path, monkeypatch: pytest.MonkeyPatch, request) -> str:
    """A fresh tracking store and experiment for each test, never the project's own.

    A test that asks for ``champion`` gets a copy of ``champion_template`` instead
    of an empty store. The working directory is tmp_path as well.
    """
    if "champion" in request.fixturenames:
        uri = copy_store(request.getfixturevalue("champion_template"), tmp_path)
    else:
        uri = new_store(empty_store, tmp_path)
    monkeypatch.chdir(tmp_path)
    monkeypatch.setenv("MLFLOW_TRACKING_URI", uri)
    monkeypatch.delenv("MLFLOW_RUN_ID", raising=False)
    monkeypatch.delenv("MLFLOW_EXPERIMENT_ID", raising=False)
    mlflow.set_tracking_uri(uri)
    monkeypatch.setenv("PIPELINE_LOCK_DIR", str(tmp_path / "locks"))
    monkeypatch.setenv("PIPELINE_SWEEP_DIR", str(tmp_path / "multirun"))
    # Read by in-process runs and by `mlflow run` (its --experiment-name default).
    monkeypatch.setenv("MLFLOW_EXPERIMENT_NAME", EXPERIMENT)
    yield uri
    while mlflow.active_run():
        mlflow.end_run()
    mlflow.set_tracking_uri(None)


@pytest.fixture
def champion(tracking_store: str, champion_template: Path) -> dict[str, str]:
    """This test's store holds the default pipeline's run, version 1 champion; returns
    that pipeline's outputs (``registered_model_uri``, ``model_uri``, ``holdout_uri``,
    ..., and each step's run id as ``<step>_run_id``)."""
    return json.loads((champion_template / CHAMPION_OUTPUTS).read_text())


@pytest.fixture
def cfg():
    """The default composed config (a new object per test: tests may change it)."""
    return common.compose_config([])


@pytest.fixture
def project_env(tracking_store: str) -> dict[str, str]:
    """Environment for a subprocess: the test's store, the venv's python first on PATH."""
    return venv_env()
