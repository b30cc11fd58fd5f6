"""`make serve` follows the champion alias: a promotion by the real pipeline and a rollback
reach running servers under load with no failed request, and a tampered champion is never
served. One store (a copy of the session's champion store) for the whole module, with:

- a real `mlflow server` on it (webhooks to loopback allowed);
- a server with two workers that polls the store itself every second (``polled``);
- a server that never polls and learns of moves only from MLflow's signed webhooks,
  reading the registry through the `mlflow server` (``pushed``).

The store is a fresh PostgreSQL database holding a copy of the champion store where
PostgreSQL is reachable (tests/support/postgres.py), else the SQLite file itself (with a
warning saying why); the test ids name it: ``test_...[postgresql]`` or ``[sqlite]``.
"""

from __future__ import annotations

import json
import subprocess
import sys
import time
import warnings
from collections.abc import Iterator
from dataclasses import dataclass
from datetime import datetime
from pathlib import Path

import mlflow
import pytest
import requests
import sqlalchemy
from mlflow import MlflowClient
from sklearn.linear_model import LogisticRegression

from core import contracts
from core.registry import alias_target
from serving import webhook
from tests.support import postgres
from tests.support.factories import copy_store, package, venv_env
from tests.support.helpers import free_port, stop, wait_for_http, wait_until
from tests.support.load import AliasWatcher, Load

# One worker runs this module whole (make test: --dist loadscope): its tests share a server.

NAME = "iris-classifier"
SECRET = "the secret these tests share with the tracking server"
POLL = 1.0  # the polled server's --poll-interval, seconds
# Seconds any wait may last before the test fails saying what it waited for: a deadline for a
# loaded machine, not a bound on speed (how soon a server switches is measured by bench.swap).
WAIT = 120


def pytest_generate_tests(metafunc):
    """The store's backend is a module-wide parameter, so that every test id names it."""
    if "backend" in metafunc.fixturenames:
        metafunc.parametrize("backend", ["sqlite" if postgres.unavailable() else "postgresql"], scope="module")


@dataclass(frozen=True)
class Stack:
    store_uri: str  # the store itself: a postgresql:// database or a sqlite:/// file
    tracking_uri: str  # the `mlflow server` on that store
    polled: str  # base URLs of the two scoring servers
    pushed: str


@pytest.fixture(scope="module")
def store(backend, tmp_path_factory, champion_template) -> Iterator[tuple[Path, str]]:
    """A directory for the module and its store: a copy of the champion store, moved into a
    fresh PostgreSQL database when ``backend`` says so (its artifact files stay in the directory)."""
    root = tmp_path_factory.mktemp("follows")
    sqlite_uri = copy_store(champion_template, root)
    if backend == "sqlite":
        warnings.warn(f"the serving-follows stack runs on SQLite: {postgres.unavailable()}", stacklevel=1)
        yield root, sqlite_uri
        return
    with postgres.fresh_database(migrated=True) as database:
        assert database, f"PostgreSQL answered when the tests were collected, not now: {postgres.unavailable()}"
        postgres.copy_sqlite_store(sqlite_uri, database)
        (root / "mlflow.db").unlink()  # nothing may go on reading or writing the SQLite copy
        yield root, database


@pytest.fixture(scope="module")
def stack(store):
    from cryptography.fernet import Fernet

    root, store_uri = store
    ports = {name: free_port() for name in ("tracking", "polled", "pushed")}
    tracking_uri, urls = f"http://127.0.0.1:{ports['tracking']}", {}
    serve = [sys.executable, "-m", "serving.server", "--model-uri", f"models:/{NAME}@champion"]
    commands = {
        "tracking": (
            [
                sys.executable,
                "-m",
                "mlflow",
                "server",
                "--backend-store-uri",
                store_uri,
                "--host",
                "127.0.0.1",
                "--port",
                str(ports["tracking"]),
                "--workers",
                "1",
            ],
            # Webhooks to a loopback http:// URL; one key for the secrets it stores.
            venv_env(
                MLFLOW_WEBHOOK_ALLOW_PRIVATE_IPS="true",
                MLFLOW_WEBHOOK_ALLOWED_SCHEMES="http,https",
                MLFLOW_WEBHOOK_SECRET_ENCRYPTION_KEY=Fernet.generate_key().decode(),
                MLFLOW_SERVER_ENABLE_JOB_EXECUTION="false",
            ),
        ),
        "polled": (
            serve + ["--port", str(ports["polled"]), "--poll-interval", str(POLL), "--workers", "2"],
            venv_env(MLFLOW_TRACKING_URI=store_uri, PYTHONPATH=str(contracts.PROJECT_DIR)),
        ),
        "pushed": (
            serve + ["--port", str(ports["pushed"]), "--poll-interval", "0"],
            venv_env(
                MLFLOW_TRACKING_URI=tracking_uri, PYTHONPATH=str(contracts.PROJECT_DIR), **{webhook.SECRET_ENV: SECRET}
            ),
        ),
    }
    processes = {}

    def start(name: str) -> None:
        command, env = commands[name]
        with open(root / f"{name}.log", "w") as log:
            processes[name] = subprocess.Popen(command, env=env, cwd=root, stdout=log, stderr=subprocess.STDOUT)
        urls[name] = f"http://127.0.0.1:{ports[name]}"

    def ready(name: str) -> None:
        path = "health" if name == "tracking" else "ping"
        wait_for_http(processes[name], f"{urls[name]}/{path}", root / f"{name}.log", timeout=300)

    try:
        start("tracking")
        start("polled")
        ready("tracking")  # the pushed server reads the registry through it from the start
        start("pushed")
        ready("polled")
        ready("pushed")
        webhook.register(f"{urls['pushed']}{webhook.PATH}", SECRET, client=MlflowClient(tracking_uri))
        yield Stack(store_uri, tracking_uri, urls["polled"], urls["pushed"])
    finally:
        for process in processes.values():
            stop(process)


