"""The champion/challenger decision, made from metrics alone: no registry, no run.

Each metric in ``gate.metrics`` is checked by ``mlflow.validate_evaluation_results``
against a ``MetricThreshold`` at the champion's value plus or minus its tolerance
(and the metric's absolute ``threshold``, if set). The first validated version
passes when it meets the absolute thresholds. With ``gate.keep_methods``, a
version offering fewer prediction methods than the champion is not promoted. A
version an operator rolled back is never re-promoted. A champion that cannot be
loaded or scored is broken, not the incumbent: the new version is judged as if
there were none (its absolute thresholds), and replaces it when it passes. A version
whose inputs differ from the champion's (columns added, removed or retyped:
``core.schema``) is a decision, not a fault: the champion is not scored on a holdout
it cannot read, and the version is kept as challenger (promoted by ``ops.promote``)
unless ``gate.allow_schema_change`` lets it replace the champion on its absolute
thresholds.
"""

from __future__ import annotations

import json
from collections.abc import Callable, Mapping, Sequence
from dataclasses import dataclass, field

from core.contracts import BROKEN_REASON_TAG, BROKEN_RUN_TAG, VALIDATION_STATUS_TAG
from core.errors import stored


@dataclass(frozen=True)
class Aliases:
    """The alias names the gate moves (``registry.champion_alias`` and ``gate.*_alias``)."""

    champion: str
    challenger: str
    previous_champion: str

    @classmethod
    def of(cls, cfg) -> Aliases:
        return cls(cfg.registry.champion_alias, cfg.gate.challenger_alias, cfg.gate.previous_champion_alias)


NOT_REPROMOTED = "; not re-promoted"
GATE_RUN_TAG = "gate.run_id"  # the evaluate run whose decision the version's gate.* tags record
ROLLED_BACK = "rolled_back"


@dataclass
class GateDecision:
    promoted: bool
    reason: str
    champion_version: str | None = None
    champion_metrics: dict[str, float] | None = None
    thresholds: dict[str, dict] = field(default_factory=dict)
    kept_as: str = "challenger"  # the outcome when not promoted: challenger, or rolled_back
    champion_broken: str | None = None  # why the champion could not be loaded or scored

    @property
    def outcome(self) -> str:
        return "promoted" if self.promoted else self.kept_as


def gate_thresholds(gate_metrics: Mapping, champion_metrics: Mapping[str, float] | None) -> dict:
    """One ``MetricThreshold`` per gated metric: the champion's value moved by the tolerance,
    tightened by the metric's absolute threshold. No champion (or a champion without
    that metric) and no threshold: no bound."""
    from mlflow.models import MetricThreshold

    thresholds = {}
    for name, spec in gate_metrics.items():
        greater = bool(spec.greater_is_better)
        bounds = []
        if champion_metrics is not None and name in champion_metrics:
            tolerance = float(spec.tolerance)
            bounds.append(champion_metrics[name] - tolerance if greater else champion_metrics[name] + tolerance)
        if spec.threshold is not None:
            bounds.append(float(spec.threshold))
        if bounds:
            bound = max(bounds) if greater else min(bounds)
            thresholds[name] = MetricThreshold(threshold=bound, greater_is_better=greater)
    return thresholds


def decide(
    candidate_metrics: Mapping[str, float], champion_metrics: Mapping[str, float] | None, gate_metrics: Mapping
) -> tuple[bool, str, dict]:
    """Apply the gate with ``mlflow.validate_evaluation_results``: (passed, reason, thresholds)."""
    from mlflow.models.evaluation import EvaluationResult
    from mlflow.models.evaluation.validation import ModelValidationFailedException

    missing = [name for name in gate_metrics if name not in candidate_metrics]
    if missing:
        return (
            False,
            (
                f"gated metric(s) {', '.join(missing)} cannot be computed for this model "
                "(log_loss and roc_auc_ovr need predict_proba); remove them from gate.metrics "
                "to gate on the others"
            ),
            {},
        )
    thresholds = gate_thresholds(gate_metrics, champion_metrics)
    described = {
        name: {"threshold": t.threshold, "greater_is_better": t.greater_is_better} for name, t in thresholds.items()
    }
    try:
        mlflow_validate(
            thresholds,
            EvaluationResult(dict(candidate_metrics), {}),
            EvaluationResult(dict(champion_metrics or {}), {}),
        )
    except ModelValidationFailedException as err:
        return False, err.message, described
    if champion_metrics is None:
        return True, "no champion yet: first validated version", described
    reason = "no gated metric is worse than the champion beyond its tolerance"
    uncompared = [name for name in gate_metrics if name not in champion_metrics]
    if uncompared:  # e.g. log_loss after a champion without probabilities
        reason += f"; not compared with the champion, which has none: {', '.join(uncompared)}"
    return True, reason, described


def mlflow_validate(thresholds, candidate, baseline) -> None:
    import mlflow

    mlflow.validate_evaluation_results(thresholds, candidate, baseline)


@dataclass(frozen=True)
class ChampionScore:
    """The champion as the gate sees it: its metrics on the same holdout and the
    methods it offers, or why it could not be scored."""

    version: str
    metrics: dict[str, float] | None = None
    methods: Sequence[str] = ()
    error: str | None = None


