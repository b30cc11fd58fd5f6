"""Roll the champion alias back to the previous champion, or undo the last rollback.

    python -m ops.rollback                     # registered model from the config (iris-classifier)
    python -m ops.rollback registry.model_name=other-model

A rollback swaps the two aliases: ``champion`` goes to the version holding
``previous_champion``, and ``previous_champion`` to the version rolled back
from. That version is tagged ``gate.outcome=rolled_back``: ``evaluate`` never
promotes it again on its own, however often a pipeline evaluates it; only
``ops.promote`` does, when an operator asks.

The rollback records on the demoted version what it changed, so that it can be
undone exactly: ``rollback.to_version`` (the version made champion),
``rollback.by``, ``rollback.at``, and the values ``gate.outcome`` and
``gate.reason`` had before, as ``rollback.previous.gate.outcome`` and
``rollback.previous.gate.reason`` (absent when the tag was).

A rollback of a rollback undoes it. When the previous champion is the version
a rollback demoted in favour of the current champion (the aliases are as that
rollback left them), ``ops.rollback`` swaps the aliases back, restores the two
``gate.*`` tags it had changed and removes its record: aliases and tags are as
before the first rollback. Only one step back is kept (there is one
``previous_champion`` alias), so a rollback never reaches further.

The tags and both aliases change as one unit (``core.registry.apply_change``): a
rollback killed half way is undone by the next command that takes the gate lock.

Under the gate lock (``core.locks``), as ``evaluate``, waiting at most
``--wait`` seconds; a change another command left half made is undone first, and
said so. Exit status: 0 done; 1, changing nothing, when there is no previous
champion, it names the champion's own version, it is not validated
(``validation_status`` other than ``passed``, e.g. ``broken``), or it was rolled back
in favour of another version than the champion (``ops.promote`` can promote it
explicitly); 2 bad arguments; 69 the lock server (``PIPELINE_LOCK_URL``) cannot be
reached; 75 the gate lock stayed busy; 77 the tracking server refused the account
(``core.access``: one line naming the permission it lacks).
"""

from __future__ import annotations

import getpass
import logging
import sys
import time
from collections.abc import Sequence
from dataclasses import dataclass

from core import contracts
from core.access import explained
from core.gate import ROLLED_BACK
from core.locks import GATE_LOCK_WAIT, HOST_GATE, Held, LockBusy, LockUnavailable, gate_lock
from core.registry import Change, RegistryChangeError, alias_version, apply_change, recover
from core.tracking import EXIT_UNAVAILABLE
from ops.retrain import EXIT_LOCKED
from pipeline.processes.step import parse_step_args, step_parser

log = logging.getLogger(__name__)

OUTCOME_TAG = "gate.outcome"
REASON_TAG = "gate.reason"
# What a rollback changes on the version it demotes, and how it records what they were.
CHANGED_TAGS = (OUTCOME_TAG, REASON_TAG)
RECORD_PREFIX = "rollback."
TO_VERSION_TAG = f"{RECORD_PREFIX}to_version"
BY_TAG = f"{RECORD_PREFIX}by"
AT_TAG = f"{RECORD_PREFIX}at"
PREVIOUS_PREFIX = f"{RECORD_PREFIX}previous."


class RollbackError(RuntimeError):
    pass


@dataclass(frozen=True)
class Rollback:
    """What a rollback did: the champion's version before and after, and whether it undid one."""

    old: str
    new: str
    undone: bool = False


def operator_name() -> str:
    """Who runs the command, for the record (the login name; ``unknown`` without one)."""
    try:
        return getpass.getuser()
    except (KeyError, OSError):  # no login name and no passwd entry (some containers)
        return "unknown"


def now() -> str:
    return time.strftime("%Y-%m-%dT%H:%M:%S%z")


