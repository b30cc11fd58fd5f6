"""The Model Registry: version URIs, reading versions and aliases (failing closed) and moving them.

A change of several registry writes (a gate decision, a rollback, a promotion) is one
unit (:func:`apply_change`): what it writes over is kept on each version and its intent
recorded as tag :data:`INTENT_TAG` of the registered model; then tags, descriptions and
aliases are written and the intent removed. Killed in between, it is undone by the next
command under the gate lock (:func:`recover`); until then every reader here
(:func:`alias_target`) sees the aliases as they were before it.
"""

from __future__ import annotations

import json
import logging
import os
import socket
import time
from collections.abc import Callable, Mapping
from dataclasses import dataclass, field

from core.errors import StepError

log = logging.getLogger(__name__)

# Registered-model tag holding a change under way (JSON; see apply_change).
INTENT_TAG = "registry.change_in_progress"
# Version tag: a change that touched the version was interrupted and undone (when, what, by whom).
UNDONE_TAG = "registry.undone_change"
# Version tag: what a change under way will write over on the version (its tags and description
# before), kept on the version (whose tags take 100,000 characters; a registered model's, 5,000).
BEFORE_TAG = "registry.before_change"


@dataclass(frozen=True)
class Aliases:
    """The alias names the gate moves (``registry.champion_alias`` and ``gate.*_alias``)."""

    champion: str
    challenger: str
    previous_champion: str

    @classmethod
    def of(cls, cfg) -> Aliases:
        return cls(cfg.registry.champion_alias, cfg.gate.challenger_alias, cfg.gate.previous_champion_alias)


def parse_registered_uri(model_uri: str) -> tuple[str, str]:
    """``models:/<name>/<version>`` -> (name, version); anything else is a ``ValueError``."""
    prefix = "models:/"
    body = model_uri[len(prefix) :] if model_uri.startswith(prefix) else ""
    name, _, model_version = body.rpartition("/")
    if not name or not model_version.isdigit():
        raise ValueError(f"{model_uri!r} is not a registered version URI of the form models:/<name>/<version>")
    return name, model_version


def alias_version(client, name: str, alias: str):
    """The model version holding ``alias`` on registered model ``name``; None only when
    the registry says so (no such model, or the model has no such alias).

    Fails closed: any other error reading the registry (a timeout, a server error
    after retries) is raised, so no caller mistakes "could not read the champion"
    for "there is no champion" and promotes past the gate.
    """
    version = alias_target(client, name, alias)
    return None if version is None else client.get_model_version(name, version)


def alias_target(client, name: str, alias: str) -> str | None:
    """The version number ``alias`` points at on registered model ``name`` (one registry
    read); None only when the registry says there is no such model or alias. Any other
    error is raised (fail closed), as in :func:`alias_version`."""
    return alias_read(client, name, alias)[0]


def alias_read(client, name: str, alias: str) -> tuple[str | None, bool]:
    """(:func:`alias_target`, whether a change of ``name`` is under way or was left half
    made), from one registry read: a reader that sees one pending looks again soon."""
    model = _unless_missing(lambda: client.get_registered_model(name))
    if model is None:
        return None, False
    intent = pending_change(model)
    before = intent.get("aliases_before", {})
    version = before[alias] if alias in before else model.aliases.get(alias)
    return (None if version is None else str(version)), bool(intent)


def pending_change(model) -> dict:
    """The change under way (or interrupted) recorded on registered model ``model``; {} if none.
    A record that cannot be read is an error naming the tag: no reader guesses the aliases."""
    raw = (model.tags or {}).get(INTENT_TAG)
    if not raw:
        return {}
    try:
        intent = json.loads(raw)
        if not isinstance(intent, dict) or not isinstance(intent.get("aliases_before", {}), dict):
            raise ValueError("not an object with aliases_before")
    except ValueError as err:
        raise RegistryChangeError(
            f"registered model {model.name!r} has an unreadable tag {INTENT_TAG} ({err}); "
            "inspect it, restore the aliases by hand and delete the tag"
        ) from None
    return intent


def find_version(client, name: str, model_version: str):
    """Version ``model_version`` of registered model ``name``; None only when the registry
    says there is no such version (or model). Any other error is raised (fail closed)."""
    return _unless_missing(lambda: client.get_model_version(name, model_version))


