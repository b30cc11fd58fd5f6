"""Two hosts against one tracking server, their locks on one PostgreSQL server
(``PIPELINE_LOCK_URL``; docs/operations.md, "Locks across hosts").

A "host" here is a process with a lock directory of its own (``PIPELINE_LOCK_DIR``): file
locks would not meet, so whatever orders them is the lock server. Needs PostgreSQL at
127.0.0.1:5432; skips, saying so, where it is not running.
"""

from __future__ import annotations

import os
import subprocess
import sys

from mlflow import MlflowClient

from core import locks
from ops import retrain
from tests.support import postgres
from tests.support.helpers import wait_until
from tests.support.tracking_server import server_env

NAME = "iris-two-hosts"


def test_two_hosts_decide_one_after_another_and_a_busy_pipeline_lock_is_exit_75(
    tracking_server, project_env, tmp_path, monkeypatch
):
    uri, lock_url = tracking_server.uri, tracking_server.database  # the locks in the server's own database
    env = server_env(project_env, uri, "two-hosts")

    def host(name: str) -> dict[str, str]:
        return {**env, locks.LOCK_URL_ENV: lock_url, "PIPELINE_LOCK_DIR": str(tmp_path / name / "locks")}

    def started(name: str, *command: str) -> subprocess.Popen:
        return subprocess.Popen(
            [sys.executable, "-m", *command, f"registry.model_name={NAME}"],
            env=host(name),
            cwd=tmp_path,
            stdout=subprocess.PIPE,
            stderr=subprocess.STDOUT,
            text=True,
        )

    for key, value in host("operator").items():
        monkeypatch.setenv(key, value)
    # An operator's rollback on a third host holds the gate lock while both hosts start:
    # the scheduler's retrain on host a (it takes the pipeline lock first), a person's run on host b.
    with locks.gate_lock(0):
        a = started("a", "ops.retrain", "--wait", "600", "model.C=0.5")
        b = started("b", "pipeline.main", "model.C=2.0")
        wait_until(
            lambda _: len(postgres.lock_sessions(lock_url, "gate")) == 3 or None,
            300,
            "both hosts waiting at the gate lock the operator holds",
            alive=lambda: next((f"host {h} exited" for h, p in (("a", a), ("b", b)) if p.poll() is not None), None),
        )
        sessions = postgres.lock_sessions(lock_url, "gate")
        holders = [name for name, holding in sessions if holding]
        assert len(holders) == 1 and f"pid {os.getpid()} on" in holders[0], sessions  # the operator; both hosts wait
        # The scheduler's next tick, on host c, while host a's run holds the pipeline lock.
        busy = subprocess.run(
            [sys.executable, "-m", "ops.retrain", "--wait", "0", f"registry.model_name={NAME}"],
            env=host("c"),
            cwd=tmp_path,
            capture_output=True,
            text=True,
            timeout=300,
        )
        assert busy.returncode == retrain.EXIT_LOCKED == 75, busy.stderr[-2000:]
        assert f"another pipeline run holds the pipeline lock of {uri} (held by pid {a.pid} on " in busy.stderr
        assert MlflowClient(tracking_uri=uri).search_model_versions(f"name='{NAME}'") == []
    outputs = {h: p.communicate(timeout=900)[0] for h, p in (("a", a), ("b", b))}
    assert (a.returncode, b.returncode) == (0, 0), "\n".join(o[-2000:] for o in outputs.values())

    # Each gate saw the champion the previous decision left: the first none, the second the first's version.
    client = MlflowClient(tracking_uri=uri)
    versions = {str(v.version): v.tags for v in client.search_model_versions(f"name='{NAME}'")}
    assert sorted(versions) == ["1", "2"]
    first, second = sorted(versions, key=lambda v: versions[v]["gate.champion_version"] != "")
    assert versions[first]["gate.champion_version"] == "" and versions[first]["gate.outcome"] == "promoted"
    assert versions[second]["gate.champion_version"] == first
    assert versions[second]["gate.outcome"] in ("promoted", "challenger")
    aliases = {alias: str(v) for alias, v in client.get_registered_model(NAME).aliases.items()}
    if versions[second]["gate.outcome"] == "promoted":
        assert aliases == {"champion": second, "previous_champion": first}
    else:
        assert aliases == {"champion": first, "challenger": second}
