"""Step 4, ``evaluate``: validate the registered model as a user would load it, then promote it.

Reads:
- ``--model-uri``: the registered version, ``models:/<name>/<version>``, loaded
  with ``mlflow.pyfunc.load_model``;
- ``--reference-model-uri``: the native ``mlflow.sklearn`` model from ``train``;
- ``--holdout-uri``: the Parquet holdout ``train`` logged;
- the Hydra config (``data.target``, ``validation.atol``, ``registry``, ``gate``).

Checks on the holdout, against the reference estimator, for exactly the methods
it has: the model advertises those; ``predict`` labels identical;
``predict_proba`` within ``atol`` and rows summing to 1; ``predict_log_proba``
equal to the log of the probabilities where finite; the default method is
``predict_proba`` (``predict`` without probabilities); ``argmax(predict_proba)``
agrees with ``predict`` on the same rows as in the estimator; each missing
method and an unknown one are refused.

Then the champion/challenger gate: the current ``champion`` is scored on the
same holdout, and ``mlflow.validate_evaluation_results`` checks each metric in
``gate.metrics`` against a ``MetricThreshold`` at the champion's value plus or
minus its tolerance (and the metric's absolute ``threshold``, if set). Passing:
the version becomes ``champion`` and the old champion ``previous_champion``.
Not passing: the version becomes ``challenger``; the champion stays. The first
validated version becomes champion.

Writes, on its MLflow run: metrics ``accuracy``, ``f1_macro``, ``log_loss``,
``roc_auc_ovr`` (the last two for models with ``predict_proba``; ``champion_*``
for the champion), ``validation_checks_failed``; artifacts ``validation.json``
(one entry per check), ``gate.json`` and the evaluation report ``report/``
(confusion matrix, per-class ROC, precision-recall and calibration curves with
the champion's overlaid, a metrics comparison, and ``report.html``; see
``core.report``). On the model version: tags ``validation_status`` = ``passed``/``failed``,
``validation_run_id`` and ``gate.*`` (outcome, reason, both versions' metrics,
thresholds); then the aliases. A failed validation moves no alias to the version
(and removes any it held: fail closed) and ends the run with a non-zero exit; a
version kept as challenger is not a failure. A version an operator rolled back
is never re-promoted; a champion that cannot be scored on the new holdout is
kept (the gate cannot compare).

Outputs (run tags ``pipeline.output.*``): ``validation_status``, ``gate_outcome``
(``promoted``/``challenger``, or ``not gated``), ``champion_version`` (after the decision).

With ``gate.enabled=false`` (sweep jobs) the model is validated, scored and
reported on, and no alias moves; ``--model-uri`` may then be an unregistered
logged model (``models:/m-…``).

Run alone: ``python -m steps.evaluate --model-uri models:/NAME/VERSION
--reference-model-uri URI --holdout-uri URI [overrides]``.
"""

from __future__ import annotations

import json
import logging
from collections.abc import Mapping, Sequence
from dataclasses import asdict, dataclass, field

import numpy as np
import pandas as pd
from sklearn import metrics

from core import contracts
from core.errors import StepError
from core.registry import alias_version, parse_registered_uri
from core.report import ModelOutputs, log_report
from model import dispatch_model
from model.dispatch_model import (
    PREDICT_METHOD_PARAM,
    PREDICT_METHODS,
    available_methods,
    default_method,
)
from pipeline.locks import file_lock, lock_path
from pipeline.step import (
    log_config,
    parse_step_args,
    record_outputs,
    run_in_mlflow_run,
    step_parser,
)

log = logging.getLogger(__name__)

UNSUPPORTED_METHOD_PROBE = "decision_function"
NOT_REPROMOTED = "; not re-promoted"
GATE_LOCK_WAIT = 600  # seconds; a gate decision takes a second or two


class ValidationFailed(StepError):
    """The registered model did not pass every check."""


@dataclass(frozen=True)
class Check:
    name: str
    passed: bool
    detail: str


def _call(model, features: pd.DataFrame, method: str | None):
    params = None if method is None else {PREDICT_METHOD_PARAM: method}
    return np.asarray(model.predict(features, params=params))


def model_methods(model) -> list[str]:
    """The prediction methods a loaded pyfunc ``model`` advertises."""
    return dispatch_model.offered_methods(getattr(getattr(model, "metadata", None), "metadata", None))


