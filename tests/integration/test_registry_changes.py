"""A change of several registry writes (a gate decision, a rollback, a promotion) is one
unit: killed with SIGKILL at any alias write, it leaves its intent, every reader sees the
aliases as they were before, and the next command that takes the gate lock undoes it and
says so; stopped by an exception, it undoes itself. Never an alias moved onto the version
it already names, never ``rolled_back`` on the live champion."""

from __future__ import annotations

import subprocess
import sys

import mlflow
import pytest
from mlflow import MlflowClient

from core import contracts
from core.config import compose_config
from core.gate import GateDecision
from core.registry import (
    BEFORE_TAG,
    INTENT_TAG,
    UNDONE_TAG,
    Aliases,
    Change,
    alias_target,
    apply_change,
    decision_change,
    recover,
)
from ops import promote, rollback

NAME = "iris-classifier"

# Runs module argv[2:] as `python -m` would, killing itself with SIGKILL (no handler, no
# cleanup) just before its argv[1]-th alias write, or before it removes the change's
# intent when argv[1] is "clear".
KILLED_AT = """
import os, runpy, signal, socket, sys
from mlflow import MlflowClient
if os.environ.get("KILLED_HOST"):  # as a process on that host would record itself
    socket.gethostname = lambda: os.environ["KILLED_HOST"]
at, calls = sys.argv[1], [0]
def killing(real, counted):
    def write(self, *args, **kwargs):
        if counted(args):
            calls[0] += 1
            if at == "clear" or calls[0] == int(at):
                os.kill(os.getpid(), signal.SIGKILL)
        return real(self, *args, **kwargs)
    return write
if at == "clear":
    MlflowClient.delete_registered_model_tag = killing(MlflowClient.delete_registered_model_tag, lambda a: True)
else:
    MlflowClient.set_registered_model_alias = killing(MlflowClient.set_registered_model_alias, lambda a: True)
    MlflowClient.delete_registered_model_alias = killing(MlflowClient.delete_registered_model_alias, lambda a: True)
sys.argv = sys.argv[2:]
runpy.run_module(sys.argv[0], run_name="__main__", alter_sys=True)
"""


def killed(project_env, tmp_path, at: str, *command: str, **env: str) -> None:
    result = subprocess.run(
        [sys.executable, "-c", KILLED_AT, at, *command],
        cwd=tmp_path,
        timeout=300,
        env={**project_env, "PYTHONPATH": str(contracts.PROJECT_DIR), **env},
        capture_output=True,
        text=True,
    )
    assert result.returncode == -9, f"not killed at {at}: {result.returncode}\n{result.stderr[-3000:]}"


def raw_aliases() -> dict[str, str]:
    return {alias: str(v) for alias, v in MlflowClient().get_registered_model(NAME).aliases.items()}


def view() -> dict[str, str | None]:
    """The aliases as every reader here sees them (core.registry.alias_target)."""
    client = MlflowClient()
    return {alias: alias_target(client, NAME, alias) for alias in ("champion", "previous_champion", "challenger")}


def tags(version: str) -> dict[str, str]:
    return dict(MlflowClient().get_model_version(NAME, version).tags)


def sound() -> None:
    """What holds after any command: no change pending, champion and previous champion two
    versions, the champion not marked rolled back."""
    model = MlflowClient().get_registered_model(NAME)
    assert INTENT_TAG not in model.tags
    aliases = raw_aliases()
    assert aliases.get("champion") != aliases.get("previous_champion"), aliases
    assert tags(aliases["champion"]).get("gate.outcome") != "rolled_back", aliases


@pytest.fixture
def versions(champion):
    """Version 3 promoted over version 1 (previous_champion), version 2 kept as challenger."""
    client, aliases = MlflowClient(), Aliases.of(compose_config([]))
    for number in ("2", "3"):
        assert str(mlflow.register_model(champion["pyfunc_model_uri"], NAME).version) == number
        client.set_model_version_tag(NAME, number, contracts.VALIDATION_STATUS_TAG, "passed")
    apply_change(
        client,
        NAME,
        decision_change("v2 kept", "2", GateDecision(False, "worse", "1"), {"gate.outcome": "challenger"}, aliases),
    )
    apply_change(
        client,
        NAME,
        decision_change(
            "v3 promoted", "3", GateDecision(True, "better", "1"), {"gate.outcome": "promoted"}, aliases, challenger="2"
        ),
    )
    assert raw_aliases() == {"champion": "3", "previous_champion": "1", "challenger": "2"}
    return aliases


