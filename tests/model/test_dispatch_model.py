"""The dynamic-dispatch pyfunc: saved in a temporary store, loaded back as a user would."""

from __future__ import annotations

import copy
import json
import subprocess
import sys
from pathlib import Path

import mlflow
import numpy as np
import pandas as pd
import pytest
from mlflow.exceptions import MlflowException
from sklearn.linear_model import LogisticRegression
from sklearn.svm import SVC, LinearSVC

from core import contracts
from core.config import compose_config
from model.dispatch_model import PREDICT_METHODS, sha256_file
from steps import package_pyfunc, serialize, train
from tests.support.factories import package, package_once, use_copy


@pytest.fixture(scope="module")
def packaged_once(tmp_path_factory, empty_store):
    estimator = LogisticRegression(random_state=0, max_iter=5000, solver="newton-cg")
    return package_once(estimator, tmp_path_factory.mktemp("dispatch"), empty_store, compose_config([]))


@pytest.fixture
def packaged(packaged_once, tmp_path, monkeypatch):
    """(model info, fitted estimator, holdout features) in a copy of the module's store."""
    store, info, estimator, features = packaged_once
    use_copy(store, tmp_path, monkeypatch)
    return info, copy.deepcopy(estimator), features.copy()  # a test may change them


@pytest.mark.parametrize("method", PREDICT_METHODS)
def test_each_method_matches_the_estimator(packaged, method):
    info, estimator, features = packaged
    model = mlflow.pyfunc.load_model(info.model_uri)
    got = model.predict(features, params={"predict_method": method})
    np.testing.assert_array_equal(got, getattr(estimator, method)(features))


def test_default_method_is_predict_proba(packaged):
    info, estimator, features = packaged
    model = mlflow.pyfunc.load_model(info.model_uri)
    np.testing.assert_array_equal(model.predict(features), estimator.predict_proba(features))
    param = model.metadata.get_params_schema().params[0]
    assert (param.name, param.default) == ("predict_method", "predict_proba")


def test_unsupported_method_names_allowed_values(packaged):
    info, _, features = packaged
    model = mlflow.pyfunc.load_model(info.model_uri)
    with pytest.raises(MlflowException) as err:
        model.predict(features, params={"predict_method": "decision_function"})
    assert err.value.error_code == "INVALID_PARAMETER_VALUE"
    assert "'decision_function'" in err.value.message
    for method in PREDICT_METHODS:
        assert method in err.value.message


@pytest.mark.parametrize("estimator", [LinearSVC(random_state=0), SVC(random_state=0)], ids=type)
def test_model_without_probabilities_offers_predict_only(tmp_path, cfg, estimator):
    info, fitted, features = package(estimator, tmp_path, cfg)
    model = mlflow.pyfunc.load_model(info.model_uri)
    name = type(fitted).__name__
    assert model.metadata.metadata["predict_methods"] == ["predict"]
    assert model.metadata.metadata["default_predict_method"] == "predict"
    param = model.metadata.get_params_schema().params[0]
    assert (param.name, param.default) == ("predict_method", "predict")
    np.testing.assert_array_equal(model.predict(features), fitted.predict(features))
    for method in ("predict_proba", "predict_log_proba"):
        with pytest.raises(MlflowException) as err:
            model.predict(features, params={"predict_method": method})
        assert err.value.error_code == "INVALID_PARAMETER_VALUE"
        assert f"{name} has no {method}; this model offers predict." in err.value.message


def test_model_advertises_every_method_the_estimator_has(packaged):
    info, _, _ = packaged
    metadata = mlflow.pyfunc.load_model(info.model_uri).metadata.metadata
    assert metadata["predict_methods"] == list(PREDICT_METHODS)
    assert metadata["default_predict_method"] == "predict_proba"


def test_signature_is_column_based_with_feature_names(packaged, cfg):
    info, _, features = packaged
    model = mlflow.pyfunc.load_model(info.model_uri)
    assert model.metadata.get_input_schema().input_names() == list(cfg.data.features)
    with pytest.raises(MlflowException, match="petal width"):
        model.predict(features.drop(columns=["petal width (cm)"]))


def test_class_labels_are_discoverable(packaged):
    info, estimator, _ = packaged
    model = mlflow.pyfunc.load_model(info.model_uri)
    assert model.metadata.metadata["classes"] == estimator.classes_.tolist()
    np.testing.assert_array_equal(model.unwrap_python_model().classes_, estimator.classes_)


def test_requirements_are_pinned_and_never_sklearn(packaged):
    info, _, _ = packaged
    local = Path(mlflow.artifacts.download_artifacts(info.model_uri))
    requirements = (local / "requirements.txt").read_text().split()
    names = {line.split("==")[0] for line in requirements}
    assert "sklearn" not in names
    assert {"mlflow", "scikit-learn", "joblib"} <= names
    assert all("==" in line for line in requirements)


def _stored_estimator(tmp_path: Path) -> Path:
    (path,) = tmp_path.rglob("artifacts/estimator.joblib")  # in this test's copy of the store
    return path


