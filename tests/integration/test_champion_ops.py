"""Rollback, its undo, and promotion by hand against a real registry: the aliases and
tags they leave, the versions they refuse (changing nothing), and the gate lock."""

from __future__ import annotations

import mlflow
import pytest
from mlflow import MlflowClient

from core import contracts
from core.config import compose_config
from core.gate import Aliases, GateDecision
from core.locks import file_lock, lock_path
from core.registry import apply_change, decision_change
from ops import promote, rollback

NAME = "iris-classifier"


def state() -> dict:
    """Every alias and every version's tags: what an undo must give back exactly."""
    client = MlflowClient()
    versions = client.search_model_versions(f"name = '{NAME}'")
    return {
        "aliases": {alias: str(v) for alias, v in client.get_registered_model(NAME).aliases.items()},
        "tags": {str(v.version): dict(client.get_model_version(NAME, str(v.version)).tags) for v in versions},
    }


@pytest.fixture
def versions(champion):
    """Version 3 promoted by the gate over version 1 (now previous_champion), version 2 kept
    as challenger, version 4 registered but not validated yet (``pending``)."""
    client, aliases = MlflowClient(), Aliases.of(compose_config([]))
    for number in ("2", "3", "4"):
        assert str(mlflow.register_model(champion["pyfunc_model_uri"], NAME).version) == number
        status = "pending" if number == "4" else "passed"
        client.set_model_version_tag(NAME, number, contracts.VALIDATION_STATUS_TAG, status)
    apply_change(
        client,
        NAME,
        decision_change(
            "version 2 kept",
            "2",
            GateDecision(False, "accuracy below the champion's", "1"),
            {"gate.outcome": "challenger", "gate.reason": "accuracy below the champion's"},
            aliases,
        ),
    )
    apply_change(
        client,
        NAME,
        decision_change(
            "version 3 promoted",
            "3",
            GateDecision(True, "no gated metric is worse", "1"),
            {"gate.outcome": "promoted", "gate.reason": "no gated metric is worse"},
            aliases,
            challenger="2",
        ),
    )
    assert state()["aliases"] == {"champion": "3", "previous_champion": "1", "challenger": "2"}


def without_time(tags: dict) -> dict:
    return {key: value for key, value in tags.items() if key not in (rollback.AT_TAG, rollback.REASON_TAG)}


def test_a_second_rollback_restores_the_first_state_exactly(versions, capsys):
    before = state()
    rollback.main([])
    assert capsys.readouterr().out.strip() == f"{NAME}: champion moved from version 3 back to version 1"
    rolled = state()
    assert rolled["aliases"] == {"champion": "1", "previous_champion": "3", "challenger": "2"}
    assert rolled["tags"]["1"] == before["tags"]["1"]  # the version restored is not touched
    demoted = rolled["tags"]["3"]
    assert demoted["gate.outcome"] == "rolled_back" and demoted[rollback.TO_VERSION_TAG] == "1"
    assert demoted["gate.reason"].startswith("rolled back to version 1 at ")
    assert demoted["rollback.previous.gate.outcome"] == "promoted"
    assert demoted["rollback.previous.gate.reason"] == "no gated metric is worse"
    assert demoted[rollback.BY_TAG] == rollback.operator_name()

    rollback.main([])  # the rollback of a rollback undoes it
    assert capsys.readouterr().out.strip() == (
        f"{NAME}: rollback undone: champion is version 3 again, version 1 previous"
    )
    assert state() == before

    rollback.main([])  # and the next one rolls back again, recorded as the first was
    again = state()
    assert again["aliases"] == rolled["aliases"]
    assert {v: without_time(tags) for v, tags in again["tags"].items()} == {
        v: without_time(tags) for v, tags in rolled["tags"].items()
    }


@pytest.mark.parametrize(
    ("record", "message"),
    [
        ({}, "version 1 (previous_champion) was rolled back without a record of what to undo"),
        (
            {rollback.TO_VERSION_TAG: "2"},
            "version 1 (previous_champion) was rolled back in favour of version 2, not of the champion (version 3)",
        ),
    ],
)
def test_rollback_never_makes_a_version_rolled_back_for_another_champion(versions, capsys, record, message):
    """Only the undo of the rollback that demoted it brings a rolled-back version back by rollback."""
    client = MlflowClient()
    for key, value in {"gate.outcome": "rolled_back", **record}.items():
        client.set_model_version_tag(NAME, "1", key, value)
    before = state()
    with pytest.raises(SystemExit) as exit_info:
        rollback.main([])
    assert exit_info.value.code == 1
    err = capsys.readouterr().err.strip()
    assert message in err and "python -m ops.promote 1 --reason" in err and "\n" not in err
    assert state() == before