def validate_predictions(model, reference, features: pd.DataFrame, atol: float) -> list[Check]:
    """Compare the pyfunc ``model`` with the native ``reference`` estimator on ``features``.

    Exactly the methods the reference estimator has are validated; the model must
    advertise those and no others, and must refuse each of the others (and an
    unknown name) with ``INVALID_PARAMETER_VALUE``.
    """
    from mlflow.exceptions import MlflowException

    expected_methods = list(available_methods(reference))
    offered = model_methods(model)
    checks = [
        Check(
            "advertised_methods_match_estimator",
            offered == expected_methods,
            f"model advertises {offered}; {type(reference).__name__} has {expected_methods}",
        )
    ]
    outputs = {}
    for method in expected_methods:
        try:
            outputs[method] = _call(model, features, method)
        except Exception as err:  # every failure becomes a failed check with its message
            checks.append(Check(f"{method}_callable", False, f"{type(err).__name__}: {err}"))

    if "predict" in outputs:
        expected = reference.predict(features)
        same = np.array_equal(outputs["predict"], expected)
        mismatches = int(np.sum(outputs["predict"] != expected)) if not same else 0
        checks.append(Check("predict_labels_identical", same, f"{mismatches} label(s) differ"))

    if "predict_proba" in outputs:
        proba = outputs["predict_proba"]
        reference_proba = reference.predict_proba(features)
        diff = float(np.max(np.abs(proba - reference_proba)))
        checks.append(Check("predict_proba_matches_reference", diff <= atol, f"max |diff| {diff:.3g}"))
        sums = float(np.max(np.abs(proba.sum(axis=1) - 1.0)))
        checks.append(Check("predict_proba_rows_sum_to_one", sums <= atol, f"max |sum-1| {sums:.3g}"))
        if "predict" in outputs:
            # Rows where the most probable class is the predicted label: the same rows
            # as in the estimator (an SVC with Platt scaling may disagree with itself).
            classes = reference.classes_
            got = classes[np.argmax(proba, axis=1)] == outputs["predict"]
            expected = classes[np.argmax(reference_proba, axis=1)] == reference.predict(features)
            checks.append(
                Check(
                    "argmax_proba_agrees_with_predict_as_in_estimator",
                    np.array_equal(got, expected),
                    f"classes_[argmax(proba)] == predict on {int(got.sum())} of {len(got)} rows "
                    f"(estimator: {int(expected.sum())})",
                )
            )

    default_name = default_method(reference)
    if default_name in outputs:
        default = _call(model, features, None)
        checks.append(
            Check(
                f"default_method_is_{default_name}",
                default.shape == outputs[default_name].shape
                and np.array_equal(default, outputs[default_name]),
                f"default output shape {default.shape}",
            )
        )

    if "predict_log_proba" in outputs and "predict_proba" in outputs:
        log_proba, proba = outputs["predict_log_proba"], outputs["predict_proba"]
        with np.errstate(divide="ignore"):
            expected_log = np.log(proba)
        finite = np.isfinite(expected_log)
        same_support = np.array_equal(finite, np.isfinite(log_proba))
        diff = float(np.max(np.abs(log_proba[finite] - expected_log[finite]), initial=0.0))
        checks.append(
            Check(
                "predict_log_proba_is_log_of_proba",
                same_support and diff <= atol,
                f"max |diff| where finite {diff:.3g}; non-finite cells agree: {same_support}",
            )
        )

    for method in [m for m in PREDICT_METHODS if m not in expected_methods] + [UNSUPPORTED_METHOD_PROBE]:
        name = "unsupported_method_rejected" if method == UNSUPPORTED_METHOD_PROBE else f"{method}_rejected"
        try:
            _call(model, features.head(1), method)
            checks.append(Check(name, False, f"{method}: no error was raised"))
        except MlflowException as err:
            checks.append(Check(name, err.error_code == "INVALID_PARAMETER_VALUE", err.message))
        except Exception as err:  # any other error is not the clear refusal callers rely on
            checks.append(Check(name, False, f"{method}: {type(err).__name__}: {err}"))
    return checks


def holdout_outputs(model, features: pd.DataFrame, name: str, labels: pd.Series, classes: Sequence):
    """The pyfunc's own labels and (if it offers them) probabilities on the holdout, with metrics."""
    predicted = _call(model, features, "predict")
    proba = _call(model, features, "predict_proba") if "predict_proba" in model_methods(model) else None
    return ModelOutputs(name, predicted, proba, holdout_metrics(labels, predicted, proba, classes))


