"""A batch against the champion's reference profile (core.drift_check): the profile travels
with the registered version; iris rows of one species drift where a random sample does
not; labelled rows give the champion's metrics beside its holdout's; a bad batch is one line."""

from __future__ import annotations

import json

import mlflow
import numpy as np
import pandas as pd
import pytest
from sklearn.datasets import load_iris

from core import reference
from core.drift_check import check_file
from core.reference import DriftInputError
from core.tabular import TableError

CHAMPION = "models:/iris-classifier@champion"


def iris() -> pd.DataFrame:
    return load_iris(as_frame=True).frame


def test_the_reference_profile_travels_with_the_registered_version(champion):
    train_run = champion["holdout_uri"].removeprefix("runs:/").split("/")[0]
    logged = mlflow.artifacts.load_text(f"runs:/{train_run}/{reference.REFERENCE_ARTIFACT}")
    model = mlflow.pyfunc.load_model(champion["registered_model_uri"])
    assert model.metadata.metadata[reference.METADATA_KEY] == logged
    profile = json.loads(logged)
    assert profile["rows"] == 120 and profile["target"] == "target"
    assert set(profile["features"]) == {"petal length (cm)", "petal width (cm)"}
    assert mlflow.get_run(train_run).data.tags[f"artifact.sha256.{reference.REFERENCE_ARTIFACT}"]


def test_one_species_drifts_where_a_random_sample_does_not(champion, cfg, tmp_path):
    frame = iris()
    setosa = tmp_path / "setosa.csv"
    frame[frame.target == 0].drop(columns="target").to_csv(setosa, index=False)
    compared, shifted = check_file(CHAMPION, setosa, cfg.drift)
    assert compared.version == "1" and compared.label == "iris-classifier version 1"
    assert shifted.share == 1.0 and shifted.rows == 50 and shifted.labelled_rows == 0
    assert {f.name for f in shifted.drifted} == {"petal length (cm)", "petal width (cm)"}

    sample = tmp_path / "sample.parquet"
    frame.sample(75, random_state=3).to_parquet(sample)
    _, unshifted = check_file(CHAMPION, sample, cfg.drift)
    assert unshifted.share == 0.0 and unshifted.rows == 75
    # Labelled: the champion's metrics on the batch beside those of its holdout.
    assert unshifted.labelled_rows == 75 and set(unshifted.holdout_metrics) >= {"accuracy", "log_loss"}
    assert unshifted.batch_metrics["accuracy"] > 0.9 and unshifted.drops()["accuracy"] < cfg.drift.retrain.max_drop


def test_labels_that_moved_show_as_a_drop_of_the_champions_accuracy(champion, cfg, tmp_path):
    frame = iris().sample(90, random_state=0)
    frame["target"] = (frame["target"] + 1) % 3  # the same flowers, named otherwise
    path = tmp_path / "relabelled.csv"
    frame.to_csv(path, index=False)
    _, result = check_file(CHAMPION, path, cfg.drift)
    assert result.share == 0.0  # the features did not move
    assert result.batch_metrics["accuracy"] < 0.1 and result.drops()["accuracy"] > 0.8
    assert result.drops()["log_loss"] > 1.0 and result.metrics()["drift.drop.accuracy"] > 0.8


def test_chunked_reading_gives_the_statistics_of_one_read(champion, cfg, tmp_path):
    frame = iris()
    frame.loc[frame.index % 7 == 0, "target"] = np.nan  # some rows unlabelled
    path = tmp_path / "batch.csv"
    frame.to_csv(path, index=False)
    cfg.drift.chunk_size = 11
    _, chunked = check_file(CHAMPION, path, cfg.drift)
    cfg.drift.chunk_size = 1000
    _, whole = check_file(CHAMPION, path, cfg.drift)
    assert chunked == whole and whole.labelled_rows == 150 - 22


@pytest.mark.parametrize(
    "content, error, message",
    [
        (
            "sepal length (cm),petal width (cm)\n1.0,0.2\n",
            DriftInputError,
            r"missing feature column\(s\) \['petal length",
        ),
        ("", TableError, "is empty: it has no header"),
        ("petal length (cm),petal width (cm)\n", DriftInputError, "has no rows"),
        ("petal length (cm),petal width (cm)\n1.4,0.2\nlong,0.2\n", Exception, r"row 1, column 'petal length \(cm\)'"),
    ],
)
def test_a_batch_that_cannot_be_compared_is_refused_naming_what_is_wrong(
    champion, cfg, tmp_path, content, error, message
):
    path = tmp_path / "bad.csv"
    path.write_text(content)
    with pytest.raises(error, match=message):
        check_file(CHAMPION, path, cfg.drift)
