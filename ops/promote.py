"""Make a registered version champion by an operator's decision, past the gate.

    python -m ops.promote 3 --reason "the drift alert was a false alarm"
    python -m ops.promote 3 --reason "..." registry.model_name=other-model

The gate never promotes a version an operator rolled back, however often a
pipeline evaluates it; this command is how one comes back, and only when asked
with a reason. It promotes any validated version (a challenger too).

Refuses, changing nothing: a version that does not exist, or whose
``validation_status`` tag is not ``passed`` (``pending``: never validated;
``failed``), with exit 1; a missing or empty ``--reason`` or a version that is
not a number, with exit 2. A version that already is the champion is left as
it is (exit 0).

Writes, on the version and before any alias moves: ``gate.outcome=promoted``,
``gate.reason`` (``promoted by <user> at <time>, past the gate: <reason>``),
``gate.champion_version`` (the champion it replaces), ``promote.by``,
``promote.at`` and ``promote.reason``; it removes a rollback's record
(``rollback.*``, see ``ops.rollback``), as the version is no longer rolled
back. Then the aliases move as a gate decision moves them
(``core.registry.decision_change``): ``champion`` to the version, the old
champion to ``previous_champion``, ``challenger`` off it if it held that; tags and
aliases as one unit (``core.registry.apply_change``). Nothing is recorded on an
MLflow run: the version's tags are the record, as for a rollback.

Under the gate lock (``core.locks``), as ``evaluate``, waiting at most
``--wait`` seconds (exit 75 when it stays busy; 69 when the lock server,
``PIPELINE_LOCK_URL``, cannot be reached); a change another command left half made is
undone first, and said so. An account the tracking server refuses: exit 77 with one
line naming the permission it lacks (``core.access``).
"""

from __future__ import annotations

import argparse
import logging
import sys
from collections.abc import Sequence

from hydra.errors import HydraException

from core import contracts
from core.access import explained
from core.config import compose_config, describe_error, split_overrides
from core.gate import GateDecision
from core.locks import GATE_LOCK_WAIT, HOST_GATE, Held, LockBusy, LockUnavailable, gate_lock
from core.registry import (
    Aliases,
    RegistryChangeError,
    alias_target,
    alias_version,
    apply_change,
    decision_change,
    find_version,
    recover,
)
from core.tracking import EXIT_UNAVAILABLE
from ops.retrain import EXIT_LOCKED
from ops.rollback import now, operator_name, record_removed

log = logging.getLogger(__name__)

EXIT_REFUSED = 1
EXIT_USAGE = 2


class PromotionRefused(RuntimeError):
    pass


def promote(client, name: str, version: str, reason: str, aliases: Aliases, held: Held = HOST_GATE) -> str | None:
    """Make ``version`` of ``name`` champion for ``reason``; return the champion's version
    before (None when there was none; ``version`` itself, and nothing written, when it was
    the champion already).

    The caller holds the gate lock and has undone any half-made change
    (``core.registry.recover``). Raises ``PromotionRefused`` before writing anything for
    a version that does not exist or did not pass validation.
    """
    found = find_version(client, name, version)
    if found is None:
        raise PromotionRefused(f"registered model {name!r} has no version {version}")
    status = found.tags.get(contracts.VALIDATION_STATUS_TAG, "none")
    if status != "passed":
        raise PromotionRefused(
            f"{name} version {version} did not pass validation ({contracts.VALIDATION_STATUS_TAG}={status}); "
            "only a validated version can be champion"
        )
    champion = alias_version(client, name, aliases.champion)
    old = None if champion is None else str(champion.version)
    if old == version:
        return old
    who, when = operator_name(), now()
    decision = GateDecision(True, f"promoted by {who} at {when}, past the gate: {reason}", old)
    tags = record_removed(found.tags) | {
        "gate.outcome": decision.outcome,
        "gate.reason": decision.reason,
        "gate.champion_version": old or "",
        "promote.by": who,
        "promote.at": when,
        "promote.reason": reason,
    }
    change = decision_change(
        f"ops.promote by {who}: version {version} to champion",
        version,
        decision,
        tags,
        aliases,
        challenger=alias_target(client, name, aliases.challenger),
    )
    apply_change(client, name, change, held=held)
    return old


def build_parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("version", help="the registered version to make champion")
    parser.add_argument("overrides", nargs="*", help="Hydra overrides, e.g. registry.model_name=x")
    parser.add_argument("--reason", default="", help="why it is promoted past the gate (required)")
    parser.add_argument(
        "--wait",
        type=float,
        default=GATE_LOCK_WAIT,
        help=f"seconds to wait for the gate lock (default {GATE_LOCK_WAIT:g})",
    )
    return parser


def main(argv: Sequence[str] | None = None) -> None:
    from mlflow import MlflowClient

    parser = build_parser()
    args = parser.parse_intermixed_args(argv)  # the reason may come after the overrides
    try:
        cfg = compose_config(split_overrides(args.overrides))
    except (HydraException, ValueError) as err:
        parser.exit(EXIT_USAGE, f"promote: error: invalid Hydra override: {describe_error(err)}\n")
    version, reason = args.version.strip(), " ".join(args.reason.split())
    if not version.isdigit():
        refuse(EXIT_USAGE, f"VERSION {args.version!r} is not a registered version number")
    if not reason:
        refuse(EXIT_USAGE, f"--reason is required: say why version {version} is promoted past the gate")
    contracts.configure_logging()
    contracts.configure_tracking()
    name = cfg.registry.model_name
    client = MlflowClient()
    try:
        needs = f"MANAGE on registered model {name!r}"
        with explained("promote", model=name, after="nothing changed", needs=needs), gate_lock(args.wait) as held:
            undone = recover(client, name, held)
            if undone:
                print(f"promote: {undone}", file=sys.stderr)
            old = promote(client, name, version, reason, Aliases.of(cfg), held)
    except (PromotionRefused, RegistryChangeError) as err:
        refuse(EXIT_REFUSED, str(err))
    except LockBusy as err:
        refuse(EXIT_LOCKED, f"{err}; nothing changed")
    except LockUnavailable as err:
        refuse(EXIT_UNAVAILABLE, f"{err}; nothing changed")
    if old == version:
        print(f"{name}: version {version} already is the champion; nothing changed")
    else:
        print(f"{name}: champion moved from {f'version {old}' if old else 'no version'} to version {version}")


def refuse(status: int, message: str) -> None:
    print(f"promote: {message}", file=sys.stderr)
    sys.exit(status)


if __name__ == "__main__":
    main()