def test_a_change_stopped_by_an_exception_undoes_itself(versions):
    client, before = MlflowClient(), raw_aliases()
    checks = []

    def alive():
        checks.append(raw_aliases())
        if len(checks) == 3:  # before the intent, before the first alias write, before the second
            raise RuntimeError("the pipeline ended")

    change = Change(
        "test",
        tags={"2": {"gate.outcome": "promoted", "gate.reason": "r"}},
        descriptions={"2": "**promoted**"},
        aliases={"previous_champion": "3", "champion": "2"},
    )
    with pytest.raises(RuntimeError, match="the pipeline ended"):
        apply_change(client, NAME, change, alive=alive)
    assert checks[2] == {**before, "previous_champion": "3"}  # the first alias had moved
    assert raw_aliases() == before
    assert tags("2")["gate.outcome"] == "challenger" and "gate.reason" not in tags("2")
    assert client.get_model_version(NAME, "2").description == ""
    assert "stopped while it was made (RuntimeError: the pipeline ended)" in tags("2")[UNDONE_TAG]
    sound()


def test_an_alias_already_naming_its_version_is_not_written_again(versions, monkeypatch):
    writes = []
    real = MlflowClient.set_registered_model_alias
    monkeypatch.setattr(
        MlflowClient, "set_registered_model_alias", lambda self, *args: writes.append(args) or real(self, *args)
    )
    apply_change(MlflowClient(), NAME, Change("again", aliases={"champion": "3", "previous_champion": "1"}))
    assert writes == []


@pytest.mark.parametrize("at", ["1", "2", "clear"])
def test_a_rollback_killed_at_any_write_is_seen_whole_and_undone_by_the_next_command(
    at, versions, project_env, tmp_path, capsys
):
    before = {v: tags(v) for v in ("1", "3")}
    killed(project_env, tmp_path, at, "ops.rollback")
    assert INTENT_TAG in MlflowClient().get_registered_model(NAME).tags
    assert view() == {"champion": "3", "previous_champion": "1", "challenger": "2"}  # readers: as before
    assert recover(MlflowClient(), NAME).startswith(f"{NAME}: undid an interrupted change (ops.rollback by ")
    assert raw_aliases() == {"champion": "3", "previous_champion": "1", "challenger": "2"}
    assert {v: {k: x for k, x in tags(v).items() if k != UNDONE_TAG} for v in ("1", "3")} == before
    sound()
    rollback.main([])  # and a rollback then does what it says
    assert capsys.readouterr().out.strip() == f"{NAME}: champion moved from version 3 back to version 1"
    assert raw_aliases() == {"champion": "1", "previous_champion": "3", "challenger": "2"}
    sound()


@pytest.mark.parametrize("order", [("rollback", "promote"), ("promote", "rollback")])
@pytest.mark.parametrize("at", ["1", "2"])
def test_after_a_killed_promotion_the_next_commands_in_either_order_undo_it_first(
    at, order, versions, project_env, tmp_path, capsys
):
    killed(project_env, tmp_path, at, "ops.promote", "2", "--reason", "a test")
    assert view() == {"champion": "3", "previous_champion": "1", "challenger": "2"}
    commands = {"rollback": lambda: rollback.main([]), "promote": lambda: promote.main(["2", "--reason", "again"])}
    first, second = order
    commands[first]()
    assert "undid an interrupted change (ops.promote by " in capsys.readouterr().err
    sound()
    commands[second]()
    assert "undid" not in capsys.readouterr().err
    sound()
    expected = (
        {"champion": "2", "previous_champion": "1"}
        if order == ("rollback", "promote")
        else {"champion": "3", "previous_champion": "2"}
    )
    assert {k: v for k, v in raw_aliases().items() if k != "challenger"} == expected


def test_a_rollback_refuses_when_both_aliases_name_one_version(versions, capsys):
    MlflowClient().set_registered_model_alias(NAME, "previous_champion", "3")  # torn by hand
    with pytest.raises(SystemExit) as exit_info:
        rollback.main([])
    assert exit_info.value.code == 1
    assert "both name version 3; nothing to roll back to" in capsys.readouterr().err
    assert tags("3")["gate.outcome"] == "promoted"  # the live champion is never tagged rolled_back


