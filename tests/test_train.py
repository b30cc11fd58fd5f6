"""The train step's pure functions and its MLflow outputs."""

from __future__ import annotations

import mlflow
import numpy as np
import pandas as pd
import pytest
from sklearn.datasets import load_iris
from sklearn.linear_model import LogisticRegression
from sklearn.model_selection import train_test_split

from steps import common, train


def test_iris_frame_has_features_and_target():
    frame = train.load_iris_frame()
    assert frame.shape == (150, 5)
    assert {"petal length (cm)", "petal width (cm)", "target"} <= set(frame.columns)


def test_select_columns_keeps_order():
    frame = pd.DataFrame({"a": [1.0], "b": [2.0], "y": [0]})
    assert list(train.select_columns(frame, ["b", "a"], "y").columns) == ["b", "a", "y"]


def test_select_columns_names_the_missing_column():
    frame = pd.DataFrame({"a": [1.0, 2.0, 3.0], "y": [0, 1, 0]})
    with pytest.raises(train.DataError, match=r"\['b'\]"):
        train.select_columns(frame, ["a", "b"], "y")


def test_split_reproduces_the_tutorial_holdout(cfg):
    """Same 30 rows, same order, as train_test_split on the tutorial's X[:, 2:]."""
    _, holdout = train.prepare_data(cfg.data)
    iris = load_iris()
    _, x_test, _, y_test = train_test_split(
        iris.data[:, 2:], iris.target, test_size=0.2, random_state=9001
    )
    assert len(holdout) == 30
    np.testing.assert_array_equal(holdout[list(cfg.data.features)].to_numpy(), x_test)
    np.testing.assert_array_equal(holdout[cfg.data.target].to_numpy(), y_test)


def test_test_size_override_changes_the_split():
    cfg = common.compose_config(["data.test_size=0.3"])
    train_rows, holdout = train.prepare_data(cfg.data)
    assert (len(train_rows), len(holdout)) == (105, 45)


def test_stratified_split_keeps_class_balance():
    cfg = common.compose_config(["data.stratify=true"])
    _, holdout = train.prepare_data(cfg.data)
    assert holdout[cfg.data.target].value_counts().tolist() == [10, 10, 10]


def test_fit_estimator_learns_feature_names():
    frame = pd.DataFrame({"a": [0.0, 1.0, 0.1, 0.9], "b": [0.0, 1.0, 0.2, 0.8], "y": [0, 1, 0, 1]})
    fitted = train.fit_estimator(LogisticRegression(), frame, ["a", "b"], "y")
    assert list(fitted.feature_names_in_) == ["a", "b"]


def test_run_logs_split_model_and_outputs(cfg):
    with mlflow.start_run() as active:
        outputs = train.run(cfg, ["model.C=1.0"])
    run = mlflow.get_run(active.info.run_id)
    assert run.data.params["model.C"] == "1.0"
    assert run.data.params["data.test_size"] == "0.2"
    assert run.data.tags[common.OVERRIDES_TAG] == "model.C=1.0"
    assert common.read_outputs(active.info.run_id) == outputs
    assert outputs["model_uri"].startswith("models:/")
    holdout = pd.read_parquet(mlflow.artifacts.download_artifacts(outputs["holdout_uri"]))
    assert len(holdout) == 30
    estimator = mlflow.sklearn.load_model(outputs["model_uri"])
    assert list(estimator.feature_names_in_) == list(cfg.data.features)
    contexts = sorted(i.tags[0].value for i in run.inputs.dataset_inputs)
    assert contexts == ["testing", "training"]
    config_text = mlflow.artifacts.load_text(f"runs:/{active.info.run_id}/{common.CONFIG_ARTIFACT}")
    assert "newton-cg" in config_text
