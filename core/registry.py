"""The Model Registry: version URIs, reading versions and aliases (failing closed) and moving them."""

from __future__ import annotations

from dataclasses import dataclass


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
        raise ValueError(
            f"{model_uri!r} is not a registered version URI of the form models:/<name>/<version>"
        )
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
    model = _unless_missing(lambda: client.get_registered_model(name))
    version = None if model is None else model.aliases.get(alias)
    return None if version is None else str(version)


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


def apply_decision(
    client, name: str, model_version: str, decision, tags: dict[str, str], aliases: Aliases
) -> str | None:
    """Record a gate decision on version ``model_version`` of ``name``: the ``tags`` first,
    then the aliases (so an alias never points at a version without its decision).

    Returns the champion's version after the decision.
    """
    for key, value in tags.items():
        client.set_model_version_tag(name, model_version, key, value)
    if not decision.promoted:
        if decision.outcome == "challenger":  # a rolled-back version is no challenger
            client.set_registered_model_alias(name, aliases.challenger, model_version)
        return decision.champion_version
    # A broken champion is no version to roll back to.
    if decision.champion_version and decision.champion_version != model_version and not decision.champion_broken:
        client.set_registered_model_alias(name, aliases.previous_champion, decision.champion_version)
    client.set_registered_model_alias(name, aliases.champion, model_version)
    challenger = alias_version(client, name, aliases.challenger)
    if challenger is not None and str(challenger.version) == model_version:
        client.delete_registered_model_alias(name, aliases.challenger)
    return model_version


def remove_aliases(client, name: str, model_version: str) -> list[str]:
    """Take every alias off version ``model_version`` of ``name`` (fail closed); return them."""
    aliases = list(client.get_model_version(name, model_version).aliases)
    for alias in aliases:
        client.delete_registered_model_alias(name, alias)
    return aliases
