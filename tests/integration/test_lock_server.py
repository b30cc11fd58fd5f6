"""Locks every host shares: PostgreSQL advisory locks (``core.locks.postgres``), taken when
``PIPELINE_LOCK_URL`` is set. Two holders of one key exclude each other whatever their lock
directory (their "host"); other stores and other lock names do not; a busy lock names its
holder; a killed holder frees it at once; an unreachable server is one line without the
password, which no message or log line ever shows.

Needs PostgreSQL at 127.0.0.1:5432 (tests/support/postgres.py); the tests that take a lock
skip, saying so, where it is not running.
"""

from __future__ import annotations

import logging
import os
import signal
import socket
import subprocess
import sys

import pytest
from mlflow import MlflowClient

from core import contracts, locks
from core.locks import postgres as pg
from core.registry import INTENT_TAG, Change, apply_change, recover
from ops import promote, retrain
from tests.support import postgres
from tests.support.helpers import free_port, wait_until

PASSWORD = "s3cret-pw"  # trust authentication ignores it; no message may show it
STORE = "http://tracking.example:5000"  # a tracking server: its file locks go to $PIPELINE_LOCK_DIR
# Holds lock argv[1] of store argv[2], waiting at most argv[3] seconds; says "taken", then sleeps.
HOLD = """
import sys, time
from core.locks import store_lock
with store_lock(sys.argv[1], float(sys.argv[3]), sys.argv[2]):
    print("taken", flush=True)
    time.sleep(600)
"""


@pytest.fixture(scope="module")
def lock_database():
    with postgres.fresh_database() as uri:
        if uri is None:
            pytest.skip(postgres.unavailable() or f"PostgreSQL at {postgres.ADDRESS} refused a connection")
        yield uri


@pytest.fixture
def lock_url(lock_database, monkeypatch, caplog):
    """``PIPELINE_LOCK_URL`` set for this test (with a password), its database's URI returned;
    afterwards no log record carries the password."""
    url = lock_database.replace("postgres@", f"postgres:{PASSWORD}@")
    monkeypatch.setenv(locks.LOCK_URL_ENV, url)
    caplog.set_level(logging.DEBUG)
    yield lock_database
    assert not [r.getMessage() for r in caplog.records if PASSWORD in r.getMessage()]


def as_host(monkeypatch, tmp_path, name: str) -> None:
    """This process from here on as another host would be: its own lock directory."""
    monkeypatch.setenv("PIPELINE_LOCK_DIR", str(tmp_path / name / "locks"))


def holder(tmp_path, name: str, store: str, wait: float = 0) -> subprocess.Popen:
    """A process holding lock ``name`` of ``store`` (once it has said "taken") from a lock directory of its own."""
    env = {**os.environ, "PYTHONPATH": str(contracts.PROJECT_DIR), "PIPELINE_LOCK_DIR": str(tmp_path / "other-host")}
    return subprocess.Popen(
        [sys.executable, "-c", HOLD, name, store, str(wait)], env=env, stdout=subprocess.PIPE, text=True
    )


def said_taken(process: subprocess.Popen) -> None:
    line = process.stdout.readline()  # "taken", or "" once it has died
    assert line.strip() == "taken", f"the holder did not take the lock (exit {process.poll()})"


def test_one_lock_excludes_another_host_and_no_other_store_or_name(lock_url, monkeypatch, tmp_path):
    as_host(monkeypatch, tmp_path, "a")
    with locks.store_lock("gate", 0, STORE) as held:
        assert held.shared and PASSWORD not in held.shared
        as_host(monkeypatch, tmp_path, "b")
        with pytest.raises(locks.LockBusy) as busy:
            with locks.store_lock("gate", 0.5, STORE):
                pytest.fail("two holders of one lock")
        message = str(busy.value)
        assert f"holds the gate lock of {STORE} (held by pid {os.getpid()} on {socket.gethostname()}" in message
        assert "waited 0.5 s" in message and PASSWORD not in message and "\n" not in message
        # The same store named with credentials, a trailing slash or another case is the same lock.
        with pytest.raises(locks.LockBusy):
            with locks.store_lock("gate", 0, "http://someone:pw@Tracking.Example:5000/"):
                pass
        with locks.store_lock("gate", 0, "http://another-store:5000"), locks.store_lock("pipeline", 0, STORE):
            pass
        held.check()  # still held
    with locks.store_lock("gate", 0, STORE):  # released on exit
        pass


