"""Drift checks recorded (ops.drift, batch scoring, core.drift_record): one run per version
holds the history of its checks; each check's report is one self-contained HTML page; a
batch that cannot be compared is one line and exit 1, with nothing recorded."""

from __future__ import annotations

import html.parser
from pathlib import Path

import mlflow
import pandas as pd
import pytest
from mlflow import MlflowClient
from sklearn.datasets import load_iris

from core.drift_record import MODEL_ID_TAG, VERSION_RUN_TAG
from ops import drift
from serving import batch

NAME = "iris-classifier"


class Page(html.parser.HTMLParser):
    """What a check's page holds: its tags, the feature table's rows, external references."""

    def __init__(self):
        super().__init__()
        self.tags: list[str] = []
        self.table: str | None = None
        self.rows: list[list[str]] = []
        self.external: list[str] = []

    def handle_starttag(self, tag, attrs):
        self.tags.append(tag)
        attrs = dict(attrs)
        if tag == "table":
            self.table = attrs.get("id")
        if tag == "tr" and self.table == "features":
            self.rows.append([])
        self.external += [v for k, v in attrs.items() if k in ("src", "href") and v]

    def handle_data(self, data):
        if self.table == "features" and self.rows and self.tags[-1] == "td":
            self.rows[-1].append(data)


def parsed(path: Path) -> Page:
    page = Page()
    page.feed(path.read_text())
    page.close()
    return page


def iris() -> pd.DataFrame:
    return load_iris(as_frame=True).frame


def drift_runs():
    return mlflow.search_runs(
        search_all_experiments=True, filter_string=f"tags.`{MODEL_ID_TAG}` != ''", output_format="list"
    )


@pytest.fixture
def batches(tmp_path):
    frame = iris()
    setosa, sample = tmp_path / "setosa.csv", tmp_path / "sample.parquet"
    frame[frame.target == 0].to_csv(setosa, index=False)
    frame.sample(75, random_state=3).to_parquet(sample)
    return setosa, sample


def test_checks_of_a_version_are_one_run_whose_metrics_are_their_history(champion, batches, tmp_path, capsys):
    setosa, sample = batches
    drift.main(["--input", str(setosa), "--report", str(tmp_path / "setosa.html")])
    out = capsys.readouterr().out.splitlines()
    assert out[0].startswith(f"drift: {setosa} (50 rows) against iris-classifier version 1: 2 of 2 features drifted")
    assert out[1].startswith("drift: report runs:/") and out[1].endswith(")")
    drift.main(["--input", str(sample)])
    assert "0 of 2 features drifted (share 0.00)" in capsys.readouterr().out

    (run,) = drift_runs()  # one run for version 1, whatever the number of checks
    assert run.info.run_name == "drift iris-classifier v1"
    assert MlflowClient().get_model_version(NAME, "1").tags[VERSION_RUN_TAG] == run.info.run_id
    client = MlflowClient()
    shares = sorted((m.step, m.value) for m in client.get_metric_history(run.info.run_id, "drift.share"))
    assert shares == [(1, 1.0), (2, 0.0)]
    psi = sorted((m.step, m.value) for m in client.get_metric_history(run.info.run_id, "drift.psi.petal length _cm_"))
    assert psi[0][1] > 1.0 > 0.2 > psi[1][1]
    assert run.data.metrics["checks"] == 2 and run.data.metrics["batch.labelled_rows"] == 75
    assert run.data.metrics["drift.drop.accuracy"] < 0.05
    note = run.data.tags["mlflow.note.content"]
    assert "Last, check 2" in note and "checks/0002/drift_report.html" in note and "| 1 |" in note
    artifacts = {a.path for a in client.list_artifacts(run.info.run_id, "checks/0001")}
    assert artifacts == {"checks/0001/drift_report.html", "checks/0001/drift.json"}


