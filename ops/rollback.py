"""Roll the champion alias back to the previous champion.

    python -m ops.rollback                     # registered model from the config (iris-classifier)
    python -m ops.rollback registry.model_name=other-model

The two aliases swap: ``champion`` goes to the version holding
``previous_champion``, and ``previous_champion`` to the version rolled back
from, so a second rollback undoes the first. The rolled-back version is tagged
``gate.outcome=rolled_back``: ``evaluate`` never promotes it again, however
often a pipeline evaluates it (the tag stays).
Exits 1, changing nothing, when there is no previous champion.
"""

from __future__ import annotations

import logging
import sys
import time
from collections.abc import Sequence

from core import contracts
from core.registry import alias_version
from pipeline.step import parse_step_args, step_parser

log = logging.getLogger(__name__)


class RollbackError(RuntimeError):
    pass


def rollback(client, name: str, champion_alias: str, previous_alias: str) -> tuple[str, str]:
    """Swap the two aliases of ``name``; return (old champion, new champion) versions."""
    champion = alias_version(client, name, champion_alias)
    previous = alias_version(client, name, previous_alias)
    if champion is None or previous is None:
        missing = champion_alias if champion is None else previous_alias
        raise RollbackError(f"Registered model {name!r} has no {missing!r} alias; nothing to roll back")
    old, new = str(champion.version), str(previous.version)
    client.set_model_version_tag(name, old, "gate.outcome", "rolled_back")
    client.set_model_version_tag(
        name, old, "gate.reason", f"rolled back to version {new} at {time.strftime('%Y-%m-%dT%H:%M:%S%z')}"
    )
    client.set_registered_model_alias(name, champion_alias, new)
    client.set_registered_model_alias(name, previous_alias, old)
    return old, new


def main(argv: Sequence[str] | None = None) -> None:
    from mlflow import MlflowClient

    parser = step_parser(__doc__)
    _, cfg = parse_step_args(parser, argv)
    contracts.configure_logging()
    contracts.configure_tracking()
    name = cfg.registry.model_name
    try:
        old, new = rollback(
            MlflowClient(), name, cfg.registry.champion_alias, cfg.gate.previous_champion_alias
        )
    except RollbackError as err:
        print(f"rollback: {err}", file=sys.stderr)
        sys.exit(1)
    print(f"{name}: champion moved from version {old} back to version {new}")


if __name__ == "__main__":
    main()
