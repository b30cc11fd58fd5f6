"""A shared `mlflow server` for the tests: PostgreSQL backend store, proxied artifacts.

Started once per test session on a fresh database (``tests/e2e/conftest.py``); the tests
that use it each work in an experiment and a registered model of their own.
"""

from __future__ import annotations

import subprocess
import sys
from collections.abc import Iterator
from contextlib import contextmanager
from pathlib import Path

from mlflow import MlflowClient

from core import contracts
from tests.support.factories import venv_env
from tests.support.helpers import free_port, stop, wait_for_http

START_TIMEOUT = 300  # seconds for the server to answer /health on a busy machine


@contextmanager
def tracking_server(database_uri: str, root: Path) -> Iterator[str]:
    """An `mlflow server` on the PostgreSQL database ``database_uri``, its artifacts under
    ``root/server-artifacts`` and its log in ``root/server.log``; yields its ``http://`` URI."""
    port = free_port()
    log = open(root / "server.log", "w")
    process = subprocess.Popen(
        [
            sys.executable,
            "-m",
            "mlflow",
            "server",
            "--backend-store-uri",
            database_uri,
            "--artifacts-destination",
            str(root / "server-artifacts"),
            "--host",
            "127.0.0.1",
            "--port",
            str(port),
            "--workers",
            "2",
        ],
        # No job runner: the pipeline uses none, and its consumer processes poll and
        # import MLflow (seven of them, a core and a half busy on a 2-core machine).
        env=venv_env(MLFLOW_SERVER_ENABLE_JOB_EXECUTION="false"),
        cwd=root,
        stdout=log,
        stderr=subprocess.STDOUT,
    )
    uri = f"http://127.0.0.1:{port}"
    try:
        wait_for_http(process, f"{uri}/health", root / "server.log", timeout=START_TIMEOUT)
        yield uri
    finally:
        stop(process)
        log.close()


def server_env(project_env: dict[str, str], uri: str, experiment: str) -> dict[str, str]:
    """The test's environment pointed at the server, in an experiment of its own (created
    here, before any pipeline starts: concurrent pipelines must not race to create it)."""
    MlflowClient(tracking_uri=uri).create_experiment(experiment)
    return {
        **project_env,
        "MLFLOW_TRACKING_URI": uri,
        "PYTHONPATH": str(contracts.PROJECT_DIR),
        "MLFLOW_EXPERIMENT_NAME": experiment,
    }
