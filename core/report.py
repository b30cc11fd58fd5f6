"""The evaluation report ``evaluate`` logs: plots and one HTML page a person opens
in the MLflow UI before trusting a promotion.

Built with scikit-learn's own displays (``ConfusionMatrixDisplay``,
``RocCurveDisplay``, ``PrecisionRecallDisplay``, ``CalibrationDisplay``) from the
registered model's own outputs on the holdout. Curves are one-vs-rest, one panel
per class. When there is a champion, its curves are drawn on the same axes
(dashed) and its metrics sit beside the new version's.

Artifacts, under ``report/`` of the evaluate run:
- ``confusion_matrix.png`` (new version, and champion beside it);
- ``roc_curves.png``, ``precision_recall_curves.png``, ``calibration_curves.png``
  (only for models that offer ``predict_proba``);
- ``metrics_comparison.png`` (with a champion);
- ``metrics.json``: the metrics table, logged with ``mlflow.log_table``;
- ``report.html``: all of the above on one self-contained page (images inline).
"""

from __future__ import annotations

import base64
import html
import io
import logging
import tempfile
from collections.abc import Mapping, Sequence
from pathlib import Path

import numpy as np
import pandas as pd

from core.contracts import ui_run_page
from core.errors import stored
from core.metrics import ModelOutputs

REPORT_DIR = "report"
CALIBRATION_BINS = 5
MAX_CURVE_CLASSES = 12  # one panel per class; beyond this the figures are unreadable
CAPTIONS = {
    "confusion_matrix.png": "Confusion matrix",
    "roc_curves.png": "ROC curves (one-vs-rest)",
    "precision_recall_curves.png": "Precision-recall curves (one-vs-rest)",
    "calibration_curves.png": "Calibration curves (one-vs-rest)",
    "metrics_comparison.png": "Metrics: new version vs champion",
}

log = logging.getLogger(__name__)


def _figure(panels: int, width: float = 4.2, height: float = 3.8):
    import matplotlib

    matplotlib.use("Agg")  # no screen; must precede pyplot
    import matplotlib.pyplot as plt

    fig, axes = plt.subplots(1, panels, figsize=(width * panels, height), squeeze=False)
    return fig, list(axes[0])


def confusion_matrices(models: Sequence[ModelOutputs], labels, classes):
    from sklearn.metrics import ConfusionMatrixDisplay

    fig, axes = _figure(len(models))
    for model, ax in zip(models, axes, strict=False):
        ConfusionMatrixDisplay.from_predictions(labels, model.predicted, labels=list(classes), ax=ax, colorbar=False)
        ax.set_title(model.name)
    fig.tight_layout()
    return fig


def _per_class_curves(models: Sequence[ModelOutputs], labels, classes, draw, title: str, axis_labels):
    """One panel per class; each model's one-vs-rest curve for that class, overlaid."""
    fig, axes = _figure(len(classes))
    truth = np.asarray(labels)
    for index, (label, ax) in enumerate(zip(classes, axes, strict=False)):
        for rank, model in enumerate(models):
            style = {"linestyle": "-" if rank == 0 else "--"}
            draw(truth == label, model.proba[:, index], model.name, ax, style)
        ax.set_title(f"{title}: class {label} vs rest")
        # The displays name the positive label of the boolean one-vs-rest target ("1").
        ax.set_xlabel(axis_labels[0])
        ax.set_ylabel(axis_labels[1])
    fig.tight_layout()
    return fig


def roc_curves(models, labels, classes):
    from sklearn.metrics import RocCurveDisplay

    def draw(truth, score, name, ax, style):
        RocCurveDisplay.from_predictions(truth, score, name=name, ax=ax, curve_kwargs=style)

    return _per_class_curves(models, labels, classes, draw, "ROC", ("False positive rate", "True positive rate"))


def precision_recall_curves(models, labels, classes):
    from sklearn.metrics import PrecisionRecallDisplay

    def draw(truth, score, name, ax, style):
        PrecisionRecallDisplay.from_predictions(truth, score, name=name, ax=ax, curve_kwargs=style)

    return _per_class_curves(models, labels, classes, draw, "Precision-recall", ("Recall", "Precision"))


def calibration_curves(models, labels, classes):
    from sklearn.calibration import CalibrationDisplay

    def draw(truth, score, name, ax, style):
        CalibrationDisplay.from_predictions(truth, score, n_bins=CALIBRATION_BINS, name=name, ax=ax, **style)

    return _per_class_curves(
        models, labels, classes, draw, "Calibration", ("Mean predicted probability", "Fraction of positives")
    )


def metrics_table(models: Sequence[ModelOutputs]) -> pd.DataFrame:
    """Metric per row, model per column; with two models, the new one minus the champion."""
    names = sorted({name for model in models for name in model.metrics})
    table = pd.DataFrame(
        {model.name: [model.metrics.get(name, np.nan) for name in names] for model in models},
        index=pd.Index(names, name="metric"),
    )
    if len(models) == 2:
        table["difference"] = table.iloc[:, 0] - table.iloc[:, 1]
    return table


