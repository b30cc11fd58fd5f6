"""Batch scoring: chunked, ordered, labelled, and all-or-nothing."""

from __future__ import annotations

import mlflow
import numpy as np
import pandas as pd
import pytest
from sklearn.linear_model import LogisticRegression

from core.tabular import TableError
from serving import batch as score
from tests.support.factories import FEATURES, package, rows


@pytest.fixture
def model_and_estimator(tmp_path, cfg):
    info, estimator, _ = package(LogisticRegression(max_iter=5000), tmp_path, cfg)
    return mlflow.pyfunc.load_model(info.model_uri), estimator, info.model_uri


@pytest.mark.parametrize("suffix", [".csv", ".parquet"])
@pytest.mark.parametrize("method", ["predict", "predict_proba", "predict_log_proba"])
def test_output_matches_the_estimator_in_input_order(model_and_estimator, tmp_path, suffix, method):
    model, estimator, _ = model_and_estimator
    frame = rows(1003)
    source = tmp_path / f"in{suffix}"
    frame.to_csv(source, index=False) if suffix == ".csv" else frame.to_parquet(source)
    out = tmp_path / f"out{suffix}"
    assert score.score_file(model, source, out, method, chunk_size=100) == 1003
    result = pd.read_csv(out) if suffix == ".csv" else pd.read_parquet(out)
    assert result["id"].tolist() == frame["id"].tolist()
    assert result["note"].tolist() == frame["note"].tolist()
    expected = getattr(estimator, method)(frame[FEATURES])
    if method == "predict":
        np.testing.assert_array_equal(result["prediction"], expected)
    else:
        prefix = score.COLUMN_PREFIX[method]
        columns = [f"{prefix}{label}" for label in estimator.classes_]
        assert [c for c in result.columns if c.startswith(prefix)] == columns
        np.testing.assert_allclose(result[columns].to_numpy(), expected, rtol=0, atol=1e-12)


def test_id_columns_can_be_chosen(model_and_estimator, tmp_path):
    model, _, _ = model_and_estimator
    source = tmp_path / "in.csv"
    rows(10).to_csv(source, index=False)
    out = tmp_path / "out.csv"
    score.score_file(model, source, out, "predict", id_columns=["id"])
    assert list(pd.read_csv(out).columns) == ["id", "prediction"]


@pytest.mark.parametrize(
    ("mutate", "message"),
    [
        (lambda f: f.drop(columns=["petal width (cm)"]), "missing feature column(s) ['petal width (cm)']"),
        (lambda f: f.astype({"petal length (cm)": object}).assign(**{"petal length (cm)": lambda d: d["petal length (cm)"].where(d.index != 257, "long")}), "row 257, column 'petal length (cm)': 'long' is not a number"),
        (lambda f: f.assign(**{"petal width (cm)": lambda d: d["petal width (cm)"].where(d.index != 333)}), "row 333 has a missing value in column 'petal width (cm)'; LogisticRegression does not accept one there"),
    ],
)
def test_bad_rows_fail_naming_row_and_column_and_leave_no_output(model_and_estimator, tmp_path, mutate, message):
    model, _, _ = model_and_estimator
    source = tmp_path / "in.csv"
    mutate(rows(400)).to_csv(source, index=False)
    out = tmp_path / "out.csv"
    with pytest.raises(Exception) as err:
        score.score_file(model, source, out, "predict", chunk_size=100)
    assert message in str(getattr(err.value, "message", err.value))
    assert not out.exists()
    assert list(tmp_path.glob(".out.csv*")) == []


def test_missing_input_and_unsupported_extension(model_and_estimator, tmp_path):
    model, _, _ = model_and_estimator
    with pytest.raises(TableError, match="does not exist"):
        score.score_file(model, tmp_path / "absent.csv", tmp_path / "o.csv")
    (tmp_path / "in.txt").write_text("a\n1\n")
    with pytest.raises(TableError, match="unsupported extension '.txt'"):
        score.score_file(model, tmp_path / "in.txt", tmp_path / "o.csv")