def _unless_missing(read):
    """``read()``, or None when the registry answers that the thing read does not exist."""
    from mlflow.exceptions import MlflowException
    from mlflow.protos.databricks_pb2 import RESOURCE_DOES_NOT_EXIST, ErrorCode

    try:
        return read()
    except MlflowException as err:
        if err.error_code == ErrorCode.Name(RESOURCE_DOES_NOT_EXIST):
            return None
        raise


class RegistryChangeError(StepError):
    """A change of the registry could not be made or undone as a unit (a ``StepError``: one line)."""


@dataclass
class Change:
    """Registry writes made as one unit by :func:`apply_change`, in this order: ``tags`` on
    versions (version -> tag -> value, None to delete it), ``descriptions`` of versions,
    then ``aliases`` (alias -> version, None to delete it), in the order given."""

    what: str  # for people: what the change does, e.g. "evaluate run 1f2e: version 3 promoted"
    tags: dict[str, dict[str, str | None]] = field(default_factory=dict)
    descriptions: dict[str, str] = field(default_factory=dict)
    aliases: dict[str, str | None] = field(default_factory=dict)


def apply_change(
    client, name: str, change: Change, alive: Callable[[], None] | None = None, held=None
) -> dict[str, str | None]:
    """Make ``change`` on ``name`` as one unit (the caller holds the gate lock ``held``, a
    ``core.locks.Held``, and has called :func:`recover`); return the changed aliases as they were
    before. ``alive()`` and ``held.check()``, called before the intent and each alias write, raise
    to stop: what was written is undone (else by the next :func:`recover`)."""
    checks = [check for check in (alive, held and held.check) if check]
    model = client.get_registered_model(name)
    if pending_change(model):
        raise RegistryChangeError(f"registered model {name!r} has a change in progress; recover it first")
    current = {alias: str(version) for alias, version in model.aliases.items() if version is not None}
    aliases_before = {alias: current.get(alias) for alias in change.aliases}
    versions = sorted({*change.tags, *change.descriptions})
    before = {}
    for version in versions:
        found = client.get_model_version(name, version)
        before[version] = {"tags": {key: found.tags.get(key) for key in change.tags.get(version, {})}}
        if version in change.descriptions:
            before[version]["description"] = found.description or ""
    intent = {
        "what": change.what[:500],
        "at": _now(),
        "by": _who(),
        "lock": held.shared if held else None,  # a lock every host shares: recover() knows its maker is done
        "aliases_before": aliases_before,
        "aliases_after": dict(change.aliases),
        "versions": versions,
    }
    for check in checks:
        check()
    for version in versions:  # the before-state first: an intent always finds it
        client.set_model_version_tag(name, version, BEFORE_TAG, json.dumps(before[version], sort_keys=True))
    client.set_registered_model_tag(name, INTENT_TAG, json.dumps(intent, sort_keys=True))
    try:
        for version, tags in change.tags.items():
            _write_tags(client, name, version, tags)
        for version, description in change.descriptions.items():
            client.update_model_version(name, version, description=description)
        for alias, version in change.aliases.items():
            if aliases_before[alias] == version:
                continue
            for check in checks:
                check()
            _write_alias(client, name, alias, version)
        client.delete_registered_model_tag(name, INTENT_TAG)
    except BaseException as err:
        try:
            _undo(client, name, intent, f"stopped while it was made ({type(err).__name__}: {err})"[:500])
        except Exception as undo_err:  # noqa: BLE001 - the next recover() undoes it
            log.error("could not undo the interrupted change of %s (%s)", name, undo_err)
            err.add_note(
                "the change is left half made: undoing it failed too; the next command under the gate lock does"
            )
        else:
            err.add_note("the change was undone: the registry is as before it")
        raise
    for version in versions:
        _unless_missing(lambda version=version: client.delete_model_version_tag(name, version, BEFORE_TAG))
    return aliases_before