def judge(
    gate_cfg,
    model_version: str,
    candidate_metrics: Mapping[str, float],
    candidate_methods: Sequence[str],
    rolled_back_reason: str | None,
    champion_version: str | None,
    score_champion: Callable[[], ChampionScore],
    schema_change: str | None = None,
) -> GateDecision:
    """Decide whether version ``model_version`` replaces the champion.

    ``rolled_back_reason`` is the version's recorded reason when an operator rolled
    it back (None otherwise); ``score_champion`` is called only when the decision
    needs the champion's metrics, never when ``schema_change`` says how the version's
    inputs differ from the champion's (``core.schema.input_difference``).
    """
    if rolled_back_reason is not None:
        # Stays rolled back however often it is evaluated again (the tag is kept).
        return GateDecision(
            False,
            rolled_back_reason.removesuffix(NOT_REPROMOTED) + NOT_REPROMOTED,
            champion_version,
            kept_as=ROLLED_BACK,
        )
    if champion_version == model_version:
        return GateDecision(True, "already the champion; re-validated", model_version)
    if champion_version is None:
        passed, reason, thresholds = decide(candidate_metrics, None, gate_cfg.metrics)
        return GateDecision(passed, reason, None, None, thresholds)
    if schema_change is not None:
        return schema_decision(gate_cfg, model_version, candidate_metrics, champion_version, schema_change)
    champion = score_champion()
    if champion.metrics is None:
        # Keeping it would keep it forever: every later version would be a challenger.
        passed, reason, thresholds = decide(candidate_metrics, None, gate_cfg.metrics)
        broken = f"champion version {champion_version} is broken: it could not be loaded or scored ({champion.error})"
        reason = f"{broken}; {'replaced by' if passed else 'not replaced by'} version {model_version}: {reason}"
        return GateDecision(passed, reason, champion_version, None, thresholds, champion_broken=champion.error)
    lost = [m for m in champion.methods if m not in candidate_methods]
    if gate_cfg.keep_methods and lost:
        reason = (
            f"version {model_version} offers {', '.join(candidate_methods)}; the champion (version "
            f"{champion_version}) also offers {', '.join(lost)}, which its clients would lose "
            "(set gate.keep_methods=false to allow it)"
        )
        return GateDecision(False, reason, champion_version, champion.metrics)
    passed, reason, thresholds = decide(candidate_metrics, champion.metrics, gate_cfg.metrics)
    return GateDecision(passed, reason, champion_version, champion.metrics, thresholds)


def schema_decision(
    gate_cfg, model_version: str, candidate_metrics: Mapping[str, float], champion_version: str, schema_change: str
) -> GateDecision:
    """A version whose inputs differ from the champion's: kept as challenger, or with
    ``gate.allow_schema_change`` judged on the absolute thresholds alone (the champion
    cannot be compared on a holdout it cannot read); the champion is not broken for it."""
    differs = f"its inputs differ from the champion's (version {champion_version}): {schema_change}"
    if not gate_cfg.allow_schema_change:
        return GateDecision(
            False,
            (
                f"{differs}; a change of inputs changes what every caller sends, so it is promoted only by "
                f"an operator (make promote VERSION={model_version} REASON=...) or with gate.allow_schema_change=true"
            ),
            champion_version,
        )
    passed, reason, thresholds = decide(candidate_metrics, None, gate_cfg.metrics)
    verdict = "it meets every absolute threshold" if passed else reason
    return GateDecision(
        passed,
        f"{differs}; judged on its own (gate.allow_schema_change=true): {verdict}",
        champion_version,
        None,
        thresholds,
    )


def decision_tags(decision: GateDecision, candidate_metrics: Mapping[str, float], run_id: str) -> dict[str, str]:
    """The tags that record a decision on the model version, made by run ``run_id``."""
    return {
        GATE_RUN_TAG: run_id,
        VALIDATION_STATUS_TAG: "passed",
        "gate.outcome": decision.outcome,
        "gate.reason": stored(decision.reason, 4000),
        "gate.candidate_metrics": json.dumps(candidate_metrics, sort_keys=True),
        "gate.champion_metrics": json.dumps(decision.champion_metrics, sort_keys=True),
        "gate.champion_version": decision.champion_version or "",
        "gate.thresholds": json.dumps(decision.thresholds, sort_keys=True),
    }


def broken_tags(error: str, run_id: str) -> dict[str, str]:
    """The tags that mark a champion broken (``validation_status=broken``, the reason, the run
    that found it), so that people, ``ops.rollback`` and the next runs see why it stopped
    being the champion."""
    return {
        VALIDATION_STATUS_TAG: "broken",
        BROKEN_REASON_TAG: stored(f"could not be loaded or scored as champion: {error}"),
        BROKEN_RUN_TAG: run_id,
    }


def describe_bounds(decision: GateDecision) -> str:
    """The thresholds the decision applied, for people: ``accuracy >= 0.9; log_loss <= 0.2``."""
    return "; ".join(
        f"{metric} {'>=' if spec['greater_is_better'] else '<='} {spec['threshold']:.4g}"
        for metric, spec in decision.thresholds.items()
    )


def describe_markdown(
    decision: GateDecision, version: str, candidate_metrics: Mapping[str, float], report_link: str
) -> str:
    """The decision as a registered version's description in the MLflow UI: the outcome and
    why, each metric against the champion's and the bound applied, and a link to the report."""
    champion = decision.champion_version
    against = f"champion v{champion}" if champion and champion != version else "champion"
    lines = [f"**Gate: {decision.outcome.replace('_', ' ')}**: {' '.join(decision.reason.split())}", ""]
    champion_metrics = decision.champion_metrics or {}
    for name in sorted(candidate_metrics):
        spec = decision.thresholds.get(name)
        compared = [f"{against} {champion_metrics[name]:.4g}"] if name in champion_metrics else []
        if spec:
            compared.append(f"bound {'>=' if spec['greater_is_better'] else '<='} {spec['threshold']:.4g}")
        lines.append(f"- {name}: **{candidate_metrics[name]:.4g}**" + (f" ({'; '.join(compared)})" if compared else ""))
    lines += ["", f"[Evaluation report]({report_link}) (confusion matrices, curves, all checks)"]
    return "\n".join(lines)