def test_a_holder_killed_with_sigkill_frees_the_lock_for_a_waiting_process(lock_url, tmp_path):
    first = holder(tmp_path, "pipeline", STORE)
    waiter = None
    try:
        said_taken(first)
        with pytest.raises(locks.LockBusy, match=f"held by pid {first.pid} on "):
            with locks.store_lock("pipeline", 0, STORE):
                pass
        waiter = holder(tmp_path, "pipeline", STORE, wait=120)
        wait_until(lambda _: len(postgres.lock_sessions(lock_url, "pipeline")) == 2 or None, 60, "the waiter's session")
        first.send_signal(signal.SIGKILL)
        said_taken(waiter)  # within its wait of 120 s, or its LockBusy ends it
        assert first.wait(timeout=60) == -signal.SIGKILL
    finally:
        for process in (first, waiter):
            if process is not None and process.poll() is None:
                process.kill()
                process.wait(timeout=60)


def test_the_lock_session_ends_soon_after_its_host_vanishes(lock_url):
    """TCP keepalives and a user timeout are set on the server's end of the session (and
    libpq's), so the server ends it, and frees the lock, within DEAD_HOST_SECONDS."""
    with locks.store_lock("gate", 0, STORE):
        ((name, holding),) = postgres.lock_sessions(lock_url, "gate")
    assert holding and name == f"pipeline lock gate: pid {os.getpid()} on {socket.gethostname()}"[:63]
    conn = pg.connect(os.environ[locks.LOCK_URL_ENV], "gate")
    try:
        shown = {key: conn.execute(f"SHOW {key}").fetchone()[0] for key in ("tcp_keepalives_idle", "tcp_user_timeout")}
        assert shown == {"tcp_keepalives_idle": "10", "tcp_user_timeout": f"{pg.DEAD_HOST_SECONDS * 1000}"}
        assert conn.execute("SHOW tcp_keepalives_interval").fetchone()[0] == "5"
        assert conn.execute("SHOW tcp_keepalives_count").fetchone()[0] == "3"
        assert conn.execute("SHOW idle_session_timeout").fetchone()[0] == "0"
        if conn.info.server_version >= 140000:
            assert conn.execute("SHOW client_connection_check_interval").fetchone()[0] == "5s"
    finally:
        conn.close()
    assert pg.DEAD_HOST_SECONDS == 25  # what docs/operations.md promises


def test_a_lost_session_stops_a_registry_change_before_it_writes(lock_url, champion):
    client = MlflowClient()
    name = "iris-classifier"
    with locks.gate_lock(0) as held:
        assert postgres.end_sessions(lock_url, f"pipeline lock gate: pid {os.getpid()} on {socket.gethostname()}") == 1
        with pytest.raises(locks.LockLost, match="another host may hold it now"):
            held.check()
        with pytest.raises(locks.LockLost):
            apply_change(client, name, Change("a decision", aliases={"challenger": "1"}), held=held)
    model = client.get_registered_model(name)
    assert "challenger" not in model.aliases and INTENT_TAG not in model.tags
    with locks.gate_lock(0):  # nobody holds it now
        pass


def test_a_session_lost_half_way_leaves_the_change_to_the_next_holder_who_undoes_it(lock_url, champion):
    """Once the lock is lost another host may be deciding: the loser writes nothing more, not
    even its undo (which could overwrite the other's change); the next holder undoes it."""
    client = MlflowClient()
    name = "iris-classifier"
    with locks.gate_lock(0) as real:
        checks = iter([None])  # the first check passes (the intent is written), the next finds the lock lost

        def check():
            if next(checks, "lost"):
                raise locks.LockLost("the session holding the gate lock ended; another host may hold it now")

        lost = locks.Held("gate", shared=real.shared, check=check)
        change = Change("a decision", aliases={"challenger": "1"}, tags={"1": {"gate.note": "x"}})
        with pytest.raises(locks.LockLost) as raised:
            apply_change(client, name, change, held=lost)
    assert "the next holder of the gate lock undoes it" in " ".join(raised.value.__notes__)
    model = client.get_registered_model(name)
    assert INTENT_TAG in model.tags and "challenger" not in model.aliases  # left as it was, not undone
    assert "gate.note" not in client.get_model_version(name, "1").tags
    with locks.gate_lock(0) as held:
        said = recover(client, name, held)
    assert said and "undid an interrupted change" in said
    assert INTENT_TAG not in client.get_registered_model(name).tags