def test_rollback_refuses_a_previous_champion_that_is_broken(versions, capsys):
    client = MlflowClient()
    client.set_model_version_tag(NAME, "1", contracts.VALIDATION_STATUS_TAG, "broken")
    client.set_model_version_tag(NAME, "1", "validation.broken_reason", "could not be loaded: Refusing to load")
    before = state()
    with pytest.raises(SystemExit) as exit_info:
        rollback.main([])
    assert exit_info.value.code == 1
    err = capsys.readouterr().err.strip()
    assert err == (
        f"rollback: {NAME} version 1 (previous_champion) is validation_status=broken "
        "(could not be loaded: Refusing to load); a rollback makes only a validated version champion"
    )
    assert state() == before


def test_promote_brings_back_a_rolled_back_version(versions, capsys):
    rollback.main([])
    capsys.readouterr()
    promote.main(["3", "--reason", "the drift alert was a false alarm"])
    assert capsys.readouterr().out.strip() == f"{NAME}: champion moved from version 1 to version 3"
    promoted = state()
    assert promoted["aliases"] == {"champion": "3", "previous_champion": "1", "challenger": "2"}
    tags = promoted["tags"]["3"]
    assert tags["gate.outcome"] == "promoted" and tags["gate.champion_version"] == "1"
    assert tags["gate.reason"].endswith(", past the gate: the drift alert was a false alarm")
    assert tags["promote.reason"] == "the drift alert was a false alarm"
    assert tags["promote.by"] == rollback.operator_name() and tags["promote.at"]
    assert not [key for key in tags if key.startswith(rollback.RECORD_PREFIX)]  # no longer rolled back

    # From here it is a champion like any other: rolled back, and that undone, exactly.
    rollback.main([])
    assert state()["aliases"]["champion"] == "1"
    rollback.main([])
    assert state() == promoted


def test_promote_moves_the_aliases_as_the_gate_does(versions, capsys):
    promote.main(["2", "--reason", "better on the new labels"])  # the challenger
    assert state()["aliases"] == {"champion": "2", "previous_champion": "3"}
    capsys.readouterr()
    before = state()
    promote.main(["--reason", "again", "2"])
    assert capsys.readouterr().out.strip() == f"{NAME}: version 2 already is the champion; nothing changed"
    assert state() == before


@pytest.mark.parametrize(
    ("argv", "status", "message"),
    [
        (["9", "--reason", "x"], 1, f"registered model '{NAME}' has no version 9"),
        (["4", "--reason", "x"], 1, f"{NAME} version 4 did not pass validation (validation_status=pending)"),
        (["2", "--reason", "x", "registry.model_name=other"], 1, "registered model 'other' has no version 2"),
        (["2"], 2, "--reason is required: say why version 2 is promoted past the gate"),
        (["2", "--reason", "  "], 2, "--reason is required"),
        (["two", "--reason", "x"], 2, "VERSION 'two' is not a registered version number"),
        (["2", "--reason", "x", "registry.model_nam=x"], 2, "invalid Hydra override"),
    ],
)
def test_promote_refuses_in_one_line_and_changes_nothing(versions, capsys, argv, status, message):
    before = state()
    with pytest.raises(SystemExit) as exit_info:
        promote.main(argv)
    assert exit_info.value.code == status
    err = capsys.readouterr().err.strip()
    assert message in err and "\n" not in err
    assert state() == before


def test_promote_refuses_a_version_that_failed_validation(versions, capsys):
    MlflowClient().set_model_version_tag(NAME, "2", contracts.VALIDATION_STATUS_TAG, "failed")
    before = state()
    with pytest.raises(SystemExit) as exit_info:
        promote.main(["2", "--reason", "x"])
    assert exit_info.value.code == 1
    assert "version 2 did not pass validation (validation_status=failed)" in capsys.readouterr().err
    assert state() == before


def test_promote_and_rollback_wait_for_the_gate_lock_evaluate_holds(versions, capsys):
    before = state()
    with file_lock(lock_path(contracts.tracking_uri(), "gate"), wait=0):  # as steps/evaluate.py takes it
        for command, argv in (
            (promote.main, ["2", "--reason", "x", "--wait", "0.3"]),
            (rollback.main, ["--wait", "0.3"]),
        ):
            with pytest.raises(SystemExit) as exit_info:
                command(argv)
            assert exit_info.value.code == 75
            assert "another pipeline run holds" in capsys.readouterr().err
    assert state() == before
