"""What the dispatch model's ``predict`` refuses, in-process: an empty method name, inputs
whose outputs would be NaN or infinite, and values beyond the float32 range of a tree
model. Each refusal is ``MlflowException(INVALID_PARAMETER_VALUE)``, which the scoring
server answers with a 400 and batch scoring reports, naming the row and column."""

from __future__ import annotations

import mlflow
import numpy as np
import pandas as pd
import pytest
from mlflow.exceptions import MlflowException
from sklearn.ensemble import RandomForestClassifier
from sklearn.linear_model import LogisticRegression

from tests.support.factories import FEATURES, package


@pytest.fixture
def logistic(tmp_path, cfg):
    info, fitted, _ = package(LogisticRegression(random_state=0, max_iter=5000), tmp_path, cfg)
    return mlflow.pyfunc.load_model(info.model_uri), fitted


@pytest.fixture
def forest(tmp_path, cfg):
    info, fitted, _ = package(RandomForestClassifier(n_estimators=10, random_state=0), tmp_path, cfg)
    return mlflow.pyfunc.load_model(info.model_uri), fitted


def frame(*rows) -> pd.DataFrame:
    return pd.DataFrame(list(rows), columns=FEATURES)


def refusal(model, rows: pd.DataFrame, method: str) -> str:
    with pytest.raises(MlflowException) as err:
        model.predict(rows, params={"predict_method": method})
    assert err.value.error_code == "INVALID_PARAMETER_VALUE"
    return err.value.message


def test_an_empty_predict_method_is_refused_not_taken_as_the_default(logistic):
    model, _ = logistic
    assert "Unsupported predict_method ''; allowed values are" in refusal(model, frame([1.4, 0.2]), "")


@pytest.mark.parametrize("method", ["predict_proba", "predict_log_proba"])
def test_an_output_that_would_be_nan_is_refused_naming_the_row(logistic, method):
    model, estimator = logistic
    rows = frame([1.4, 0.2], [1e308, 0.2])
    assert np.isnan(getattr(estimator, method)(rows)[1]).all()  # what the estimator alone gives
    message = refusal(model, rows, method)
    assert f"Input row 1 gives nan from LogisticRegression.{method}" in message
    assert "its largest value: 1e+308 in column 'petal length (cm)'" in message


def test_the_log_of_a_zero_probability_stays_minus_infinity_in_process(forest):
    """-inf is the right value there; only the server's JSON encodes it (docs/serving.md)."""
    model, estimator = forest
    rows = frame([1.4, 0.2], [6.0, 2.5])
    native = estimator.predict_log_proba(rows)
    assert np.isneginf(native).any()
    np.testing.assert_array_equal(model.predict(rows, params={"predict_method": "predict_log_proba"}), native)


@pytest.mark.parametrize("method", ["predict", "predict_proba", "predict_log_proba"])
def test_a_value_beyond_float32_is_refused_naming_row_and_column(forest, method):
    model, estimator = forest
    rows = frame([1.4, 0.2], [4.7, 1.4], [1.4, -1e300])
    with pytest.raises(ValueError, match="too large for dtype\\('float32'\\)"):  # the estimator alone
        getattr(estimator, method)(rows)
    message = refusal(model, rows, method)
    assert message == (
        "Input row 2 has the value -1e+300 in column 'petal width (cm)', beyond the float32 "
        "range (magnitude up to 3.403e+38) in which RandomForestClassifier computes."
    )
