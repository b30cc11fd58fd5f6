"""The evaluate step: its checks, its metrics, and what it does to the registry."""

from __future__ import annotations

import json

import mlflow
import pytest
from mlflow import MlflowClient
from mlflow.exceptions import MlflowException
from sklearn.linear_model import LogisticRegression
from sklearn.svm import LinearSVC

from core import contracts, data, metrics, validation
from core.config import compose_config
from core.errors import StepError
from core.registry import parse_registered_uri
from steps import evaluate, train
from tests.support.factories import package, run_chain


def test_all_checks_pass_for_a_faithful_model(tmp_path, cfg):
    info, estimator, features = package(LogisticRegression(max_iter=5000), tmp_path, cfg)
    checks = validation.validate_predictions(mlflow.pyfunc.load_model(info.model_uri), estimator, features, atol=1e-9)
    assert [c.name for c in checks if not c.passed] == []
    assert {c.name for c in checks} >= {
        "predict_labels_identical",
        "predict_proba_matches_reference",
        "predict_proba_rows_sum_to_one",
        "predict_log_proba_is_log_of_proba",
        "default_method_is_predict_proba",
        "argmax_proba_agrees_with_predict_as_in_estimator",
        "unsupported_method_rejected",
    }


def test_checks_fail_against_a_different_estimator(tmp_path, cfg):
    info, _, features = package(LogisticRegression(max_iter=5000), tmp_path, cfg)
    train_rows, _, _ = data.prepare_data(cfg.data)
    other = train.fit_estimator(
        LogisticRegression(C=0.001, max_iter=5000), train_rows, list(cfg.data.features), "target"
    )
    checks = validation.validate_predictions(mlflow.pyfunc.load_model(info.model_uri), other, features, atol=1e-9)
    failed = {c.name for c in checks if not c.passed}
    assert "predict_proba_matches_reference" in failed


def test_model_without_probabilities_is_validated_on_predict_only(tmp_path, cfg):
    info, estimator, features = package(LinearSVC(random_state=0), tmp_path, cfg)
    checks = validation.validate_predictions(mlflow.pyfunc.load_model(info.model_uri), estimator, features, atol=1e-9)
    assert all(c.passed for c in checks), [c for c in checks if not c.passed]
    names = {c.name for c in checks}
    assert {"predict_labels_identical", "default_method_is_predict"} <= names
    # The methods it lacks are checked for a clear refusal, not validated.
    assert {"predict_proba_rejected", "predict_log_proba_rejected"} <= names
    assert "predict_proba_matches_reference" not in names


def test_model_advertising_methods_its_estimator_lacks_fails(tmp_path, cfg):
    # The packaged model has all three; the reference it is checked against has predict only.
    info, _, features = package(LogisticRegression(max_iter=5000), tmp_path, cfg)
    train_rows, _, _ = data.prepare_data(cfg.data)
    svc = train.fit_estimator(LinearSVC(random_state=0), train_rows, list(cfg.data.features), "target")
    checks = validation.validate_predictions(mlflow.pyfunc.load_model(info.model_uri), svc, features, 1e-9)
    failed = {c.name: c.detail for c in checks if not c.passed}
    assert "advertised_methods_match_estimator" in failed
    assert "predict_proba_rejected" in failed


def test_model_without_probabilities_is_scored_on_labels(tmp_path, cfg):
    info, estimator, features = package(LinearSVC(random_state=0), tmp_path, cfg)
    labels = data.prepare_data(cfg.data)[1][cfg.data.target]
    outputs = metrics.holdout_outputs(
        mlflow.pyfunc.load_model(info.model_uri), features, "svc", labels, estimator.classes_
    )
    assert set(outputs.metrics) == {"accuracy", "f1_macro"} and outputs.proba is None


@pytest.mark.parametrize(
    ("uri", "expected"),
    [("models:/iris-classifier/3", ("iris-classifier", "3")), ("models:/a-b_c/12", ("a-b_c", "12"))],
)
def test_parse_registered_uri(uri, expected):
    assert parse_registered_uri(uri) == expected


@pytest.mark.parametrize("uri", ["models:/iris-classifier@champion", "runs:/abc/model", "models:/x"])
def test_parse_registered_uri_rejects_other_uris(uri):
    with pytest.raises(ValueError, match="models:/<name>/<version>"):
        parse_registered_uri(uri)


def test_passing_version_is_tagged_and_becomes_champion(cfg):
    outputs = run_chain(cfg)
    with mlflow.start_run() as active:
        result = evaluate.run(outputs["registered_model_uri"], outputs["model_uri"], outputs["holdout_uri"], cfg)
    assert result == {"validation_status": "passed", "gate_outcome": "promoted", "champion_version": "1"}
    client = MlflowClient()
    champion = client.get_model_version_by_alias("iris-classifier", "champion")
    assert str(champion.version) == outputs["registered_model_version"]
    assert champion.tags[contracts.VALIDATION_STATUS_TAG] == "passed"
    assert champion.tags["validation_run_id"] == active.info.run_id
    metrics = mlflow.get_run(active.info.run_id).data.metrics
    assert metrics["validation_checks_failed"] == 0
    assert metrics["accuracy"] > 0.9 and metrics["roc_auc_ovr"] > 0.9
    assert {"f1_macro", "log_loss"} <= set(metrics)
    report = json.loads(mlflow.artifacts.load_text(f"runs:/{active.info.run_id}/validation.json"))
    assert all(check["passed"] for check in report["checks"])