@pytest.mark.parametrize("at", ["1", "2"])
def test_a_gate_decision_killed_between_its_alias_writes_is_undone_and_never_torn(at, champion, project_env, tmp_path):
    """The evaluate step itself, killed at the first and at the second alias write of a
    promotion; the next evaluate of the version undoes it, then decides again whole."""
    version = str(mlflow.register_model(champion["pyfunc_model_uri"], NAME).version)
    evaluate = [
        "steps.evaluate",
        "--model-uri",
        f"models:/{NAME}/{version}",
        "--reference-model-uri",
        champion["model_uri"],
        "--holdout-uri",
        champion["holdout_uri"],
    ]
    killed(project_env, tmp_path, at, *evaluate)
    assert view()["champion"] == "1" and view()["previous_champion"] is None
    assert tags(version).get("gate.outcome") == "promoted"  # recorded before any alias moved
    again = subprocess.run(
        [sys.executable, "-m", *evaluate],
        cwd=tmp_path,
        timeout=300,
        capture_output=True,
        text=True,
        env={**project_env, "PYTHONPATH": str(contracts.PROJECT_DIR)},
    )
    assert again.returncode == 0, again.stderr[-3000:]
    assert "undid an interrupted change (evaluate run " in again.stderr
    assert raw_aliases() == {"champion": version, "previous_champion": "1"}
    assert UNDONE_TAG in tags(version) and tags(version)["gate.outcome"] == "promoted"
    sound()


def left_half_made(version: str = "2", by: dict | None = None, lock: str | None = None) -> None:
    """What a process killed between the first and the second alias write of a promotion of
    ``version`` leaves: the version's before-state, the intent, and previous_champion moved.
    ``by``: the process that made it (default: one on this host that has ended); ``lock``: the
    lock all hosts share it was made under (``core.locks.Held.shared``), if any."""
    import json
    import socket

    if by is None:
        ended = subprocess.Popen([sys.executable, "-c", "pass"])
        ended.wait()
        by = {"pid": ended.pid, "host": socket.gethostname(), "started": 0.0}
    client = MlflowClient()
    intent = {
        "what": f"a promotion of version {version}",
        "at": "then",
        "by": by,
        "aliases_before": {"previous_champion": "1", "champion": "3"},
        "aliases_after": {"previous_champion": "3", "champion": version},
        "versions": [version],
        "lock": lock,
    }
    client.set_model_version_tag(NAME, version, BEFORE_TAG, json.dumps({"tags": {"gate.outcome": "challenger"}}))
    client.set_registered_model_tag(NAME, INTENT_TAG, json.dumps(intent))
    client.set_model_version_tag(NAME, version, "gate.outcome", "promoted")
    client.set_registered_model_alias(NAME, "previous_champion", "3")


@pytest.mark.parametrize("maker", ["running here", "on another host"])
def test_a_change_whose_maker_is_running_or_elsewhere_is_left_to_it(maker, versions):
    """A command on a host that does not share the maker's lock must not undo a change the
    maker is still making; it reads the aliases as they were before it."""
    import os
    import socket

    import psutil

    by = (
        {"pid": os.getpid(), "host": socket.gethostname(), "started": psutil.Process().create_time()}
        if maker == "running here"
        else {"pid": 1, "host": "another-host", "started": 0.0}
    )
    left_half_made(by=by)
    said = recover(MlflowClient(), NAME)
    assert "a change is under way (a promotion of version 2" in said and "left to it" in said
    assert INTENT_TAG in MlflowClient().get_registered_model(NAME).tags
    assert view()["previous_champion"] == "1"


@pytest.mark.parametrize("maker", ["running here", "on another host"])
def test_under_a_lock_all_hosts_share_a_change_made_under_it_is_undone_whatever_its_maker(maker, versions):
    """Every change is made under the gate lock: one made under the lock all hosts share, which
    this command now holds, has no maker at work. A change made under another lock (a file
    lock, another lock server) is left to its maker as before."""
    import os
    import socket

    import psutil

    from core.locks import HOST_GATE, Held

    by = (
        {"pid": os.getpid(), "host": socket.gethostname(), "started": psutil.Process().create_time()}
        if maker == "running here"
        else {"pid": 1, "host": "another-host", "started": 0.0}
    )
    shared = "postgresql://db.internal:5432/locks key 42"
    left_half_made(by=by, lock=shared)
    for other in (HOST_GATE, Held("gate", shared="postgresql://elsewhere:5432/locks key 42")):
        assert "left to it" in recover(MlflowClient(), NAME, other)
    said = recover(MlflowClient(), NAME, Held("gate", shared=shared))
    assert "undid an interrupted change (a promotion of version 2" in said
    assert f"its process (pid {by['pid']} on {by['host']}) no longer held the gate lock all hosts share" in said
    assert raw_aliases() == {"champion": "3", "previous_champion": "1", "challenger": "2"}
    assert tags("2")["gate.outcome"] == "challenger" and UNDONE_TAG in tags("2")
    sound()


