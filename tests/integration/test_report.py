"""The evaluation report: real PNG images and one HTML page, with the champion beside the new version."""

from __future__ import annotations

from html.parser import HTMLParser
from pathlib import Path

import matplotlib.image
import mlflow
import pytest

from core import metrics, report
from core.config import compose_config
from steps import evaluate
from tests.support.factories import run_chain

CURVES = ["roc_curves.png", "precision_recall_curves.png", "calibration_curves.png"]


class Page(HTMLParser):
    """Collects what a browser would show: images, table cells, headings."""

    def __init__(self):
        super().__init__()
        self.images, self.cells, self.text = [], [], []
        self._in_cell = False

    def handle_starttag(self, tag, attrs):
        if tag == "img":
            self.images.append(dict(attrs)["src"])
        self._in_cell = tag in ("td", "th")

    def handle_data(self, data):
        self.text.append(data)
        if self._in_cell and data.strip():
            self.cells.append(data.strip())


def evaluate_chain(cfg):
    outputs = run_chain(cfg)
    with mlflow.start_run() as active:
        evaluate.run(outputs["registered_model_uri"], outputs["model_uri"], outputs["holdout_uri"], cfg)
    return Path(mlflow.artifacts.download_artifacts(f"runs:/{active.info.run_id}/{report.REPORT_DIR}"))


def read_page(folder: Path) -> Page:
    page = Page()
    page.feed((folder / "report.html").read_text())
    return page


def assert_valid_png(path: Path):
    assert path.read_bytes()[:8] == b"\x89PNG\r\n\x1a\n", path
    height, width, _ = matplotlib.image.imread(path).shape
    assert width >= 300 and height >= 200, path


def test_first_version_gets_plots_and_a_page_without_champion(champion):
    # The report of the real pipeline's evaluate run, which promoted the first version.
    folder = Path(mlflow.artifacts.download_artifacts(f"runs:/{champion['evaluate_run_id']}/{report.REPORT_DIR}"))
    files = {p.name for p in folder.iterdir()}
    assert files == {"confusion_matrix.png", *CURVES, "report.html", "metrics.json"}
    for name in ["confusion_matrix.png", *CURVES]:
        assert_valid_png(folder / name)
    page = read_page(folder)
    assert len(page.images) == 4 and all(src.startswith("data:image/png;base64,") for src in page.images)
    assert {"accuracy", "log_loss", "roc_auc_ovr", "version 1 (new)"} <= set(page.cells)
    assert "champion" not in " ".join(page.cells)


def test_second_version_is_shown_beside_the_champion(champion):
    # A tree ensemble, whose native reference model holds scikit-learn's Tree objects.
    folder = evaluate_chain(compose_config(["model=random_forest"]))
    assert "metrics_comparison.png" in {p.name for p in folder.iterdir()}
    assert_valid_png(folder / "metrics_comparison.png")
    page = read_page(folder)
    assert {"version 2 (new)", "version 1 (champion)", "difference"} <= set(page.cells)
    assert len(page.images) == 5
    # The comparison is wider than a single model's confusion matrix: two panels.
    assert matplotlib.image.imread(folder / "confusion_matrix.png").shape[1] >= 800
    text = " ".join(page.text)
    assert "Gate:" in text and "validation checks passed" in text
    assert "Gate thresholds: accuracy >= " in text and "log_loss <= " in text
    assert "ROC curves (one-vs-rest)" in text


def test_model_without_probabilities_gets_a_confusion_matrix_and_a_note(cfg):
    folder = evaluate_chain(compose_config(["model=svc", "gate=labels_only"]))
    assert {p.name for p in folder.iterdir()} == {"confusion_matrix.png", "report.html", "metrics.json"}
    assert "offers no predict_proba" in " ".join(read_page(folder).text)


def test_metrics_table_has_one_column_per_model():
    import numpy as np

    a = metrics.ModelOutputs("a", np.array([0, 1]), None, {"accuracy": 0.9})
    b = metrics.ModelOutputs("b", np.array([0, 1]), None, {"accuracy": 0.8, "f1_macro": 0.7})
    table = report.metrics_table([a, b])
    assert list(table.columns) == ["a", "b", "difference"]
    assert table.loc["accuracy", "difference"] == pytest.approx(0.1)
    assert np.isnan(table.loc["f1_macro", "a"])


def test_a_report_that_cannot_be_logged_does_not_fail_the_decided_step(cfg, monkeypatch):
    def broken(*args, **kwargs):
        raise OSError("artifact store unreachable")

    monkeypatch.setattr(evaluate, "log_report", broken)
    outputs = run_chain(cfg)
    with mlflow.start_run() as active:
        result = evaluate.run(outputs["registered_model_uri"], outputs["model_uri"], outputs["holdout_uri"], cfg)
    assert result["gate_outcome"] == "promoted"
    run = mlflow.get_run(active.info.run_id)
    assert run.data.tags["pipeline.report_error"] == "OSError: artifact store unreachable"
    assert mlflow.artifacts.load_text(f"runs:/{active.info.run_id}/gate.json")  # logged before the report


def test_per_class_curves_are_skipped_beyond_a_dozen_classes():
    import numpy as np

    classes = list(range(report.MAX_CURVE_CLASSES + 1))
    labels = np.array(classes * 2)
    proba = np.full((len(labels), len(classes)), 1 / len(classes))
    model = metrics.ModelOutputs("new", labels, proba, {"accuracy": 1.0})
    assert list(report.figures(model, None, labels, classes)) == ["confusion_matrix.png"]