# The metrics holdout_metrics computes, and whether greater is better for each.
HOLDOUT_METRICS = {"accuracy": True, "f1_macro": True, "roc_auc_ovr": True, "log_loss": False}


def holdout_metrics(labels, predicted, proba, classes: Sequence) -> dict[str, float]:
    """``accuracy`` and ``f1_macro``; ``log_loss`` and ``roc_auc_ovr`` when there are probabilities."""
    result = {
        "accuracy": metrics.accuracy_score(labels, predicted),
        "f1_macro": metrics.f1_score(labels, predicted, average="macro"),
    }
    if proba is not None:
        result["log_loss"] = metrics.log_loss(labels, proba, labels=list(classes))
        if len(classes) == 2:  # scikit-learn wants the positive class's column for binary AUC
            result["roc_auc_ovr"] = metrics.roc_auc_score(labels, proba[:, 1])
        else:
            result["roc_auc_ovr"] = metrics.roc_auc_score(
                labels, proba, multi_class="ovr", labels=list(classes)
            )
    return {name: float(value) for name, value in result.items()}


@dataclass
class GateDecision:
    promoted: bool
    reason: str
    champion_version: str | None = None
    champion_metrics: dict[str, float] | None = None
    thresholds: dict[str, dict] = field(default_factory=dict)
    kept_as: str = "challenger"  # the outcome when not promoted: challenger, or rolled_back

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
    candidate_metrics: Mapping[str, float],
    champion_metrics: Mapping[str, float] | None,
    gate_metrics: Mapping,
) -> tuple[bool, str, dict]:
    """Apply the gate with ``mlflow.validate_evaluation_results``: (passed, reason, thresholds)."""
    from mlflow.models.evaluation import EvaluationResult
    from mlflow.models.evaluation.validation import ModelValidationFailedException

    missing = [name for name in gate_metrics if name not in candidate_metrics]
    if missing:
        return False, (
            f"gated metric(s) {', '.join(missing)} cannot be computed for this model "
            "(log_loss and roc_auc_ovr need predict_proba); remove them from gate.metrics "
            "to gate on the others"
        ), {}
    thresholds = gate_thresholds(gate_metrics, champion_metrics)
    described = {
        name: {"threshold": t.threshold, "greater_is_better": t.greater_is_better}
        for name, t in thresholds.items()
    }
    try:
        mlflow_validate(thresholds, EvaluationResult(dict(candidate_metrics), {}),
                        EvaluationResult(dict(champion_metrics or {}), {}))
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


def gate(cfg, name: str, model_version: str, candidate_metrics, candidate_methods: Sequence[str],
         holdout_features, labels, classes):
    """Score the champion on the same holdout and decide whether the candidate replaces it.

    With ``gate.keep_methods``, a candidate that offers fewer prediction methods than
    the champion (an SVC after a logistic regression) is not promoted: the
    champion's clients would lose them. Returns the decision and the champion's
    outputs (None when it was not scored).
    """
    import mlflow
    from mlflow import MlflowClient

    client = MlflowClient()
    candidate = client.get_model_version(name, model_version)
    champion = alias_version(client, name, cfg.registry.champion_alias)
    if candidate.tags.get("gate.outcome") == "rolled_back":
        # Stays rolled back however often it is evaluated again (the tag is kept).
        when = candidate.tags.get("gate.reason", "").removesuffix(NOT_REPROMOTED)
        return GateDecision(
            False, when + NOT_REPROMOTED, str(champion.version) if champion else None, kept_as="rolled_back"
        ), None
    if champion is not None and str(champion.version) == model_version:
        return GateDecision(True, "already the champion; re-validated", model_version), None
    if champion is None:
        passed, reason, thresholds = decide(candidate_metrics, None, cfg.gate.metrics)
        return GateDecision(passed, reason, None, None, thresholds), None
    champion_uri = f"models:/{name}/{champion.version}"
    try:
        champion_model = mlflow.pyfunc.load_model(champion_uri)
        champion_outputs = holdout_outputs(
            champion_model, holdout_features, f"version {champion.version} (champion)", labels, classes
        )
        champion_metrics = dict(champion_outputs.metrics)
    except Exception as err:  # the gate cannot compare, so it does not promote
        reason = (
            f"champion {champion_uri} could not be scored on this holdout "
            f"({type(err).__name__}: {err}); kept it, as the gate cannot compare"
        )
        log.warning("%s", reason)
        return GateDecision(False, reason, str(champion.version)), None
    mlflow.log_metrics({f"champion_{k}": v for k, v in champion_metrics.items()})
    lost = [m for m in model_methods(champion_model) if m not in candidate_methods]
    if cfg.gate.keep_methods and lost:
        reason = (
            f"version {model_version} offers {', '.join(candidate_methods)}; the champion (version "
            f"{champion.version}) also offers {', '.join(lost)}, which its clients would lose "
            "(set gate.keep_methods=false to allow it)"
        )
        return GateDecision(False, reason, str(champion.version), champion_metrics), champion_outputs
    passed, reason, thresholds = decide(candidate_metrics, champion_metrics, cfg.gate.metrics)
    return GateDecision(passed, reason, str(champion.version), champion_metrics, thresholds), champion_outputs


