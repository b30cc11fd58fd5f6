"""The train step's pure functions and its MLflow outputs."""

from __future__ import annotations

import mlflow
import pandas as pd
import pytest
from sklearn.linear_model import LogisticRegression

from core import contracts
from pipeline.processes.step import read_outputs
from steps import train


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
    assert run.data.tags[contracts.OVERRIDES_TAG] == "model.C=1.0"
    assert read_outputs(active.info.run_id) == outputs
    assert outputs["model_uri"].startswith("models:/")
    holdout = pd.read_parquet(mlflow.artifacts.download_artifacts(outputs["holdout_uri"]))
    assert len(holdout) == 30
    estimator = mlflow.sklearn.load_model(outputs["model_uri"])
    assert list(estimator.feature_names_in_) == list(cfg.data.features)
    assert run.data.tags[contracts.DATA_ROWS_TAG] == "150"
    assert len(run.data.tags[contracts.DATA_DIGEST_TAG]) == 64
    contexts = sorted(i.tags[0].value for i in run.inputs.dataset_inputs)
    assert contexts == ["testing", "training"]
    # Each split's dataset digest is that of its rows (train.frame_digest, not MLflow's own).
    digests = {i.tags[0].value: i.dataset.digest for i in run.inputs.dataset_inputs}
    assert digests["testing"] == train.frame_digest(holdout)
    assert digests["training"] != digests["testing"]
    config_text = mlflow.artifacts.load_text(f"runs:/{active.info.run_id}/{contracts.CONFIG_ARTIFACT}")
    assert "newton-cg" in config_text


def test_a_parameter_read_from_a_secret_variable_is_logged_masked(cfg, monkeypatch):
    # Any setting may read a variable; here the loader's (a secret by its variable's name).
    monkeypatch.setenv("DATA_LOADER_SECRET", cfg.data.loader._target_)
    cfg.data.loader._target_ = "${oc.env:DATA_LOADER_SECRET}"
    with mlflow.start_run() as active:
        train.run(cfg, [])
    params = mlflow.get_run(active.info.run_id).data.params
    assert params["data.loader._target_"] == "***" and params["model.C"] == str(cfg.model.C)


def test_frame_digest_follows_values_index_names_and_types():
    frame = pd.DataFrame({"a": [0.5, 1.5, 2.5], "b": ["x", "y", None], "y": [0, 1, 0]})
    digest = train.frame_digest(frame)
    assert digest == train.frame_digest(frame.copy()) and len(digest) == 16
    changed = [
        frame.assign(a=[0.5, 1.5, 2.6]),  # a value
        frame.set_axis([0, 1, 3]),  # the index: which rows of the source
        frame.rename(columns={"b": "c"}),  # a column's name
        frame.astype({"a": "float32"}),  # a column's type
        frame.head(2),  # a row fewer
    ]
    assert len({digest, *map(train.frame_digest, changed)}) == len(changed) + 1
    assert train.frame_digest(pd.DataFrame({"a": [[1], [2]]})) is None  # MLflow's own digest then


def test_dataset_logging_is_retried_after_a_conflict(monkeypatch):
    from mlflow.exceptions import MlflowException

    calls = []

    def flaky(dataset, context):
        calls.append(context)
        if len(calls) == 1:
            raise MlflowException('duplicate key value violates unique constraint "dataset_pk"')

    monkeypatch.setattr(mlflow, "log_input", flaky)
    frame = pd.DataFrame({"a": [1.0, 2.0], "y": [0, 1]})
    train.log_dataset(train.dataset_input(frame, "train", "y"), "training")
    assert calls == ["training", "training"]


def test_dataset_logging_gives_up_after_the_last_attempt(monkeypatch):
    from mlflow.exceptions import MlflowException

    def broken(dataset, context):
        raise MlflowException("store is down")

    monkeypatch.setattr(mlflow, "log_input", broken)
    frame = pd.DataFrame({"a": [1.0, 2.0], "y": [0, 1]})
    import pytest

    with pytest.raises(MlflowException, match="store is down"):
        train.log_dataset(train.dataset_input(frame, "train", "y"), "training", attempts=2)


def test_parameter_scikit_learn_refuses_at_fit_names_the_estimator():
    frame = pd.DataFrame({"a": [0.0, 1.0, 2.0, 3.0], "b": [1.0, 0.0, 1.0, 0.0], "y": [0, 1, 0, 1]})
    with pytest.raises(train.FitError, match="cannot fit LogisticRegression from config 'model': .*'C' parameter"):
        train.fit_estimator(LogisticRegression(C=-1), frame, ["a", "b"], "y")