def test_a_rollback_killed_on_another_host_is_undone_under_the_lock_server(versions, project_env, tmp_path, capsys):
    """ops.rollback on host "b", killed between its alias writes under PIPELINE_LOCK_URL; the
    pipeline on this host undoes it before it reads the champion. With file locks it could not."""
    from core.locks import LOCK_URL_ENV
    from pipeline.main import settle_registry
    from tests.support import postgres

    with postgres.fresh_database() as lock_url:
        if lock_url is None:
            pytest.skip(postgres.unavailable() or f"PostgreSQL at {postgres.ADDRESS} refused a connection")
        killed(project_env, tmp_path, "2", "ops.rollback", KILLED_HOST="b", **{LOCK_URL_ENV: lock_url})
        assert view() == {"champion": "3", "previous_champion": "1", "challenger": "2"}
        settle_registry("pipeline", NAME)  # file locks: left to it
        assert "undid" not in capsys.readouterr().err and INTENT_TAG in MlflowClient().get_registered_model(NAME).tags
        with pytest.MonkeyPatch.context() as patch:
            patch.setenv(LOCK_URL_ENV, lock_url)
            settle_registry("pipeline", NAME)
    err = capsys.readouterr().err
    assert "undid an interrupted change (ops.rollback by " in err and "on b) no longer held the gate lock" in err
    assert raw_aliases() == {"champion": "3", "previous_champion": "1", "challenger": "2"}
    sound()


def test_a_large_record_fits_a_postgresql_registry(versions):
    """What a change writes over can be long (a gate reason, a description); it is kept on the
    version, so the registered model's tag (5,000 characters in MLflow's SQL schema) stays small."""
    client = MlflowClient()
    client.set_model_version_tag(NAME, "2", "gate.reason", "r" * 4000)
    client.update_model_version(NAME, "2", description="d" * 20000)
    seen = []
    real = MlflowClient.set_registered_model_tag
    with pytest.MonkeyPatch.context() as patch:
        patch.setattr(
            MlflowClient,
            "set_registered_model_tag",
            lambda self, n, key, value: seen.append(len(value)) or real(self, n, key, value),
        )
        apply_change(
            client,
            NAME,
            Change(
                "a long one",
                tags={"2": {"gate.reason": "s" * 4000}},
                descriptions={"2": "e" * 20000},
                aliases={"challenger": None},
            ),
        )
    assert seen and max(seen) < 5000
    assert BEFORE_TAG not in tags("2") and tags("2")["gate.reason"] == "s" * 4000


@pytest.mark.parametrize("command", ["serve", "pipeline"])
def test_the_scoring_server_and_the_pipeline_undo_a_half_made_change_before_they_read_the_champion(
    command, versions, capsys
):
    from pipeline.main import settle_registry
    from serving.server import settle_alias

    left_half_made()
    assert view()["previous_champion"] == "1" and raw_aliases()["previous_champion"] == "3"
    if command == "serve":
        settle_alias(f"models:/{NAME}@champion")
    else:
        settle_registry("pipeline", NAME)
    assert "undid an interrupted change (a promotion of version 2, begun then)" in capsys.readouterr().err
    assert raw_aliases() == {"champion": "3", "previous_champion": "1", "challenger": "2"}
    assert tags("2")["gate.outcome"] == "challenger"
    sound()


def test_a_server_leaves_a_change_alone_while_its_decision_holds_the_gate_lock(versions, capsys):
    from core.locks import gate_lock
    from serving.server import settle_alias

    left_half_made()
    with gate_lock(0):  # a live decision
        settle_alias(f"models:/{NAME}@champion")
    assert INTENT_TAG in MlflowClient().get_registered_model(NAME).tags and capsys.readouterr().err == ""
    assert view()["previous_champion"] == "1"  # and reads the aliases as before it