def test_cli_exit_code_and_message(model_and_estimator, tmp_path, capsys):
    _, _, model_uri = model_and_estimator
    source = tmp_path / "in.csv"
    rows(5).drop(columns=["petal width (cm)"]).to_csv(source, index=False)
    with pytest.raises(SystemExit) as exit_info:
        score.main(["--input", str(source), "--output", str(tmp_path / "o.csv"), "--model-uri", model_uri])
    assert exit_info.value.code == 1
    assert "missing feature column(s) ['petal width (cm)']" in capsys.readouterr().err
    assert not (tmp_path / "o.csv").exists()


def test_method_the_model_does_not_offer_is_refused_before_reading(tmp_path, cfg):
    from sklearn.svm import SVC

    info, _, _ = package(SVC(random_state=0), tmp_path, cfg)
    model = mlflow.pyfunc.load_model(info.model_uri)
    rows(10).to_csv(tmp_path / "in.csv", index=False)
    with pytest.raises(score.ScoringError, match="'predict_proba' is not offered by this model .SVC offers predict."):
        score.score_file(model, tmp_path / "in.csv", tmp_path / "out.csv", "predict_proba")
    assert not (tmp_path / "out.csv").exists()
    assert score.score_file(model, tmp_path / "in.csv", tmp_path / "out.csv", "predict") == 10


@pytest.fixture
def tabular_model(tmp_path):
    """A tabular pipeline on text codes with leading zeros, booleans and numbers with gaps."""
    from hydra.utils import instantiate

    from core.config import compose_config
    from steps import package_pyfunc, serialize, train

    frame = pd.DataFrame({"code": ["01", "02", "10", None] * 10, "flag": [True, False] * 20,
                          "size": [1.0, np.nan, 3.0, 4.5] * 10, "label": ["a", "b", "b", "a"] * 10})
    features = ["code", "flag", "size"]
    estimator = train.fit_estimator(
        instantiate(compose_config(["model=tabular_logistic_regression"]).model), frame, features, "label")
    path = tmp_path / "estimator.joblib"
    digest = serialize.serialize_estimator(estimator, path)
    with mlflow.start_run():
        info = package_pyfunc.log_dispatch_model(str(path), digest, estimator, frame[features])
    return mlflow.pyfunc.load_model(info.model_uri), estimator


def test_text_and_boolean_columns_keep_their_type_in_every_chunk(tabular_model, tmp_path):
    model, estimator = tabular_model
    rows_ = pd.DataFrame({"code": ["01", None, None, "10", "02"], "flag": [True, False, True, None, False],
                          "size": [1.0, 2.0, np.nan, 4.0, 5.0]})
    source, out = tmp_path / "in.csv", tmp_path / "out.csv"
    rows_.to_csv(source, index=False)  # rows 1-2: a chunk whose text column is empty
    score.score_file(model, source, out, "predict_proba", chunk_size=2)
    # A gap is NaN to the estimator, whatever the column's type (None would be a category).
    expected = estimator.predict_proba(rows_.astype({"flag": object}).where(rows_.notna(), np.nan))
    np.testing.assert_allclose(pd.read_csv(out).to_numpy(), expected, atol=1e-9)
    assert pd.read_csv(source, dtype={"code": "str"})["code"].iloc[0] == "01"  # not the number 1


def test_a_value_that_is_not_true_or_false_is_named(tabular_model, tmp_path):
    model, _ = tabular_model
    source = tmp_path / "in.csv"
    pd.DataFrame({"code": ["01", "02"], "flag": ["true", "maybe"], "size": [1.0, 2.0]}).to_csv(source, index=False)
    with pytest.raises(score.ScoringError, match=r"row 1, column 'flag': 'maybe' is not true or false"):
        score.score_file(model, source, tmp_path / "out.csv", "predict")
    assert not (tmp_path / "out.csv").exists()
