"""Where drift checks are recorded: one run per model compared (a registered version, or a
logged model) whose metrics over time are the history of its checks, and the ``score`` run
that made a check, when there is one.

The history run is named ``drift <name> v<version>`` and tagged ``drift.model_id`` (how it
is found), ``drift.model_uri``, ``drift.last_check``; it is in the experiment the model was
logged in, found or made under a file lock per tracking store (two checks at once make one
run, not two); the registered version gets tag ``drift.run_id`` naming it. Each check adds:

- metrics with step = the check's number, at the check's time: ``checks`` (the number),
  ``drift.share``, ``drift.features_drifted``, ``drift.<psi|jensen_shannon>.<feature>``,
  ``batch.rows`` and, with labels, ``batch.labelled_rows``, ``batch.<metric>`` and
  ``drift.drop.<metric>`` (``core.drift.DriftResult.metrics``; every ``drift.*`` metric
  grows with drift);
- artifacts ``checks/<number>/drift_report.html`` (``core.drift_report``) and
  ``checks/<number>/drift.json`` (every feature's statistic, p-value, bins and shares);
- its description: the last check, a link to its report, and the last ten checks.

As with unchanged reruns (``pipeline.unchanged``), a schedule's checks leave one run whose
charts are their history, not a run each.
"""

from __future__ import annotations

import json
import tempfile
import time
from dataclasses import asdict, dataclass
from pathlib import Path

from core.contracts import ui_run_page
from core.drift import DriftResult
from core.drift_check import Compared
from core.drift_report import REPORT_NAME, render
from core.locks import store_lock

MODEL_ID_TAG = "drift.model_id"
MODEL_URI_TAG = "drift.model_uri"
LAST_CHECK_TAG = "drift.last_check"
VERSION_RUN_TAG = "drift.run_id"  # on the registered version: its history run
CHECKS_METRIC = "checks"
RESULT_NAME = "drift.json"
LOCK_WAIT = 120  # seconds; a check's record takes well under one
SHOWN_CHECKS = 10


@dataclass(frozen=True)
class Recorded:
    run_id: str
    experiment_id: str
    number: int
    report: str  # the report's path in the run's artifacts

    @property
    def report_uri(self) -> str:
        return f"runs:/{self.run_id}/{self.report}"


def stamp(moment: float) -> str:
    return time.strftime("%Y-%m-%d %H:%M:%S UTC", time.gmtime(moment))


def history_run(client, compared: Compared):
    """The run that holds the checks of ``compared``, made now if there is none."""
    from mlflow.utils.mlflow_tags import MLFLOW_RUN_NAME

    found = client.search_runs(
        [compared.experiment_id], filter_string=f"tags.`{MODEL_ID_TAG}` = '{compared.model_id}'", max_results=1
    )
    if found:
        return found[0]
    name = f"drift {compared.name} v{compared.version}" if compared.version else f"drift {compared.model_id}"
    run = client.create_run(
        compared.experiment_id,
        tags={MLFLOW_RUN_NAME: name, MODEL_ID_TAG: compared.model_id, MODEL_URI_TAG: compared.uri},
    )
    client.set_terminated(run.info.run_id, "FINISHED")
    if compared.version:
        client.set_model_version_tag(compared.name, compared.version, VERSION_RUN_TAG, run.info.run_id)
    return client.get_run(run.info.run_id)


def result_json(result: DriftResult, checked_at: str, decision: str | None) -> str:
    found = asdict(result) | {"checked_at": checked_at, "share": result.share, "drops": result.drops()}
    if decision:
        found["decision"] = decision
    return json.dumps(found, indent=1, default=str)