def apply_decision(client, cfg, name: str, model_version: str, decision: GateDecision,
                   candidate_metrics: Mapping[str, float]) -> str:
    """Write the decision on the version as tags, then move the aliases; return the champion."""
    tags = {
        contracts.VALIDATION_STATUS_TAG: "passed",
        "gate.outcome": decision.outcome,
        "gate.reason": decision.reason,
        "gate.candidate_metrics": json.dumps(candidate_metrics, sort_keys=True),
        "gate.champion_metrics": json.dumps(decision.champion_metrics, sort_keys=True),
        "gate.champion_version": decision.champion_version or "",
        "gate.thresholds": json.dumps(decision.thresholds, sort_keys=True),
    }
    for key, value in tags.items():
        client.set_model_version_tag(name, model_version, key, value)
    if not decision.promoted:
        if decision.outcome == "challenger":  # a rolled-back version is no challenger
            client.set_registered_model_alias(name, cfg.gate.challenger_alias, model_version)
        return decision.champion_version
    if decision.champion_version and decision.champion_version != model_version:
        client.set_registered_model_alias(
            name, cfg.gate.previous_champion_alias, decision.champion_version
        )
    client.set_registered_model_alias(name, cfg.registry.champion_alias, model_version)
    challenger = alias_version(client, name, cfg.gate.challenger_alias)
    if challenger is not None and str(challenger.version) == model_version:
        client.delete_registered_model_alias(name, cfg.gate.challenger_alias)
    return model_version


def record_safely(log_artifacts) -> None:
    """Run ``log_artifacts``; a failure (an upload error, a figure too large) becomes a
    warning and tag ``pipeline.report_error`` instead of failing a step whose outcome stands."""
    import mlflow

    try:
        log_artifacts()
    except Exception as err:  # noqa: BLE001 - any failure here must not fail the step
        log.warning("could not log the evaluation record: %s: %s", type(err).__name__, err)
        mlflow.set_tag("pipeline.report_error", f"{type(err).__name__}: {err}"[:4000])