def status(base: str) -> dict:
    return requests.get(f"{base}/status", timeout=30).json()


def every_worker(base: str, condition, count: int = 1) -> dict | None:
    """The server's status once at least ``count`` workers report and each meets ``condition``."""
    found = status(base)
    workers = found["workers"]
    return found if len(workers) >= count and all(condition(worker) for worker in workers) else None


def refused_version(worker: dict) -> str | None:
    return (worker["last_refused"] or {}).get("version")


def seconds_since(moved_at_wall: float, iso: str) -> float:
    return datetime.fromisoformat(iso).timestamp() - moved_at_wall


def reached(stack: Stack, loads: dict[str, Load], watcher: AliasWatcher, version: str, after: float) -> dict:
    """Wait until both servers answer with ``version`` (the alias moved to it after ``after``)
    and every worker of the polled one serves it; return how long each took (printed, not
    bounded: bench.swap measures it)."""
    moved = watcher.moved_to(version, after)
    assert moved is not None, watcher.moves
    took = {}
    for name, load in loads.items():
        first = wait_until(
            lambda _, load=load: load.first_from(version, moved[0]), WAIT, f"{name}: an answer by {version}"
        )
        took[name] = first.finished - moved[0]
    workers = wait_until(
        lambda _: every_worker(stack.polled, lambda w: w["served"]["version"] == version, 2),
        WAIT,
        f"both workers of the polled server on version {version}",
        transient=(requests.RequestException,),
    )["workers"]
    (pushed,) = status(stack.pushed)["workers"]
    assert pushed["served"]["version"] == version
    for worker in workers + [pushed]:
        took[f"worker {worker['pid']}"] = seconds_since(moved[1], worker["served"]["loaded_at"])
    return took


def test_the_servers_use_the_backend_the_test_id_names(stack, backend):
    """PostgreSQL wherever it is reachable; and the `mlflow server` writes to the store the
    polled server reads: the webhook registered through it is a row in that database."""
    if postgres.unavailable() is None:
        assert backend == "postgresql"
    engine = sqlalchemy.create_engine(stack.store_uri)
    try:
        assert engine.dialect.name == backend, stack.store_uri
        with engine.connect() as db:
            urls = db.execute(sqlalchemy.text("SELECT url FROM webhooks")).scalars().all()
    finally:
        engine.dispose()
    assert urls == [f"{stack.pushed}{webhook.PATH}"]


def test_a_promotion_and_a_rollback_reach_every_server_without_a_failed_request(stack, backend, project_env, tmp_path):
    client = MlflowClient(stack.store_uri)
    old = alias_target(client, NAME, "champion")
    watcher = AliasWatcher(stack.store_uri, NAME)
    loads = {"polled": Load(stack.polled), "pushed": Load(stack.pushed)}
    env = {**project_env, "MLFLOW_TRACKING_URI": stack.tracking_uri, "PYTHONPATH": str(contracts.PROJECT_DIR)}
    watcher.start()
    for load in loads.values():
        load.start()
    switches = []
    try:
        started = time.monotonic()
        retrain = subprocess.run(
            [sys.executable, "-m", "ops.retrain", "--wait", "60", "model.C=2.0"],
            env=env,
            cwd=tmp_path,
            capture_output=True,
            text=True,
            timeout=900,
        )
        assert retrain.returncode == 0, retrain.stderr[-3000:]
        new = alias_target(client, NAME, "champion")
        assert new != old, f"the pipeline did not promote a new version:\n{retrain.stdout[-2000:]}"
        switches.append(reached(stack, loads, watcher, new, started))
        started = time.monotonic()
        rollback = subprocess.run(
            [sys.executable, "-m", "ops.rollback"], env=env, cwd=tmp_path, capture_output=True, text=True, timeout=300
        )
        assert rollback.returncode == 0, rollback.stderr[-3000:]
        switches.append(reached(stack, loads, watcher, old, started))
    finally:
        for load in loads.values():
            load.stop()
        watcher.stop()

    for name, load in loads.items():
        failed = [answer for answer in load.answers if answer.status != 200]
        assert not failed, f"{name}: {len(failed)} of {len(load.answers)} requests failed, first: {failed[0]}"
        assert load.versions_in_order() == [old, new, old], name
        bodies = {}
        for answer in load.answers:  # each version answered each method one way: its own
            bodies.setdefault((answer.version, answer.method), set()).add(answer.text)
        assert all(len(found) == 1 for found in bodies.values()), {k: len(v) for k, v in bodies.items()}
        assert bodies[(old, "predict_proba")] != bodies[(new, "predict_proba")]
    print(f"{backend}: seconds from each alias move to the new version: {switches}")  # shown with -s, or on failure


