"""Tables not shaped like iris through train, package and evaluate: integer, text and
boolean features, missing values, each as the estimator takes them."""

from __future__ import annotations

import mlflow
import numpy as np
import pandas as pd
import pytest
from mlflow.exceptions import MlflowException

from core import contract, data, validation
from core.config import compose_config
from steps import evaluate, train
from tests.support.factories import run_chain


def table(tmp_path, frame: pd.DataFrame, name="table.csv"):
    path = tmp_path / name
    frame.to_csv(path, index=False) if path.suffix == ".csv" else frame.to_parquet(path, index=False)
    return path


def mixed(rows=240, seed=0) -> pd.DataFrame:
    """Integers, floats with gaps, text with gaps and an unseen-at-random category, a
    boolean, and a text target that depends on them."""
    rng = np.random.default_rng(seed)
    frame = pd.DataFrame(
        {
            "count": rng.integers(0, 50, rows),
            "size": rng.normal(10, 3, rows).round(2),
            "colour": rng.choice(["red", "green", "blue"], rows),
            "flag": rng.integers(0, 2, rows).astype(bool),
        }
    )
    frame["label"] = np.where(frame["count"] + 3 * (frame["colour"] == "red") > 26, "high", "low")
    frame.loc[frame.index % 7 == 3, "size"] = np.nan
    frame.loc[frame.index % 11 == 5, "colour"] = None
    return frame


def chain_and_evaluate(cfg):
    outputs = run_chain(cfg)
    with mlflow.start_run():
        result = evaluate.run(outputs["registered_model_uri"], outputs["model_uri"], outputs["holdout_uri"], cfg)
    return outputs, result


def test_integer_features_are_long_in_the_signature_and_an_integer_frame_is_accepted(tmp_path):
    iris = data.load_iris_frame()
    features = [c for c in iris.columns if c != "target"]
    ints = iris.assign(**{c: (iris[c] * 10).round().astype("int64") for c in features})
    cfg = compose_config(["data=file", f"data.path={table(tmp_path, ints)}"])
    outputs, result = chain_and_evaluate(cfg)
    assert result["validation_status"] == "passed"
    model = mlflow.pyfunc.load_model(outputs["registered_model_uri"])
    assert {spec.type.name for spec in model.metadata.get_input_schema().inputs} == {"long"}
    sample = ints[features].head(4)
    assert sample.dtypes.eq("int64").all()
    reference = mlflow.sklearn.load_model(outputs["model_uri"])
    np.testing.assert_array_equal(
        model.predict(sample, params={"predict_method": "predict"}), reference.predict(sample)
    )


def test_a_tabular_pipeline_takes_text_booleans_and_missing_values_end_to_end(tmp_path):
    frame = mixed()
    cfg = compose_config(
        [
            "data=file",
            f"data.path={table(tmp_path, frame, 'mixed.parquet')}",
            "data.target=label",
            "model=tabular_logistic_regression",
        ]
    )
    outputs, result = chain_and_evaluate(cfg)
    assert result["validation_status"] == "passed"  # three methods equal the native pipeline's
    model = mlflow.pyfunc.load_model(outputs["registered_model_uri"])
    types = {spec.name: spec.type.name for spec in model.metadata.get_input_schema().inputs}
    assert types == {"count": "long", "size": "double", "colour": "string", "flag": "boolean"}
    # Not "count": MLflow refuses a gap in an integer (long) column before the model sees it.
    assert model.metadata.metadata["nullable_features"] == ["size", "colour", "flag"]
    # The training data's contract, logged by train and kept in the model for consumers.
    logged = mlflow.artifacts.load_text(f"runs:/{outputs['holdout_uri'].split('/')[1]}/{contract.CONTRACT_ARTIFACT}")
    assert model.metadata.metadata["data_contract"] == logged
    assert "- blue" in logged and "size:" in logged
    request = pd.DataFrame({"count": [40, 3], "size": [np.nan, 9.5], "colour": [None, "purple"], "flag": [True, False]})
    reference = mlflow.sklearn.load_model(outputs["model_uri"])
    # A null and an unseen category in the text column, a NaN in a number column.
    np.testing.assert_array_equal(
        model.predict(request, params={"predict_method": "predict"}), reference.predict(request)
    )
    for method in ("predict_proba", "predict_log_proba"):
        np.testing.assert_allclose(
            model.predict(request, params={"predict_method": method}), getattr(reference, method)(request), atol=1e-9
        )
    assert list(model.predict(request, params={"predict_method": "predict"})) == ["high", "low"]
    # Validation itself tried a gap in each column that takes one and an unseen category.
    holdout = pd.read_parquet(mlflow.artifacts.download_artifacts(outputs["holdout_uri"]))
    checks = {c.name: c for c in validation.validate_predictions(model, reference, holdout[list(types)], 1e-9)}
    edge = checks["gaps_and_unseen_categories_match_reference"]
    assert edge.passed and edge.detail == "4 row(s) with a gap or an unseen category agree"