def run(
    model_uri: str, reference_model_uri: str, holdout_uri: str, cfg, overrides: Sequence[str] = ()
) -> dict[str, str]:
    """Validate, score and promote (or mark failed) inside the active MLflow run."""
    import mlflow
    from mlflow import MlflowClient

    log_config(cfg, overrides, step="evaluate")
    mlflow.log_params(
        {"model_uri": model_uri, "reference_model_uri": reference_model_uri, "holdout_uri": holdout_uri}
    )
    # A registered version (models:/<name>/<version>) or, with registry.register=false,
    # a logged model (models:/m-...) that is validated and scored but never gated.
    try:
        name, model_version = parse_registered_uri(model_uri)
        registered = True
    except ValueError:
        if cfg.gate.enabled:
            raise StepError(
                f"the gate needs a registered version (models:/<name>/<version>), got {model_uri}; "
                "set gate.enabled=false to validate an unregistered model"
            ) from None
        name, model_version, registered = None, None, False
    client = MlflowClient()
    run_id = mlflow.active_run().info.run_id
    if registered:
        client.set_model_version_tag(name, model_version, "validation_run_id", run_id)

    holdout = pd.read_parquet(mlflow.artifacts.download_artifacts(artifact_uri=holdout_uri))
    reference = mlflow.sklearn.load_model(reference_model_uri)
    features = holdout[list(reference.feature_names_in_)]
    labels = holdout[cfg.data.target]

    try:
        model = mlflow.pyfunc.load_model(model_uri)
        checks = validate_predictions(model, reference, features, cfg.validation.atol)
    except Exception as err:  # a model that cannot even load fails validation, it is not promoted
        checks = [Check("load_model", False, f"{type(err).__name__}: {err}")]
    mlflow.log_dict({"checks": [asdict(check) for check in checks]}, "validation.json")
    failed = [check for check in checks if not check.passed]
    mlflow.log_metric("validation_checks_failed", len(failed))
    for check in checks:
        log.info("%s %s: %s", "PASS" if check.passed else "FAIL", check.name, check.detail)

    if failed:
        if registered:
            client.set_model_version_tag(name, model_version, contracts.VALIDATION_STATUS_TAG, "failed")
            # Fail closed: a version that fails validation keeps no alias, even one it held before.
            for alias in client.get_model_version(name, model_version).aliases:
                log.error("removing alias %s from %s, which failed validation", alias, model_uri)
                client.delete_registered_model_alias(name, alias)
        record_outputs({"validation_status": "failed"})
        raise ValidationFailed(
            f"{model_uri} failed validation: "
            + "; ".join(f"{check.name} ({check.detail})" for check in failed)
        )

    label = f"version {model_version} (new)" if registered else "this model"
    candidate = holdout_outputs(model, features, label, labels, reference.classes_)
    candidate_metrics = dict(candidate.metrics)
    # Linked to the logged model too, so the MLflow UI shows them on the model's page.
    mlflow.log_metrics(candidate_metrics, model_id=model.metadata.model_id)
    checked = f"Holdout: {len(features)} rows from {holdout_uri}; all {len(checks)} validation checks passed."
    if not cfg.gate.enabled:
        if registered:
            client.set_model_version_tag(name, model_version, contracts.VALIDATION_STATUS_TAG, "passed")
        record_safely(lambda: log_report(
            f"{model_uri}: evaluation on the holdout",
            ["Not gated (gate.enabled=false): no alias was moved.", checked],
            candidate, None, labels, reference.classes_,
        ))
        outputs = {"validation_status": "passed", "gate_outcome": "not gated"}
        record_outputs(outputs)
        return outputs

    # One decision at a time per store: concurrent pipelines compare with the latest champion.
    with file_lock(lock_path(contracts.tracking_uri(), "gate"), wait=GATE_LOCK_WAIT):
        decision, champion = gate(cfg, name, model_version, candidate_metrics, model_methods(model),
                                  features, labels, reference.classes_)
        # Tags first, aliases second: an alias never points at a version without its decision.
        champion_version = apply_decision(client, cfg, name, model_version, decision, candidate_metrics)
    log.info("gate: version %s %s (%s)", model_version, decision.outcome, decision.reason)
    bounds = "; ".join(
        f"{metric} {'>=' if spec['greater_is_better'] else '<='} {spec['threshold']:.4g}"
        for metric, spec in decision.thresholds.items()
    )
    # The decision is made and on the registry (the aliases have moved): failing to
    # log its record or report from here on is a warning, not a failed step.
    record_safely(lambda: mlflow.log_dict({**asdict(decision), "outcome": decision.outcome}, "gate.json"))
    record_safely(lambda: log_report(
        f"{name} version {model_version}: evaluation on the holdout",
        [f"Gate: {decision.outcome} ({decision.reason}).",
         f"Gate thresholds: {bounds or 'none applied'}.", checked],
        candidate, champion, labels, reference.classes_,
    ))
    outputs = {
        "validation_status": "passed",
        "gate_outcome": decision.outcome,
        "champion_version": champion_version or "",
    }
    record_outputs(outputs)
    return outputs


def main(argv: Sequence[str] | None = None) -> None:
    parser = step_parser(__doc__)
    parser.add_argument(
        "--model-uri", required=True,
        help="models:/<name>/<version> to validate (or models:/m-... with gate.enabled=false)",
    )
    parser.add_argument("--reference-model-uri", required=True, help="native sklearn model from train")
    parser.add_argument("--holdout-uri", required=True, help="Parquet holdout logged by train")
    args, cfg = parse_step_args(parser, argv)
    contracts.configure_logging()
    contracts.configure_tracking()
    run_in_mlflow_run(
        lambda: run(args.model_uri, args.reference_model_uri, args.holdout_uri, cfg, args.overrides),
    )


if __name__ == "__main__":
    main()