def test_failing_version_is_tagged_failed_and_gets_no_alias(cfg):
    # The reference estimator differs from the packaged one: validation must fail.
    outputs = run_chain(cfg)
    other = run_chain(compose_config(["model.C=0.001"]))
    with pytest.raises(validation.ValidationFailed, match="predict_proba"), mlflow.start_run() as active:
        evaluate.run(outputs["registered_model_uri"], other["model_uri"], outputs["holdout_uri"], cfg)
    client = MlflowClient()
    version = client.get_model_version("iris-classifier", outputs["registered_model_version"])
    assert version.tags[contracts.VALIDATION_STATUS_TAG] == "failed"
    assert version.aliases == []
    with pytest.raises(MlflowException):
        client.get_model_version_by_alias("iris-classifier", "champion")
    assert mlflow.get_run(active.info.run_id).info.status == "FAILED"


def test_two_class_data_is_scored(tmp_path):
    frame = data.load_iris_frame()
    path = tmp_path / "two.csv"
    frame[frame["target"] < 2].to_csv(path, index=False)
    cfg = compose_config(["data=file", f"data.path={path}"])
    outputs = run_chain(cfg)
    with mlflow.start_run() as active:
        result = evaluate.run(outputs["registered_model_uri"], outputs["model_uri"], outputs["holdout_uri"], cfg)
    assert result["gate_outcome"] == "promoted"
    assert mlflow.get_run(active.info.run_id).data.metrics["roc_auc_ovr"] == 1.0


def test_unregistered_model_is_validated_without_gate(cfg):
    ungated = compose_config(["registry.register=false", "gate.enabled=false"])
    outputs = run_chain(ungated)
    assert "registered_model_uri" not in outputs and outputs["pyfunc_model_uri"].startswith("models:/m-")
    with mlflow.start_run() as active:
        result = evaluate.run(outputs["pyfunc_model_uri"], outputs["model_uri"], outputs["holdout_uri"], ungated)
    assert result == {"validation_status": "passed", "gate_outcome": "not gated"}
    assert MlflowClient().search_registered_models() == []
    assert mlflow.get_run(active.info.run_id).data.metrics["accuracy"] > 0.9
    # Its metrics are linked to the logged model as well.
    model_id = outputs["pyfunc_model_uri"].removeprefix("models:/")
    assert {m.key for m in mlflow.get_logged_model(model_id).metrics} >= {"accuracy", "log_loss"}
    with pytest.raises(StepError, match="the gate needs a registered version"), mlflow.start_run():
        evaluate.run(outputs["pyfunc_model_uri"], outputs["model_uri"], outputs["holdout_uri"], cfg)


def test_any_scikit_learn_classifier_works_by_config():
    # Not one of conf/model/: ExtraTrees takes the random forest config's arguments.
    cfg = compose_config(["model=random_forest", "model._target_=sklearn.ensemble.ExtraTreesClassifier"])
    outputs = run_chain(cfg)
    with mlflow.start_run():
        result = evaluate.run(outputs["registered_model_uri"], outputs["model_uri"], outputs["holdout_uri"], cfg)
    assert result["validation_status"] == "passed"
    model = mlflow.pyfunc.load_model(outputs["registered_model_uri"])
    assert model.metadata.metadata["estimator"] == "ExtraTreesClassifier"
    assert model.metadata.metadata["predict_methods"] == ["predict", "predict_proba", "predict_log_proba"]


def test_estimator_whose_labels_disagree_with_its_probabilities_still_validates(tmp_path, cfg):
    # Platt scaling: SVC(probability=True)'s predict is not always argmax(predict_proba).
    import warnings

    import numpy as np
    from sklearn.svm import SVC

    with warnings.catch_warnings():
        warnings.simplefilter("ignore", FutureWarning)  # probability= is deprecated in 1.9
        info, estimator, features = package(SVC(probability=True, C=0.1, random_state=0), tmp_path, cfg)
    disagree = estimator.classes_[np.argmax(estimator.predict_proba(features), axis=1)] != estimator.predict(features)
    assert disagree.any(), "the premise: this SVC disagrees with itself on some holdout row"
    checks = validation.validate_predictions(mlflow.pyfunc.load_model(info.model_uri), estimator, features, 1e-9)
    assert [c for c in checks if not c.passed] == []
    detail = next(c.detail for c in checks if c.name == "argmax_proba_agrees_with_predict_as_in_estimator")
    assert f"(estimator: {len(features) - int(disagree.sum())})" in detail
