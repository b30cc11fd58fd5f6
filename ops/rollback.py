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

Under the gate lock (``pipeline.locks``), as ``evaluate``, waiting at most
``--wait`` seconds. Exit status: 0 done; 1, changing nothing, when there is no
previous champion, it is not validated (``validation_status`` other than ``passed``,
e.g. ``broken``), or it was rolled back in favour of another version than the
champion (``ops.promote`` can promote it explicitly); 2 bad arguments; 75 the
gate lock stayed busy.
"""

from __future__ import annotations

import getpass
import logging
import sys
import time
from collections.abc import Sequence
from dataclasses import dataclass

from core import contracts
from core.gate import ROLLED_BACK
from core.registry import alias_version
from ops.retrain import EXIT_LOCKED
from pipeline.locks import LockBusy, file_lock, lock_path
from pipeline.step import parse_step_args, step_parser

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
# Seconds to wait for the gate lock: a gate decision holds it for a second or two.
GATE_LOCK_WAIT = 60.0


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


def rollback(client, name: str, champion_alias: str, previous_alias: str) -> Rollback:
    """Swap the two aliases of ``name``, or undo the rollback that left them so.

    The caller holds the gate lock. Everything is checked before anything is
    written; tags are written before aliases, so an alias never points at a
    version whose tags still say otherwise.
    """
    champion = alias_version(client, name, champion_alias)
    previous = alias_version(client, name, previous_alias)
    if champion is None or previous is None:
        missing = champion_alias if champion is None else previous_alias
        raise RollbackError(f"Registered model {name!r} has no {missing!r} alias; nothing to roll back")
    old, new = str(champion.version), str(previous.version)
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
            + (f"in favour of version {to}, not of the champion (version {old})" if to
               else "without a record of what to undo")
            + f"; a rollback does not make it champion again: python -m ops.promote {new} --reason '...' does"
        )
    if undo:
        restore(client, name, new, tags)
    else:
        demote(client, name, old, champion.tags, new)
    client.set_registered_model_alias(name, champion_alias, new)
    client.set_registered_model_alias(name, previous_alias, old)
    return Rollback(old, new, undo)


def demote(client, name: str, version: str, tags: dict[str, str], to_version: str) -> None:
    """Tag ``version`` rolled back in favour of ``to_version``, recording what the tags were."""
    for key in CHANGED_TAGS:
        if key in tags:
            client.set_model_version_tag(name, version, PREVIOUS_PREFIX + key, tags[key])
        elif PREVIOUS_PREFIX + key in tags:  # left by an older record: absent now means absent before
            client.delete_model_version_tag(name, version, PREVIOUS_PREFIX + key)
    when = now()
    client.set_model_version_tag(name, version, TO_VERSION_TAG, to_version)
    client.set_model_version_tag(name, version, BY_TAG, operator_name())
    client.set_model_version_tag(name, version, AT_TAG, when)
    client.set_model_version_tag(name, version, OUTCOME_TAG, ROLLED_BACK)
    client.set_model_version_tag(name, version, REASON_TAG, f"rolled back to version {to_version} at {when}")


def restore(client, name: str, version: str, tags: dict[str, str]) -> None:
    """Give ``version`` back the tags a rollback changed, and remove the rollback's record."""
    for key in CHANGED_TAGS:
        if PREVIOUS_PREFIX + key in tags:
            client.set_model_version_tag(name, version, key, tags[PREVIOUS_PREFIX + key])
        elif key in tags:
            client.delete_model_version_tag(name, version, key)
    clear_record(client, name, version, tags)


def clear_record(client, name: str, version: str, tags: dict[str, str]) -> None:
    """Remove a rollback's record (``rollback.*`` tags) from ``version``, whose tags are ``tags``."""
    for key in tags:
        if key.startswith(RECORD_PREFIX):
            client.delete_model_version_tag(name, version, key)


def gate_lock(wait: float):
    """The lock ``evaluate`` holds while it reads the champion and moves aliases."""
    return file_lock(lock_path(contracts.tracking_uri(), "gate"), wait=wait)


def main(argv: Sequence[str] | None = None) -> None:
    from mlflow import MlflowClient

    parser = step_parser(__doc__)
    parser.add_argument("--wait", type=float, default=GATE_LOCK_WAIT,
                        help=f"seconds to wait for the gate lock (default {GATE_LOCK_WAIT:g})")
    args, cfg = parse_step_args(parser, argv)
    contracts.configure_logging()
    contracts.configure_tracking()
    name = cfg.registry.model_name
    try:
        with gate_lock(args.wait):
            done = rollback(MlflowClient(), name, cfg.registry.champion_alias, cfg.gate.previous_champion_alias)
    except RollbackError as err:
        print(f"rollback: {err}", file=sys.stderr)
        sys.exit(1)
    except LockBusy as err:
        print(f"rollback: {err}; nothing changed", file=sys.stderr)
        sys.exit(EXIT_LOCKED)
    if done.undone:
        print(f"{name}: rollback undone: champion is version {done.new} again, version {done.old} previous")
    else:
        print(f"{name}: champion moved from version {done.old} back to version {done.new}")


if __name__ == "__main__":
    main()