def recover(client, name: str, held=None) -> str | None:
    """Undo a change of registered model ``name`` that a process left half made (its intent
    still recorded): tags, descriptions and aliases as they were before it. Returns one line
    saying what was undone, or why it was left alone, or None when nothing was pending.

    The caller holds the gate lock ``held`` (``core.locks.Held``). A change made under that same
    lock, when every host shares it, has no maker at work, whatever its host. Any other
    change whose process runs on this host, or ran on another (whose processes cannot be
    seen), is left alone: its maker may be at work under a lock this host does not share."""
    model = _unless_missing(lambda: client.get_registered_model(name))
    intent = pending_change(model) if model is not None else {}
    if not intent:
        return None
    by = intent.get("by", {})
    maker = f"pid {by.get('pid', '?')} on {by.get('host', '?')}"
    shared = held is not None and held.shared is not None and intent.get("lock") == held.shared
    if not shared and (by.get("host") != socket.gethostname() or _running(by)):
        return (
            f"{name}: a change is under way ({intent.get('what', 'unknown')}, begun {intent.get('at', '?')}, "
            f"by {maker}, which is running or on another host); left to it, read as before it"
        )
    why = f"its process ({maker}) " + ("no longer held the gate lock all hosts share" if shared else "ended")
    why += " before it was complete"
    _undo(client, name, intent, why)
    return (
        f"{name}: undid an interrupted change ({intent.get('what', 'unknown')}, begun {intent.get('at', '?')}): "
        f"{why}; aliases as before it: {_describe(intent.get('aliases_before', {}))}"
    )


def _undo(client, name: str, intent: Mapping, why: str) -> None:
    note = f"{_now()}: undone, {why}: {intent.get('what', '')}"[:5000]
    for version in intent.get("versions", []):
        found = _unless_missing(lambda version=version: client.get_model_version(name, version))
        if found is None:  # deleted since: nothing to give back
            continue
        saved = found.tags.get(BEFORE_TAG)
        before = json.loads(saved) if saved else {}
        _write_tags(client, name, version, before.get("tags", {}))
        if "description" in before:
            client.update_model_version(name, version, description=before["description"])
        client.set_model_version_tag(name, version, UNDONE_TAG, note)
        _unless_missing(lambda version=version: client.delete_model_version_tag(name, version, BEFORE_TAG))
    for alias, version in intent.get("aliases_before", {}).items():
        _write_alias(client, name, alias, version)
    client.delete_registered_model_tag(name, INTENT_TAG)


def _write_tags(client, name: str, version: str, tags: Mapping[str, str | None]) -> None:
    for key, value in tags.items():
        if value is None:
            _unless_missing(lambda key=key: client.delete_model_version_tag(name, version, key))
        else:
            client.set_model_version_tag(name, version, key, value)


def _write_alias(client, name: str, alias: str, version: str | None) -> None:
    if version is None:
        _unless_missing(lambda: client.delete_registered_model_alias(name, alias))
    else:
        client.set_registered_model_alias(name, alias, version)


def _describe(aliases: Mapping[str, str | None]) -> str:
    return ", ".join(f"{alias}={'none' if v is None else f'version {v}'}" for alias, v in aliases.items()) or "none"


def _now() -> str:
    return time.strftime("%Y-%m-%dT%H:%M:%S%z")


def _who() -> dict:
    import psutil

    return {"pid": os.getpid(), "host": socket.gethostname(), "started": psutil.Process().create_time()}


def _running(by: Mapping) -> bool:
    """Whether the process ``by`` names (pid and start time, on this host) is running."""
    import psutil

    try:
        process = psutil.Process(int(by.get("pid", -1)))
        return abs(process.create_time() - float(by.get("started", 0))) < 2.0  # a stepped clock moves it
    except (psutil.NoSuchProcess, ValueError, TypeError):
        return False


def decision_change(
    what: str,
    model_version: str,
    decision,
    tags: dict[str, str],
    aliases: Aliases,
    description: str | None = None,
    challenger: str | None = None,
) -> Change:
    """The :class:`Change` that records a gate decision on version ``model_version``: its
    ``tags`` and ``description``, then the aliases. Promoted: the old champion (unless
    broken) to ``previous_champion``, the version to ``champion``, and ``challenger`` off it
    if ``challenger`` (the alias's current version) names it. Kept as challenger: the
    ``challenger`` alias to it. Rolled back: no alias."""
    change = Change(
        what,
        tags={model_version: dict(tags)},
        descriptions={model_version: description} if description is not None else {},
    )
    if not decision.promoted:
        if decision.outcome == "challenger":  # a rolled-back version is no challenger
            change.aliases[aliases.challenger] = model_version
        return change
    # A broken champion is no version to roll back to.
    if decision.champion_version and decision.champion_version != model_version and not decision.champion_broken:
        change.aliases[aliases.previous_champion] = decision.champion_version
    change.aliases[aliases.champion] = model_version
    if challenger == model_version:
        change.aliases[aliases.challenger] = None
    return change