def test_the_report_is_one_self_contained_page_with_the_feature_table(champion, batches, tmp_path, capsys):
    setosa, _ = batches
    report = tmp_path / "report.html"
    drift.main(["--input", str(setosa), "--report", str(report)])
    page = parsed(report)
    assert "script" not in page.tags and page.external == []  # no JS, nothing fetched
    assert page.tags.count("svg") == 2  # both features drawn, reference against batch
    names = [row[0] for row in page.rows if row]
    assert names == ["petal width (cm)", "petal length (cm)"] or names == ["petal length (cm)", "petal width (cm)"]
    assert all(row[6] == "yes" for row in page.rows if row)
    # Labelled rows: the champion's metrics beside its holdout's.
    assert '<table id="metrics">' in report.read_text() and "accuracy" in report.read_text()


@pytest.mark.parametrize(
    "content, message",
    [
        ("sepal length (cm),petal width (cm)\n1.0,0.2\n", "missing feature column(s) ['petal length (cm)']"),
        ("", "is empty: it has no header"),
        ("petal length (cm),petal width (cm)\n1.4,0.2\nlong,0.2\n", "row 1, column 'petal length (cm)'"),
    ],
)
def test_a_batch_that_cannot_be_compared_is_one_line_and_nothing_is_recorded(
    champion, tmp_path, capsys, content, message
):
    path = tmp_path / "bad.csv"
    path.write_text(content)
    with pytest.raises(SystemExit) as exit_info:
        drift.main(["--input", str(path)])
    assert exit_info.value.code == 1
    err = capsys.readouterr().err
    assert err.startswith("drift: error: ") and message in err and len(err.strip().splitlines()) == 1
    assert drift_runs() == []


def test_scoring_a_batch_checks_its_drift_and_records_it_on_the_versions_run(champion, batches, tmp_path, capsys):
    setosa, _ = batches
    batch.main(["--input", str(setosa), "--output", str(tmp_path / "out.csv"), "--no-progress"])
    out = capsys.readouterr().out
    assert "score: drift against the training data of iris-classifier version 1: 2 of 2 features drifted" in out
    (run,) = drift_runs()
    assert run.data.metrics["drift.share"] == 1.0 and run.data.metrics["batch.labelled_rows"] == 50
    # Labelled rows scored with predict_proba: labels from the probabilities, and a log loss.
    assert {"batch.accuracy", "batch.log_loss", "drift.drop.log_loss"} <= set(run.data.metrics)
    assert len(pd.read_csv(tmp_path / "out.csv")) == 50

    batch.main(["--input", str(setosa), "--output", str(tmp_path / "out2.csv"), "--no-progress", "--no-drift"])
    assert "drift" not in capsys.readouterr().out
    assert drift_runs()[0].data.metrics["checks"] == 1


def test_a_model_packaged_without_a_reference_profile_is_scored_and_says_so(cfg, tmp_path, capsys):
    from sklearn.linear_model import LogisticRegression

    from tests.support.factories import package, rows

    info, _, _ = package(LogisticRegression(max_iter=5000), tmp_path, cfg)
    source = tmp_path / "in.csv"
    rows(20).to_csv(source, index=False)
    batch.main(["--input", str(source), "--output", str(tmp_path / "out.csv"), "--model-uri", info.model_uri])
    out = capsys.readouterr().out
    assert f"score: drift not checked: {info.model_uri} has no reference profile of its training data" in out
    with pytest.raises(SystemExit) as exit_info:
        drift.main(["--input", str(source), "--model-uri", info.model_uri])
    assert exit_info.value.code == 1 and "has no reference profile" in capsys.readouterr().err
    assert drift_runs() == []


def test_a_store_that_cannot_be_opened_is_one_line_and_exit_69(tmp_path, monkeypatch, capsys):
    source = tmp_path / "in.csv"
    iris().to_csv(source, index=False)
    monkeypatch.setenv("MLFLOW_TRACKING_URI", "sqlite:////proc/nope/mlflow.db")
    with pytest.raises(SystemExit) as exit_info:
        drift.main(["--input", str(source)])
    assert exit_info.value.code == 69
    err = capsys.readouterr().err
    assert (
        err.startswith("drift: tracking store sqlite:////proc/nope/mlflow.db cannot be opened")
        and len(err.strip().splitlines()) == 1
    )
    mlflow.set_tracking_uri(None)
