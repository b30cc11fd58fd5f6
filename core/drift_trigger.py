"""Whether a batch's drift is reason to retrain, from the check alone (no run, no registry):
``ops.retrain --when drift`` asks it, and prints its sentence.

Retrain when, against the champion's reference profile (``core.drift``),

- at least one feature drifted and the share of drifted features is at least
  ``drift.retrain.share``; or
- the batch has at least ``drift.retrain.min_labelled_rows`` labelled rows and a gated metric
  (``gate.metrics``) is worse on them than on the champion's holdout by more than
  ``drift.retrain.max_drop`` (in the metric's own units; ``core.drift.DriftResult.drops``).
"""

from __future__ import annotations

from collections.abc import Iterable

from core.drift import DriftResult


def retrain_decision(result: DriftResult, retrain, gated: Iterable[str]) -> tuple[bool, str]:
    """(retrain or not, why: one sentence naming the numbers and the bounds)."""
    share = result.share
    drifted = bool(result.drifted) and share >= retrain.share
    parts = [
        f"{len(result.drifted)} of {len(result.features)} features drifted "
        f"(share {share:.2f} {'≥' if drifted else '<'} drift.retrain.share {retrain.share:g}"
        + ("" if result.drifted or share < retrain.share else ", but none drifted")
        + ")"
    ]
    dropped = False
    if not result.labelled_rows:
        parts.append("no labelled rows")
    elif result.labelled_rows < retrain.min_labelled_rows:
        parts.append(
            f"{result.labelled_rows} labelled rows, fewer than drift.retrain.min_labelled_rows "
            f"{retrain.min_labelled_rows}: their metrics are not acted on"
        )
    else:
        drops = result.drops()
        compared = [name for name in gated if name in drops]
        for name in compared:
            worse = drops[name] > retrain.max_drop
            dropped |= worse
            parts.append(
                f"{name} {result.batch_metrics[name]:.3f} on {result.labelled_rows} labelled rows, "
                f"{result.holdout_metrics[name]:.3f} on the holdout (drop {drops[name]:.3f} "
                f"{'>' if worse else '≤'} drift.retrain.max_drop {retrain.max_drop:g})"
            )
        if not compared:
            parts.append(f"no gated metric ({', '.join(gated) or 'none'}) can be compared on the labelled rows")
    go = drifted or dropped
    return go, ("retraining: " if go else "not retraining: ") + f"{result.source} against {result.model}: " + "; ".join(
        parts
    )