def metrics_comparison(models: Sequence[ModelOutputs]):
    table = metrics_table(models)[[model.name for model in models]]
    fig, (ax,) = _figure(1, width=9.0, height=1.2 + 0.7 * len(table))
    table.plot.barh(ax=ax)
    for container in ax.containers:
        ax.bar_label(container, fmt="%.4f", fontsize=8, padding=2)
    ax.set_xlim(right=ax.get_xlim()[1] * 1.15)  # room for the labels
    ax.invert_yaxis()
    ax.set_xlabel("value on the holdout")
    ax.set_title("New version vs champion")
    ax.legend(loc="upper left", bbox_to_anchor=(1.01, 1.0), fontsize=8)
    fig.tight_layout()
    return fig


def figures(candidate: ModelOutputs, champion: ModelOutputs | None, labels, classes) -> dict:
    """The report's figures by file name; curves only where every model drawn has probabilities."""
    models = [candidate] + ([champion] if champion is not None else [])
    with_proba = [model for model in models if model.proba is not None]
    result = {"confusion_matrix.png": confusion_matrices(models, labels, classes)}
    if candidate.proba is not None and len(classes) <= MAX_CURVE_CLASSES:
        for file_name, plot in (
            ("roc_curves.png", roc_curves),
            ("precision_recall_curves.png", precision_recall_curves),
            ("calibration_curves.png", calibration_curves),
        ):
            result[file_name] = plot(with_proba, labels, classes)
    if champion is not None:
        result["metrics_comparison.png"] = metrics_comparison(models)
    return result


def png_bytes(fig) -> bytes:
    import matplotlib.pyplot as plt

    buffer = io.BytesIO()
    fig.savefig(buffer, format="png", dpi=100)
    plt.close(fig)
    return buffer.getvalue()


def render_html(
    title: str, summary: Sequence[str], table: pd.DataFrame, images: Mapping[str, bytes], notes: Sequence[str] = ()
) -> str:
    """One self-contained page: summary lines, the metrics table, every image inline."""
    parts = [
        "<!DOCTYPE html>",
        '<html lang="en"><head><meta charset="utf-8">',
        f"<title>{html.escape(title)}</title>",
        "<style>body{font-family:sans-serif;margin:2em;max-width:1400px}"
        "table{border-collapse:collapse}td,th{border:1px solid #ccc;padding:4px 10px;text-align:right}"
        "th:first-child,td:first-child{text-align:left}img{max-width:100%;margin:1em 0}</style>",
        "</head><body>",
        f"<h1>{html.escape(title)}</h1>",
        *(f"<p>{html.escape(line)}</p>" for line in summary),
        "<h2>Metrics on the holdout</h2>",
        table.to_html(float_format=lambda value: f"{value:.4f}", na_rep="n/a"),
        *(f"<p><em>{html.escape(note)}</em></p>" for note in notes),
    ]
    for file_name, data in images.items():
        caption = CAPTIONS.get(file_name, file_name)
        encoded = base64.b64encode(data).decode("ascii")
        parts += [
            f"<h2>{html.escape(caption)}</h2>",
            f'<img alt="{html.escape(caption)}" src="data:image/png;base64,{encoded}">',
        ]
    parts.append("</body></html>")
    return "\n".join(parts)


def log_report(
    title: str, summary: Sequence[str], candidate: ModelOutputs, champion: ModelOutputs | None, labels, classes
) -> list[str]:
    """Build the report and log it under ``report/`` of the active run; return the file names."""
    import mlflow

    images = {name: png_bytes(fig) for name, fig in figures(candidate, champion, labels, classes).items()}
    table = metrics_table([candidate] + ([champion] if champion is not None else []))
    notes = []
    if candidate.proba is None:
        notes.append("No ROC, precision-recall or calibration curves: this model offers no predict_proba.")
    elif len(classes) > MAX_CURVE_CLASSES:
        notes.append(f"No per-class curves: {len(classes)} classes (more than {MAX_CURVE_CLASSES}).")
    elif champion is not None and champion.proba is None:
        notes.append("The champion offers no predict_proba: its curves are not drawn.")
    with tempfile.TemporaryDirectory() as tmp:
        for name, data in images.items():
            (Path(tmp) / name).write_bytes(data)
        (Path(tmp) / "report.html").write_text(render_html(title, summary, table, images, notes))
        mlflow.log_artifacts(tmp, REPORT_DIR)
    mlflow.log_table(table.reset_index(), f"{REPORT_DIR}/metrics.json")
    return [*images, "report.html", "metrics.json"]


def report_page(artifact: str = f"{REPORT_DIR}/report.html") -> str:
    """This run's artifact ``artifact`` in the MLflow UI (a relative link for descriptions)."""
    import mlflow

    run = mlflow.active_run().info
    return ui_run_page(run.experiment_id, run.run_id, artifact)


def record_safely(log_artifacts) -> None:
    """Run ``log_artifacts``; a failure (an upload error, a figure too large) becomes a
    warning and tag ``pipeline.report_error`` instead of failing a step whose outcome stands."""
    import mlflow

    try:
        log_artifacts()
    except Exception as err:  # noqa: BLE001 - any failure here must not fail the step
        log.warning("could not log the evaluation record: %s: %s", type(err).__name__, err)
        mlflow.set_tag("pipeline.report_error", stored(f"{type(err).__name__}: {err}", 4000))
