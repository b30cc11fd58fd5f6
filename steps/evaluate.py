"""Step 4, ``evaluate``: validate the registered model as a user would load it, then promote it.

Reads:
- ``--model-uri``: the registered version, ``models:/<name>/<version>``, loaded
  with ``mlflow.pyfunc.load_model`` once its files are checked (``core.integrity``);
- ``--reference-model-uri``: the native ``mlflow.sklearn`` model from ``train``, its
  files checked as well;
- ``--holdout-uri``: the Parquet holdout ``train`` logged, read only if its SHA-256
  matches the one ``train`` recorded;
- the Hydra config (``data.target``, ``validation.atol``, ``registry``, ``gate``).

Validates it against the reference estimator on the holdout (``core.validation``),
scores it (``core.metrics``), scores the current ``champion`` on the same holdout
and lets the gate decide (``core.gate``), records the decision and moves the
aliases (``core.registry``), and logs the report (``core.report``). Passing:
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
thresholds, ``gate.run_id``), and its description (shown on its page in the MLflow UI:
the decision, each metric against the champion's, a link to the report); then the
aliases: one unit (``core.registry.apply_change``), undone if stopped half way, and
made after any half-made change is undone. A failed validation moves no alias to the version
(and removes any it held: fail closed) and ends the run with a non-zero exit; a
version kept as challenger is not a failure. A version an operator rolled back
is never re-promoted. A version whose inputs differ from the champion's (``core.schema``,
compared before the champion is scored) is kept as challenger, the champion untouched,
unless ``gate.allow_schema_change``. A champion that cannot be loaded or scored is broken: it is
tagged ``validation_status=broken`` with ``validation.broken_reason``, and the
version replaces it if it meets the gate's absolute thresholds (a store that cannot
be reached is no broken champion: the step fails and no alias moves). It moves an alias only
while it holds the gate lock and, run by the driver, while that pipeline is alive (checked
before each alias write): an orphaned step stops, and the next run evaluates again.

Outputs (run tags ``pipeline.output.*``): ``validation_status``, ``gate_outcome``
(``promoted``/``challenger``, or ``not gated``), ``champion_version`` (after the decision),
and ``broken_champion_version`` when the champion it replaced (or kept) was broken.

With ``gate.enabled=false`` (sweep jobs) the model is validated, scored and
reported on, and no alias moves; ``--model-uri`` may then be an unregistered
logged model (``models:/m-…``).

Run alone: ``python -m steps.evaluate --model-uri models:/NAME/VERSION
--reference-model-uri URI --holdout-uri URI [overrides]``.
"""

from __future__ import annotations

import logging
from collections.abc import Sequence
from dataclasses import asdict

import pandas as pd

from core import contracts
from core.errors import StepError, stored
from core.gate import ROLLED_BACK, ChampionScore, broken_tags, decision_tags, describe_bounds, describe_markdown, judge
from core.integrity import load_verified, verified_artifact
from core.locks import gate_lock
from core.metrics import holdout_outputs
from core.registry import (
    Aliases,
    Change,
    alias_target,
    alias_version,
    apply_change,
    decision_change,
    parse_registered_uri,
    recover,
)
from core.report import log_report, record_safely, report_page
from core.schema import schema_change
from core.tracking import unreachable
from core.validation import ValidationFailed, load_and_validate, model_methods
from pipeline.processes.loading import run_as_process
from pipeline.processes.step import (
    check_pipeline_alive,
    log_config,
    parse_step_args,
    record_outputs,
    run_in_mlflow_run,
    signals_deferred,
    step_parser,
)

log = logging.getLogger(__name__)

GATE_LOCK_WAIT = 600  # seconds; a gate decision takes a second or two


def settled(client, name: str, gate) -> None:
    """Under the gate lock ``gate``: undo a change of the registry a killed process left half made."""
    undone = recover(client, name, gate)
    if undone:
        log.warning("%s", undone)