@pytest.mark.parametrize("damage", ["tamper", "truncate"])
def test_modified_artifact_is_refused(packaged, tmp_path, damage):
    info, _, _ = packaged
    stored = _stored_estimator(tmp_path)
    recorded = sha256_file(stored)
    data = stored.read_bytes()
    stored.write_bytes(data[: len(data) // 2] if damage == "truncate" else data + b"\0")
    with pytest.raises(MlflowException) as err:
        mlflow.pyfunc.load_model(info.model_uri)
    message = err.value.message
    assert "estimator.joblib" in message
    assert recorded in message and sha256_file(stored) in message


def test_model_is_logged_as_code_and_loads_without_the_project(packaged, tmp_path):
    """A fresh interpreter, outside the project, with nothing of it importable."""
    info, estimator, features = packaged
    local = Path(mlflow.artifacts.download_artifacts(info.model_uri, dst_path=str(tmp_path / "m")))
    assert not list(local.rglob("*.pkl"))
    script = (
        "import json, sys, mlflow, pandas as pd\n"
        "m = mlflow.pyfunc.load_model(sys.argv[1])\n"
        "x = pd.DataFrame(json.loads(sys.argv[2]))\n"
        "print(json.dumps(m.predict(x, params={'predict_method': 'predict'}).tolist()))\n"
    )
    outside = tmp_path / "elsewhere"
    outside.mkdir()
    result = subprocess.run(
        [sys.executable, "-c", script, str(local), features.to_json(orient="columns")],
        cwd=outside,
        env={"PATH": "/usr/bin:/bin", "HOME": str(tmp_path)},
        capture_output=True,
        text=True,
        check=True,
    )
    assert json.loads(result.stdout.strip().splitlines()[-1]) == estimator.predict(features).tolist()


def test_package_run_registers_pending_version(tmp_path, cfg):
    with mlflow.start_run():
        trained = train.run(cfg)
    with mlflow.start_run():
        serialized = serialize.run(trained["model_uri"], cfg)
    with mlflow.start_run():
        outputs = package_pyfunc.run(serialized["joblib_uri"], serialized["joblib_sha256"], trained["holdout_uri"], cfg)
    assert outputs["registered_model_uri"] == "models:/iris-classifier/1"
    version = mlflow.MlflowClient().get_model_version("iris-classifier", "1")
    assert version.tags[contracts.VALIDATION_STATUS_TAG] == "pending"
    assert version.tags["estimator_sha256"] == serialized["joblib_sha256"]


def test_package_refuses_a_wrong_digest(tmp_path, cfg):
    with mlflow.start_run():
        trained = train.run(cfg)
    with mlflow.start_run():
        serialized = serialize.run(trained["model_uri"], cfg)
    with pytest.raises(MlflowException, match="Refusing to load"), mlflow.start_run():
        package_pyfunc.run(serialized["joblib_uri"], "0" * 64, trained["holdout_uri"], cfg)
    assert mlflow.MlflowClient().search_registered_models() == []


def test_serialize_digest_matches_file(tmp_path):
    estimator = LogisticRegression().fit(pd.DataFrame({"a": [0.0, 1.0]}), [0, 1])
    path = tmp_path / "e.joblib"
    assert serialize.serialize_estimator(estimator, path) == sha256_file(path)


def test_missing_value_is_reported_with_row_and_column(packaged):
    info, _, features = packaged
    model = mlflow.pyfunc.load_model(info.model_uri)
    bad = features.head(3).reset_index(drop=True)
    bad.iloc[2, 1] = np.nan
    with pytest.raises(MlflowException) as err:
        model.predict(bad, params={"predict_method": "predict"})
    assert err.value.error_code == "INVALID_PARAMETER_VALUE"
    assert "row 2" in err.value.message and "'petal width (cm)'" in err.value.message


def test_infinite_value_and_empty_input_are_rejected(packaged):
    info, _, features = packaged
    model = mlflow.pyfunc.load_model(info.model_uri)
    bad = features.head(2).reset_index(drop=True)
    bad.iloc[1, 0] = np.inf
    with pytest.raises(MlflowException, match=r"row 1 has an infinite value in column 'petal length \(cm\)'"):
        model.predict(bad)
    with pytest.raises(MlflowException, match="no rows") as err:
        model.predict(features.head(0))
    assert err.value.error_code == "INVALID_PARAMETER_VALUE"


def test_gaps_of_every_pandas_type_become_nan_for_the_estimator():
    from model.dispatch_model import check_input

    request = pd.DataFrame(
        {
            "s": pd.array(["a", None], dtype="string"),
            "b": pd.array([True, None], dtype="boolean"),
            "i": pd.array([1, None], dtype="Int64"),
            "o": ["x", None],
            "f": [1.0, np.nan],
        }
    )
    plain = check_input(request, "Estimator", True)
    assert plain["i"].dtype == np.float64 and plain["s"].dtype == object and plain["b"].dtype == object
    assert plain.isna().sum().tolist() == [1, 1, 1, 1, 1]
    assert all(value is not pd.NA for column in plain for value in plain[column])
    with pytest.raises(MlflowException, match=r"row 1 has a missing value in column 'b'; Estimator"):
        check_input(request, "Estimator", {"s", "i", "o", "f"})