def test_a_tampered_champion_is_not_served(stack, tmp_path, cfg):
    served = alias_target(MlflowClient(stack.store_uri), NAME, "champion")
    previous_uri = mlflow.get_tracking_uri()
    mlflow.set_tracking_uri(stack.store_uri)
    try:
        info, _, _ = package(LogisticRegression(C=0.05, max_iter=5000), tmp_path, cfg)
        version = str(mlflow.register_model(info.model_uri, NAME).version)
        stored = MlflowClient().get_logged_model(info.model_id).artifact_location.removeprefix("file://")
    finally:
        mlflow.set_tracking_uri(previous_uri)
    joblib_file = Path(stored) / "artifacts" / "estimator.joblib"
    joblib_file.write_bytes(joblib_file.read_bytes() + b"\0")  # after its digest was recorded

    loads = {"polled": Load(stack.polled), "pushed": Load(stack.pushed)}
    http = MlflowClient(stack.tracking_uri)  # through the server: the pushed server gets a webhook
    for load in loads.values():
        load.start()
    try:
        http.set_registered_model_alias(NAME, "champion", version)
        for base in (stack.polled, stack.pushed):
            report = wait_until(
                lambda _, base=base: every_worker(base, lambda w: refused_version(w) == version),
                WAIT,
                f"{base}: version {version} refused",
                transient=(requests.RequestException,),
            )
            assert report["served"]["version"] == served
            assert "differ from those recorded when it was logged" in report["last_refused"]["error"]
            assert report["last_check"]["alias_version"] == version and report["last_check"]["error"]
    finally:
        http.set_registered_model_alias(NAME, "champion", served)
        for load in loads.values():
            load.stop()
    for name, load in loads.items():
        assert load.answers and {(a.status, a.version) for a in load.answers} == {(200, served)}, name


def test_webhooks_unsigned_or_badly_signed_are_refused_and_change_nothing(stack):
    before = status(stack.pushed)["last_check"]
    body = json.dumps(
        {
            "entity": "model_version_alias",
            "action": "created",
            "data": {"name": NAME, "alias": "champion", "version": "1"},
        }
    ).encode()
    url = f"{stack.pushed}{webhook.PATH}"
    stamp = str(int(time.time()))
    headers = {"Content-Type": "application/json", webhook.DELIVERY_ID_HEADER: "d-1", webhook.TIMESTAMP_HEADER: stamp}
    unsigned = requests.post(url, data=body, headers=headers, timeout=30)
    assert unsigned.status_code == 401 and unsigned.json()["error_code"] == "UNAUTHENTICATED"
    forged = headers | {webhook.SIGNATURE_HEADER: webhook.signature("a guess", "d-1", stamp, body)}
    assert requests.post(url, data=body, headers=forged, timeout=30).status_code == 403
    assert requests.get(url, timeout=30).status_code == 405
    no_secret = requests.post(
        f"{stack.polled}{webhook.PATH}",
        data=body,
        timeout=30,
        headers=headers | {webhook.SIGNATURE_HEADER: webhook.signature(SECRET, "d-1", stamp, body)},
    )
    assert no_secret.status_code == 403 and "not enabled" in no_secret.json()["message"]
    assert status(stack.pushed)["last_check"] == before  # nothing was read, nothing loaded

    # MLflow's own test call (about a model "example_model") is signed right and concerns no alias here.
    client = MlflowClient(stack.tracking_uri)
    (hook,) = [h for h in client.list_webhooks() if h.url == url]
    result = client.test_webhook(hook.webhook_id)
    assert result.success and result.response_status == 200, result
    assert status(stack.pushed)["last_check"] == before

    served = status(stack.pushed)["served"]["version"]
    for path in ("/ping", "/health", "/version", "/status"):
        answer = requests.get(f"{stack.pushed}{path}", timeout=30)
        assert answer.status_code == 200 and answer.headers["X-Model-Name"] == NAME, path
        assert answer.headers["X-Model-Version"] == served, path