def champion_scorer(name: str, version: str, features, labels, classes, scored: list):
    """A callable for ``core.gate.judge``: load the champion, score it on the holdout and
    log its metrics as ``champion_*``; its outputs are appended to ``scored`` for the report.

    A champion that cannot be loaded or scored is broken (``ChampionScore.error``), except
    when the store could not be reached: that fails the step, and no alias moves."""
    import mlflow

    def score() -> ChampionScore:
        uri = f"models:/{name}/{version}"
        try:
            model = load_verified(uri)
            outputs = holdout_outputs(model, features, f"version {version} (champion)", labels, classes)
        except Exception as err:  # noqa: BLE001 - anything else: the champion is broken
            if unreachable(err):
                raise
            log.warning("champion %s could not be scored: %s: %s", uri, type(err).__name__, err)
            return ChampionScore(version, error=stored(f"{type(err).__name__}: {err}"))
        mlflow.log_metrics({f"champion_{k}": v for k, v in outputs.metrics.items()})
        scored.append(outputs)
        return ChampionScore(version, dict(outputs.metrics), model_methods(model))

    return score


def run(
    model_uri: str, reference_model_uri: str, holdout_uri: str, cfg, overrides: Sequence[str] = ()
) -> dict[str, str]:
    """Validate, score and promote (or mark failed) inside the active MLflow run."""
    import mlflow
    from mlflow import MlflowClient

    log_config(cfg, overrides, step="evaluate")
    mlflow.log_params({"model_uri": model_uri, "reference_model_uri": reference_model_uri, "holdout_uri": holdout_uri})
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
    if registered:
        client.set_model_version_tag(name, model_version, "validation_run_id", mlflow.active_run().info.run_id)

    with verified_artifact(holdout_uri) as holdout_path:
        holdout = pd.read_parquet(holdout_path)
    reference = load_verified(reference_model_uri, flavor=mlflow.sklearn)
    features = holdout[list(reference.feature_names_in_)]
    labels, classes = holdout[cfg.data.target], reference.classes_

    model, checks = load_and_validate(model_uri, reference, features, cfg.validation.atol)
    mlflow.log_dict({"checks": [asdict(check) for check in checks]}, "validation.json")
    failed = [check for check in checks if not check.passed]
    mlflow.log_metric("validation_checks_failed", len(failed))
    for check in checks:
        log.info("%s %s: %s", "PASS" if check.passed else "FAIL", check.name, check.detail)

    if failed:
        if registered:
            # Fail closed: a version that fails validation keeps no alias, even one it held before.
            with gate_lock(GATE_LOCK_WAIT) as gate:
                settled(client, name, gate)
                held = [a for a, v in client.get_registered_model(name).aliases.items() if str(v) == model_version]
                description = (
                    "**Failed validation**: " + "; ".join(f"{check.name} ({check.detail})" for check in failed)[:4000]
                )
                with signals_deferred():  # held once the lock is, not while waiting for it
                    apply_change(
                        client,
                        name,
                        Change(
                            f"evaluate run {mlflow.active_run().info.run_id}: version {model_version} failed validation",
                            tags={model_version: {contracts.VALIDATION_STATUS_TAG: "failed"}},
                            descriptions={model_version: f"{description} ([checks]({report_page('validation.json')}))"},
                            aliases=dict.fromkeys(held),
                        ),
                        alive=check_pipeline_alive,
                        held=gate,
                    )
            for alias in held:
                log.error("removed alias %s from %s, which failed validation", alias, model_uri)
        record_outputs({"validation_status": "failed"})
        raise ValidationFailed(
            f"{model_uri} failed validation: " + "; ".join(f"{check.name} ({check.detail})" for check in failed)
        )

    label = f"version {model_version} (new)" if registered else "this model"
    candidate = holdout_outputs(model, features, label, labels, classes)
    candidate_metrics = dict(candidate.metrics)
    # Linked to the logged model too, so the MLflow UI shows them on the model's page.
    mlflow.log_metrics(candidate_metrics, model_id=model.metadata.model_id)
    checked = f"Holdout: {len(features)} rows from {holdout_uri}; all {len(checks)} validation checks passed."
    if not cfg.gate.enabled:
        if registered:
            client.set_model_version_tag(name, model_version, contracts.VALIDATION_STATUS_TAG, "passed")
        record_safely(
            lambda: log_report(
                f"{model_uri}: evaluation on the holdout",
                ["Not gated (gate.enabled=false): no alias was moved.", checked],
                candidate,
                None,
                labels,
                classes,
            )
        )
        if registered:
            record_safely(
                lambda: client.update_model_version(
                    name,
                    model_version,
                    description=f"**Not gated** (gate.enabled=false): validated, no alias moved. "
                    f"[Evaluation report]({report_page()})",
                )
            )
        outputs = {"validation_status": "passed", "gate_outcome": "not gated"}
        record_outputs(outputs)
        return outputs

    champion_outputs = []
    # One decision at a time per store: concurrent pipelines compare with the latest champion.
    with gate_lock(GATE_LOCK_WAIT) as gate:
        settled(client, name, gate)
        version_tags = client.get_model_version(name, model_version).tags
        champion = alias_version(client, name, cfg.registry.champion_alias)
        champion_version = None if champion is None else str(champion.version)
        # Compared first: a champion is never scored on a holdout with other columns.
        changed = (
            None
            if champion_version in (None, model_version)
            else schema_change(f"models:/{name}/{champion_version}", model)
        )
        decision = judge(
            cfg.gate,
            model_version,
            candidate_metrics,
            model_methods(model),
            version_tags.get("gate.reason", "") if version_tags.get("gate.outcome") == ROLLED_BACK else None,
            champion_version,
            champion_scorer(name, champion_version, features, labels, classes, champion_outputs),
            changed,
        )
        aliases = Aliases.of(cfg)
        change = decision_change(
            f"evaluate run {mlflow.active_run().info.run_id}: version {model_version} {decision.outcome}",
            model_version,
            decision,
            decision_tags(decision, candidate_metrics, mlflow.active_run().info.run_id),
            aliases,
            description=describe_markdown(decision, model_version, candidate_metrics, report_page()),
            challenger=alias_target(client, name, aliases.challenger),
        )
        if decision.champion_broken:  # recorded on it in the same change, before any alias moves
            change.tags[decision.champion_version] = broken_tags(
                decision.champion_broken, mlflow.active_run().info.run_id
            )
            log.error(
                "champion version %s of %s is broken: %s", decision.champion_version, name, decision.champion_broken
            )
        # Only a live pipeline decides: the record first, then the aliases, each alias write
        # after a check that the pipeline is alive and the lock held; stopped half way, undone.
        with signals_deferred():
            apply_change(client, name, change, alive=check_pipeline_alive, held=gate)
        champion_version = model_version if decision.promoted else decision.champion_version
    log.info("gate: version %s %s (%s)", model_version, decision.outcome, decision.reason)
    # The decision is made and on the registry (the aliases have moved): failing to
    # log its record or report from here on is a warning, not a failed step.
    record_safely(lambda: mlflow.log_dict({**asdict(decision), "outcome": decision.outcome}, "gate.json"))
    record_safely(
        lambda: log_report(
            f"{name} version {model_version}: evaluation on the holdout",
            [
                f"Gate: {decision.outcome} ({decision.reason}).",
                f"Gate thresholds: {describe_bounds(decision) or 'none applied'}.",
                checked,
            ],
            candidate,
            champion_outputs[0] if champion_outputs else None,
            labels,
            classes,
        )
    )
    outputs = {
        "validation_status": "passed",
        "gate_outcome": decision.outcome,
        "champion_version": champion_version or "",
    }
    if decision.champion_broken:
        outputs["broken_champion_version"] = decision.champion_version
    record_outputs(outputs)
    return outputs


def main(argv: Sequence[str] | None = None) -> None:
    parser = step_parser(__doc__)
    parser.add_argument("--model-uri", required=True, help="models:/<name>/<version> (models:/m-... ungated)")
    parser.add_argument("--reference-model-uri", required=True, help="native sklearn model from train")
    parser.add_argument("--holdout-uri", required=True, help="Parquet holdout logged by train")
    args, cfg = parse_step_args(parser, argv)
    contracts.configure_logging()
    contracts.configure_tracking()
    uris = (args.model_uri, args.reference_model_uri, args.holdout_uri)
    run_in_mlflow_run(lambda: run(*uris, cfg, args.overrides), cfg)


if __name__ == "__main__":
    run_as_process(main)