@pytest.mark.parametrize(
    "url", ["postgresql://locker:{password}@127.0.0.1:{port}/locks", "mysql://locker:{password}@127.0.0.1:{port}/x"]
)
def test_a_lock_server_that_cannot_be_used_is_one_line_and_exit_69(url, monkeypatch, capsys, caplog):
    port = free_port()  # nothing listens there
    monkeypatch.setenv(locks.LOCK_URL_ENV, url.format(password=PASSWORD, port=port))
    shown = url.format(password="", port=port).replace(":@", "@")
    for changed in ("PATH", contracts.TRIGGER_ENV, "MLFLOW_TRACKING_URI"):  # ops.retrain sets them: restored after
        monkeypatch.setenv(changed, os.environ.get(changed, ""))
    with pytest.raises(locks.LockUnavailable) as unavailable:
        with locks.store_lock("gate", 0, STORE):
            pass
    assert shown in str(unavailable.value) and PASSWORD not in str(unavailable.value)
    for command in (lambda: retrain.main(["--wait", "0"]), lambda: promote.main(["1", "--reason", "test"])):
        with pytest.raises(SystemExit) as exit_:
            command()
        assert exit_.value.code == 69 != retrain.EXIT_LOCKED
        err = capsys.readouterr().err
        assert len(err.strip().splitlines()) == 1 and shown in err and PASSWORD not in err, err
    assert not [r.getMessage() for r in caplog.records if PASSWORD in r.getMessage()]


def test_where_the_locks_are_held(monkeypatch):
    monkeypatch.delenv(locks.LOCK_URL_ENV, raising=False)
    assert locks.lock_url("http://tracking:5000") is None
    assert locks.lock_url("sqlite:////tmp/mlflow.db") is None
    # A PostgreSQL store is reached by every host already: its locks are held there.
    assert locks.lock_url("postgresql+psycopg://u:p@db:5432/mlflow") == "postgresql+psycopg://u:p@db:5432/mlflow"
    monkeypatch.setenv(locks.LOCK_URL_ENV, "postgresql://locks@db:5432/locks")
    assert (
        locks.lock_url("postgresql://u@db/mlflow") == locks.lock_url("http://x") == "postgresql://locks@db:5432/locks"
    )


def test_one_store_named_with_a_driver_or_default_port_is_one_lock():
    same = ["postgresql://db/mlflow", "postgresql+psycopg://u:p@db:5432/mlflow/", "postgres://DB/mlflow"]
    assert {pg.lock_key(uri, "gate") for uri in same} == {pg.lock_key(same[0], "gate")}
    assert pg.lock_key("http://mlflow:80", "gate") == pg.lock_key("http://mlflow", "gate")
    assert pg.lock_key("postgresql://db:5433/mlflow", "gate") != pg.lock_key(same[0], "gate")


def test_a_lock_setting_that_is_not_a_url_is_never_echoed(monkeypatch):
    monkeypatch.setenv(locks.LOCK_URL_ENV, f"host=db password={PASSWORD} dbname=m")
    with pytest.raises(locks.LockUnavailable) as raised:
        with locks.store_lock("gate", 0, STORE):
            pass
    assert "must be a postgresql:// URL" in str(raised.value) and PASSWORD not in str(raised.value)


def test_lock_keys_are_stable_and_name_store_and_lock():
    key = pg.lock_key("http://tracking.example:5000", "gate")
    assert key == pg.lock_key("http://user:pw@TRACKING.example:5000/", "gate") == -5725665580777274733
    assert -(2**63) <= key < 2**63
    assert (
        len({key, pg.lock_key("http://tracking.example:5000", "pipeline"), pg.lock_key("http://x:5000", "gate")}) == 3
    )
    assert pg.without_password("postgresql://u:p%40ss@h:5432/db?sslmode=require&password=x") == (
        "postgresql://u@h:5432/db?sslmode=require"
    )
