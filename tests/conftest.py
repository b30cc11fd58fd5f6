"""Shared fixtures. Every test gets its own SQLite tracking store under tmp_path.

Expensive state is built once per session and copied per test: an empty migrated
store (``empty_store``), and a store in which the real pipeline already ran
(``champion_template``: version 1 registered, validated and champion). A test that
asks for the ``champion`` fixture starts from a copy of the latter.
"""

from __future__ import annotations

import json
import os
from pathlib import Path

import mlflow
import pytest

from core.config import compose_config
from tests.support import champion_store
from tests.support.factories import EXPERIMENT, copy_store, new_store, venv_env

TIERS = ("e2e", "unit", "model", "integration")
# End-to-end modules, the longest first (docs/benchmarks.md#test-timings), so that the two
# workers end together; those that start from the champion store after the first long
# ones, by which time it is built. A module not listed here runs where None stands.
E2E_ORDER = (
    "test_accounts",
    "test_sweep_on_ray",
    "test_tracking_server",
    "test_two_hosts",
    "test_sweeps",
    "test_retrain",
    "test_serving_follows",
    "test_pipeline",
    "test_penguins",
    "test_drift",
    "test_serving",
    "test_orphans",
    None,
    "test_score_spark",
    "test_score_spark_cluster",
    "test_serving_refusals",
    "test_score_entry_point",
)


def pytest_collection_modifyitems(config, items):
    """Every end-to-end test (tests/e2e/) is ``slow``: ``make test-fast`` leaves them out.

    Tiers run in the order of :data:`TIERS`: the long end-to-end tests start first (in
    the order of :data:`E2E_ORDER`), and the integration tests, most of which start from
    the champion store, run after unit and model tests while that store is built in
    the background.
    """
    root = Path(__file__).parent

    def tier(item) -> str:
        return item.path.relative_to(root).parts[0]

    def order(item) -> tuple[int, int]:
        found = TIERS.index(tier(item)) if tier(item) in TIERS else len(TIERS)
        if tier(item) != "e2e":
            return found, 0
        module = item.path.stem
        return found, E2E_ORDER.index(module if module in E2E_ORDER else None)

    for item in items:
        if tier(item) == "e2e":
            item.add_marker(pytest.mark.slow)
    items.sort(key=order)


@pytest.fixture(scope="session")
def empty_store(tmp_path_factory: pytest.TempPathFactory) -> Path:
    """An empty, fully migrated SQLite store, created once (migrating takes seconds)."""
    path = tmp_path_factory.mktemp("template") / "mlflow.db"
    mlflow.MlflowClient(tracking_uri=f"sqlite:///{path}").search_experiments()
    return path


def shared_dir(tmp_path_factory: pytest.TempPathFactory, worker_id: str) -> Path:
    """A directory every xdist worker of this session sees (their basetemps' parent)."""
    basetemp = tmp_path_factory.getbasetemp()
    return basetemp if worker_id == "master" else basetemp.parent


@pytest.fixture(scope="session", autouse=True)
def champion_in_background(request, tmp_path_factory, worker_id):
    """Start building the champion store at once if any collected test needs it, so
    that no worker sits idle waiting for it later."""
    if not any("champion" in getattr(item, "fixturenames", ()) for item in request.session.items):
        yield
        return
    process = champion_store.start_in_background(shared_dir(tmp_path_factory, worker_id))
    yield
    champion_store.stop_background(process)


@pytest.fixture(scope="session")
def champion_template(tmp_path_factory: pytest.TempPathFactory, worker_id: str) -> Path:
    """The session's champion store (see tests/support/champion_store.py): waited for, or built
    here if the background build has not started or failed (its error then shows)."""
    return champion_store.ensure(shared_dir(tmp_path_factory, worker_id))


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
    # mlflow.set_experiment (core.tracking calls it) keeps the experiment id in the
    # process and in MLFLOW_EXPERIMENT_ID, where it outlives the test's store and
    # outranks MLFLOW_EXPERIMENT_NAME: neither may reach the next test.
    monkeypatch.setattr(mlflow.tracking.fluent, "_active_experiment_id", None)
    mlflow.set_tracking_uri(uri)
    monkeypatch.setenv("PIPELINE_LOCK_DIR", str(tmp_path / "locks"))
    monkeypatch.delenv("PIPELINE_LOCK_URL", raising=False)  # file locks, unless a test sets one
    monkeypatch.setenv("PIPELINE_SWEEP_DIR", str(tmp_path / "multirun"))
    # Read by in-process runs and by `mlflow run` (its --experiment-name default).
    monkeypatch.setenv("MLFLOW_EXPERIMENT_NAME", EXPERIMENT)
    yield uri
    while mlflow.active_run():
        mlflow.end_run()
    mlflow.set_tracking_uri(None)
    os.environ.pop("MLFLOW_EXPERIMENT_ID", None)


@pytest.fixture
def champion(tracking_store: str, champion_template: Path) -> dict[str, str]:
    """This test's store holds the default pipeline's run, version 1 champion; returns
    that pipeline's outputs (``registered_model_uri``, ``model_uri``, ``holdout_uri``,
    ..., and each step's run id as ``<step>_run_id``)."""
    return json.loads((champion_template / champion_store.OUTPUTS).read_text())


@pytest.fixture
def cfg():
    """The default composed config (a new object per test: tests may change it)."""
    return compose_config([])


@pytest.fixture
def project_env(tracking_store: str) -> dict[str, str]:
    """Environment for a subprocess: the test's store, the venv's python first on PATH."""
    return venv_env()


@pytest.fixture
def health_server():
    """A local HTTP server: ``/health`` answers ``state["status"]``, after stalling
    ``state["delays"].pop(0)`` seconds while delays remain; ``state["requests"]``
    counts the calls. Yields (base URL, state)."""
    import http.server
    import threading
    import time

    state = {"status": 200, "delays": [], "requests": 0}

    class Handler(http.server.BaseHTTPRequestHandler):
        def do_GET(self):
            state["requests"] += 1
            if state["delays"]:
                time.sleep(state["delays"].pop(0))
            self.send_response(state["status"] if self.path == "/health" else 404)
            self.end_headers()

        def log_message(self, *args):
            pass

    server = http.server.ThreadingHTTPServer(("127.0.0.1", 0), Handler)
    threading.Thread(target=server.serve_forever, daemon=True).start()
    yield f"http://127.0.0.1:{server.server_address[1]}", state
    server.shutdown()