def rollback(client, name: str, champion_alias: str, previous_alias: str, held: Held = HOST_GATE) -> Rollback:
    """Swap the two aliases of ``name``, or undo the rollback that left them so.

    The caller holds the gate lock and has undone any half-made change
    (``core.registry.recover``). Everything is checked before anything is written; the
    tags and both aliases then change as one unit, tags first.
    """
    champion = alias_version(client, name, champion_alias)
    previous = alias_version(client, name, previous_alias)
    if champion is None or previous is None:
        missing = champion_alias if champion is None else previous_alias
        raise RollbackError(f"Registered model {name!r} has no {missing!r} alias; nothing to roll back")
    old, new = str(champion.version), str(previous.version)
    if old == new:
        raise RollbackError(
            f"{champion_alias} and {previous_alias} of {name!r} both name version {old}; nothing to roll back to"
        )
    tags = previous.tags
    status = tags.get(contracts.VALIDATION_STATUS_TAG)
    if status != "passed":  # e.g. broken: the gate found it could not be loaded
        raise RollbackError(
            f"{name} version {new} ({previous_alias}) is {contracts.VALIDATION_STATUS_TAG}={status}"
            + (f" ({tags[contracts.BROKEN_REASON_TAG][:300]})" if contracts.BROKEN_REASON_TAG in tags else "")
            + "; a rollback makes only a validated version champion"
        )
    undo = tags.get(OUTCOME_TAG) == ROLLED_BACK and tags.get(TO_VERSION_TAG) == old
    if tags.get(OUTCOME_TAG) == ROLLED_BACK and not undo:
        to = tags.get(TO_VERSION_TAG)
        raise RollbackError(
            f"{name} version {new} ({previous_alias}) was rolled back "
            + (
                f"in favour of version {to}, not of the champion (version {old})"
                if to
                else "without a record of what to undo"
            )
            + f"; a rollback does not make it champion again: python -m ops.promote {new} --reason '...' does"
        )
    what = f"ops.rollback by {operator_name()}: champion from version {old} to version {new}"
    change = Change(
        f"{what} (undoing a rollback)" if undo else what,
        tags={new: restored(tags)} if undo else {old: demoted(champion.tags, new)},
        aliases={champion_alias: new, previous_alias: old},
    )
    apply_change(client, name, change, held=held)
    return Rollback(old, new, undo)


def demoted(tags: dict[str, str], to_version: str) -> dict[str, str | None]:
    """The tag changes that mark a version (whose tags are ``tags``) rolled back in favour of
    ``to_version``, recording what the changed tags were (None: delete)."""
    when = now()
    changes: dict[str, str | None] = {PREVIOUS_PREFIX + key: tags.get(key) for key in CHANGED_TAGS}
    return changes | {
        TO_VERSION_TAG: to_version,
        BY_TAG: operator_name(),
        AT_TAG: when,
        OUTCOME_TAG: ROLLED_BACK,
        REASON_TAG: f"rolled back to version {to_version} at {when}",
    }


def restored(tags: dict[str, str]) -> dict[str, str | None]:
    """The tag changes that give a rolled-back version (whose tags are ``tags``) back the
    tags the rollback changed, and remove the rollback's record."""
    return record_removed(tags) | {key: tags.get(PREVIOUS_PREFIX + key) for key in CHANGED_TAGS}


def record_removed(tags: dict[str, str]) -> dict[str, None]:
    """The tag changes that remove a rollback's record (``rollback.*`` tags) from a version."""
    return {key: None for key in tags if key.startswith(RECORD_PREFIX)}


def main(argv: Sequence[str] | None = None) -> None:
    from mlflow import MlflowClient

    parser = step_parser(__doc__)
    parser.add_argument(
        "--wait",
        type=float,
        default=GATE_LOCK_WAIT,
        help=f"seconds to wait for the gate lock (default {GATE_LOCK_WAIT:g})",
    )
    args, cfg = parse_step_args(parser, argv)
    contracts.configure_logging()
    contracts.configure_tracking()
    name = cfg.registry.model_name
    client = MlflowClient()
    try:
        needs = f"MANAGE on registered model {name!r}"
        with explained("rollback", model=name, after="nothing changed", needs=needs), gate_lock(args.wait) as held:
            undone = recover(client, name, held)
            if undone:
                print(f"rollback: {undone}", file=sys.stderr)
            done = rollback(client, name, cfg.registry.champion_alias, cfg.gate.previous_champion_alias, held)
    except (RollbackError, RegistryChangeError) as err:
        print(f"rollback: {err}", file=sys.stderr)
        sys.exit(1)
    except LockBusy as err:
        print(f"rollback: {err}; nothing changed", file=sys.stderr)
        sys.exit(EXIT_LOCKED)
    except LockUnavailable as err:
        print(f"rollback: {err}; nothing changed", file=sys.stderr)
        sys.exit(EXIT_UNAVAILABLE)
    if done.undone:
        print(f"{name}: rollback undone: champion is version {done.new} again, version {done.old} previous")
    else:
        print(f"{name}: champion moved from version {done.old} back to version {done.new}")


if __name__ == "__main__":
    main()