def test_missing_values_follow_the_estimator(tmp_path):
    frame = mixed().drop(columns=["colour"])
    path = table(tmp_path, frame)
    # A logistic regression takes no NaN: train says where the first one is.
    with pytest.raises(train.FitError, match=r"missing values \(first at row \d+, column 'size'\)"), mlflow.start_run():
        train.run(compose_config(["data=file", f"data.path={path}", "data.target=label"]))
    # Histogram gradient boosting does: validated, and its model takes NaN in requests.
    cfg = compose_config(["data=file", f"data.path={path}", "data.target=label", "model=hist_gradient_boosting"])
    outputs, result = chain_and_evaluate(cfg)
    assert result["validation_status"] == "passed"
    model = mlflow.pyfunc.load_model(outputs["registered_model_uri"])
    assert "size" in model.metadata.metadata["nullable_features"]
    answer = model.predict(
        pd.DataFrame({"count": [40], "size": [np.nan], "flag": [True]}), params={"predict_method": "predict"}
    )
    assert list(answer) == ["high"]


def test_a_model_that_takes_no_missing_value_refuses_one_naming_row_and_column(tmp_path):
    frame = mixed().drop(columns=["colour"]).dropna()
    cfg = compose_config(["data=file", f"data.path={table(tmp_path, frame)}", "data.target=label"])
    outputs = run_chain(cfg)
    model = mlflow.pyfunc.load_model(outputs["registered_model_uri"])
    assert model.metadata.metadata["nullable_features"] == []
    request = pd.DataFrame({"count": [4, 5], "size": [1.0, np.nan], "flag": [True, False]}, index=[7, 8])
    with pytest.raises(MlflowException, match=r"row 8 has a missing value in column 'size'") as err:
        model.predict(request)
    assert err.value.error_code == "INVALID_PARAMETER_VALUE"


def test_text_features_with_a_numbers_only_model_name_the_columns_and_the_config_to_use(tmp_path):
    frame = mixed().drop(columns=["size"]).dropna()
    cfg = compose_config(["data=file", f"data.path={table(tmp_path, frame)}", "data.target=label"])
    with (
        pytest.raises(
            train.FitError,
            match=r"feature column\(s\) \['colour'\] hold text.*"
            r"model=tabular_logistic_regression",
        ),
        mlflow.start_run(),
    ):
        train.run(cfg)


def test_hist_gradient_boosting_takes_text_columns_natively_once_named(tmp_path):
    frame = mixed().drop(columns=["flag"])
    cfg = compose_config(
        [
            "data=file",
            f"data.path={table(tmp_path, frame)}",
            "data.target=label",
            "model=hist_gradient_boosting",
            "model.categorical_features=[colour]",
        ]
    )
    outputs, result = chain_and_evaluate(cfg)
    assert result["validation_status"] == "passed"
    model = mlflow.pyfunc.load_model(outputs["registered_model_uri"])
    assert set(model.metadata.metadata["nullable_features"]) == {"size", "colour"}
    request = pd.DataFrame({"count": [40, 3], "size": [np.nan, 9.5], "colour": [None, "purple"]})
    reference = mlflow.sklearn.load_model(outputs["model_uri"])
    np.testing.assert_allclose(model.predict(request), reference.predict_proba(request.fillna(np.nan)), atol=1e-9)


def test_edge_rows_hold_a_gap_per_nullable_column_and_an_unseen_category_per_text_column():
    features = mixed().drop(columns=["label"]).dropna().head(3)
    rows = validation.edge_rows(features, {"size", "colour"})
    assert len(rows) == 3
    assert rows["size"].isna().tolist() == [True, False, False]
    colours = rows["colour"].tolist()
    assert (colours[0], colours[2]) == (features["colour"].iloc[0], validation.UNSEEN_CATEGORY)
    assert rows["colour"].isna().tolist() == [False, True, False]
