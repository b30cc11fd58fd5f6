"""Shared fixtures. Every test gets its own SQLite tracking store under tmp_path."""

from __future__ import annotations

import os
import shutil
from pathlib import Path

import mlflow
import pytest

from steps import common


@pytest.fixture(scope="session")
def empty_store(tmp_path_factory: pytest.TempPathFactory) -> Path:
    """An empty, fully migrated SQLite store, created once (migrating takes seconds)."""
    path = tmp_path_factory.mktemp("template") / "mlflow.db"
    mlflow.MlflowClient(tracking_uri=f"sqlite:///{path}").search_experiments()
    return path


@pytest.fixture(autouse=True)
def tracking_store(
    empty_store: Path, tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> str:
    """A fresh tracking store and experiment for each test, never the project's own.

    The experiment's artifact location is set explicitly, so artifacts land in
    tmp_path too (a SQLite store otherwise puts them under ./mlruns of the
    process that created it); the working directory is tmp_path as well.
    """
    shutil.copyfile(empty_store, tmp_path / "mlflow.db")
    uri = f"sqlite:///{tmp_path / 'mlflow.db'}"
    monkeypatch.chdir(tmp_path)
    monkeypatch.setenv("MLFLOW_TRACKING_URI", uri)
    monkeypatch.delenv("MLFLOW_RUN_ID", raising=False)
    monkeypatch.delenv("MLFLOW_EXPERIMENT_ID", raising=False)
    mlflow.set_tracking_uri(uri)
    experiment = "tests"
    mlflow.create_experiment(experiment, artifact_location=(tmp_path / "artifacts").as_uri())
    monkeypatch.setenv("PIPELINE_LOCK_DIR", str(tmp_path / "locks"))
    monkeypatch.setenv("PIPELINE_SWEEP_DIR", str(tmp_path / "multirun"))
    # Read by in-process runs and by `mlflow run` (its --experiment-name default).
    monkeypatch.setenv("MLFLOW_EXPERIMENT_NAME", experiment)
    yield uri
    while mlflow.active_run():
        mlflow.end_run()
    mlflow.set_tracking_uri(None)


@pytest.fixture(scope="session")
def cfg():
    """The default composed config."""
    return common.compose_config([])


@pytest.fixture
def project_env(tracking_store: str) -> dict[str, str]:
    """Environment for a subprocess: the test's store, the venv's python first on PATH."""
    import sys

    env = dict(os.environ)
    env["PATH"] = f"{Path(sys.executable).parent}{os.pathsep}{env.get('PATH', '')}"
    return env