def description(client, run, compared: Compared, recorded: Recorded, result: DriftResult, checked_at: str) -> str:
    """The history run's description: the last check, then the last :data:`SHOWN_CHECKS`."""
    shares = sorted(client.get_metric_history(run.info.run_id, "drift.share"), key=lambda m: -m.step)
    rows = {m.step: int(m.value) for m in client.get_metric_history(run.info.run_id, "batch.rows")}
    link = ui_run_page(recorded.experiment_id, recorded.run_id, recorded.report)
    lines = [
        f"**Drift checks** of {compared.label} against its training data ({recorded.number} so far; "
        f"metric `drift.share` and the others over checks are their history).",
        "",
        f"Last, check {recorded.number} at {checked_at}: {Path(result.source).name}, {result.rows} rows: "
        f"{result.summary()}. [Report]({link})",
        "",
        "| check | when | rows | drift.share | report |",
        "|---|---|---|---|---|",
    ]
    for metric in shares[:SHOWN_CHECKS]:
        report = ui_run_page(recorded.experiment_id, recorded.run_id, f"checks/{metric.step:04d}/{REPORT_NAME}")
        lines.append(
            f"| {metric.step} | {stamp(metric.timestamp / 1000)} | {rows.get(metric.step, '')} | "
            f"{metric.value:.2f} | [report]({report}) |"
        )
    return "\n".join(lines)


def record_check(compared: Compared, result: DriftResult, settings, decision: str | None = None) -> Recorded:
    """Add a check to the history run of ``compared``; return where it went."""
    from mlflow import MlflowClient
    from mlflow.entities import Metric
    from mlflow.utils.mlflow_tags import MLFLOW_RUN_NOTE

    client = MlflowClient()
    now = time.time()
    checked_at = stamp(now)
    with store_lock("drift", LOCK_WAIT):
        run = history_run(client, compared)
        number = int(run.data.metrics.get(CHECKS_METRIC, 0)) + 1
        folder = f"checks/{number:04d}"
        found = result.metrics() | {CHECKS_METRIC: float(number)}
        millis = int(now * 1000)
        client.log_batch(run.info.run_id, metrics=[Metric(k, v, millis, number) for k, v in found.items()])
        with tempfile.TemporaryDirectory(prefix="drift-") as tmp:
            (Path(tmp) / REPORT_NAME).write_text(render(result, settings, checked_at, decision))
            (Path(tmp) / RESULT_NAME).write_text(result_json(result, checked_at, decision))
            client.log_artifacts(run.info.run_id, tmp, folder)
        recorded = Recorded(run.info.run_id, compared.experiment_id, number, f"{folder}/{REPORT_NAME}")
        client.set_tag(run.info.run_id, LAST_CHECK_TAG, f"{checked_at}: {result.summary()}"[:4000])
        client.set_tag(
            run.info.run_id, MLFLOW_RUN_NOTE, description(client, run, compared, recorded, result, checked_at)
        )
    return recorded


def record_on_active_run(result: DriftResult, settings, history: Recorded | None = None) -> str:
    """The check's metrics and report on the active run (a ``score`` run); its description
    links the report (and the history run). Returns the report's artifact path."""
    import mlflow
    from mlflow.utils.mlflow_tags import MLFLOW_RUN_NOTE

    checked_at = stamp(time.time())
    run = mlflow.active_run()
    mlflow.log_metrics(result.metrics())
    with tempfile.TemporaryDirectory(prefix="drift-") as tmp:
        (Path(tmp) / REPORT_NAME).write_text(render(result, settings, checked_at))
        (Path(tmp) / "drift_check.json").write_text(result_json(result, checked_at, None))
        mlflow.log_artifacts(tmp)
    note = f"**Drift** of this batch against the training data of {result.model}: {result.summary()}. "
    note += f"[Report]({ui_run_page(run.info.experiment_id, run.info.run_id, REPORT_NAME)})"
    if history is not None:
        note += f"; every check of this model: [its drift run]({ui_run_page(history.experiment_id, history.run_id)})"
    mlflow.set_tag(MLFLOW_RUN_NOTE, note)
    return REPORT_NAME
