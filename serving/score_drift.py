"""Drift of every batch ``score`` scores: each chunk, as the model's signature types it, is
counted into the reference profile of the model that scores it (``core.drift_check.BatchCheck``;
labelled rows scored with the batch's own outputs), and the check is recorded
(``core.drift_record``): on that model's drift run, whose metrics over checks are their
history, and, inside ``mlflow run -e score``, on the ``score`` run as well (metrics and
``drift_report.html``). The thresholds are ``conf/drift/``'s defaults.

A model packaged without a reference profile is scored as before, with one line saying so;
a check that cannot be recorded (the tracking store gone meanwhile) is one line on stderr,
and the scored output stays: scoring succeeded.
"""

from __future__ import annotations

from core import contracts
from core.drift_check import BatchCheck, compared_model
from core.reference import METADATA_KEY


def batch_check(model, exact: str, provenance: dict[str, str], source) -> BatchCheck | None:
    """A check of the batch against ``model``'s reference profile; None when it has none."""
    if not (getattr(getattr(model, "metadata", None), "metadata", None) or {}).get(METADATA_KEY):
        return None
    compared = compared_model(
        exact, provenance.get(contracts.SCORED_BY_VERSION_KEY), provenance[contracts.SCORED_BY_ID_KEY], model.metadata
    )
    return BatchCheck(compared, str(source))


def record(check: BatchCheck | None, in_project_run: bool, exact: str) -> list[str]:
    """Record the check; the lines that say what it found and where its report is (or that
    the model ``exact`` has no reference profile, for ``check`` None)."""
    if check is None:
        return [f"drift not checked: {exact} has no reference profile of its training data (packaged without one)"]
    from mlflow.exceptions import MlflowException

    from core.config import compose_config
    from core.drift_record import record_check, record_on_active_run
    from core.errors import StepError
    from core.locks import LockBusy

    settings = compose_config([]).drift
    result = check.result(settings)
    try:
        history = record_check(check.compared, result, settings)
        if in_project_run:
            record_on_active_run(result, settings, history)
    except (MlflowException, OSError, LockBusy, StepError) as err:  # StepError: a lock server down
        message = " ".join(str(getattr(err, "message", err)).split())[:300]
        return [
            f"drift against the training data of {result.model}: {result.summary()}",
            f"drift not recorded: {message}",
        ]
    return [
        f"drift against the training data of {result.model}: {result.summary()}",
        f"drift report: {history.report_uri} (check {history.number} on run {history.run_id})",
    ]
