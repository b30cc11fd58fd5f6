"""Data sources, validation before training, digests, and the batch generator."""

from __future__ import annotations

import numpy as np
import pandas as pd
import pytest
from sklearn.datasets import load_iris
from sklearn.model_selection import train_test_split

from core import contracts, data
from core.config import compose_config
from ops import make_batch


def file_cfg(path, *overrides):
    return compose_config(["data=file", f"data.path={path}", *overrides]).data


def write(frame: pd.DataFrame, path):
    frame.to_csv(path, index=False) if path.suffix == ".csv" else frame.to_parquet(path)
    return path


def test_iris_frame_has_features_and_target():
    frame = data.load_iris_frame()
    assert frame.shape == (150, 5)
    assert {"petal length (cm)", "petal width (cm)", "target"} <= set(frame.columns)


def test_split_reproduces_the_tutorial_holdout(cfg):
    """Same 30 rows, same order, as train_test_split on the tutorial's X[:, 2:]."""
    _, holdout, features = data.prepare_data(cfg.data)
    iris = load_iris()
    _, x_test, _, y_test = train_test_split(iris.data[:, 2:], iris.target, test_size=0.2, random_state=9001)
    assert features == ["petal length (cm)", "petal width (cm)"]
    np.testing.assert_array_equal(holdout[features].to_numpy(), x_test)
    np.testing.assert_array_equal(holdout[cfg.data.target].to_numpy(), y_test)


def test_test_size_override_changes_the_split():
    train_rows, holdout, _ = data.prepare_data(compose_config(["data.test_size=0.3"]).data)
    assert (len(train_rows), len(holdout)) == (105, 45)


def test_stratified_split_keeps_class_balance():
    _, holdout, _ = data.prepare_data(compose_config(["data.stratify=true"]).data)
    assert holdout["target"].value_counts().tolist() == [10, 10, 10]


@pytest.mark.parametrize("suffix", [".csv", ".parquet"])
def test_file_source_uses_all_columns_but_target(tmp_path, suffix):
    path = write(data.load_iris_frame(), tmp_path / f"iris{suffix}")
    train_rows, holdout, features = data.prepare_data(file_cfg(path))
    assert features == [c for c in data.load_iris_frame().columns if c != "target"]
    assert len(train_rows) + len(holdout) == 150


def test_file_features_can_be_chosen(tmp_path):
    path = write(data.load_iris_frame(), tmp_path / "iris.csv")
    cfg = file_cfg(path, "data.features=['petal length (cm)']")
    assert data.prepare_data(cfg)[2] == ["petal length (cm)"]


def test_relative_path_is_resolved_against_the_project():
    assert data.resolve_path("data/x.csv") == contracts.PROJECT_DIR / "data" / "x.csv"


def test_file_digest_is_the_content_hash(tmp_path):
    path = write(data.load_iris_frame(), tmp_path / "iris.csv")
    first = data.data_digest(file_cfg(path))
    assert first == data.data_digest(file_cfg(path))
    path.write_text(path.read_text() + "5.0,3.0,1.5,0.2,0\n")
    assert data.data_digest(file_cfg(path)) != first


def bad(frame_or_text, tmp_path, name="bad.csv"):
    path = tmp_path / name
    if isinstance(frame_or_text, str):
        path.write_text(frame_or_text)
    else:
        write(frame_or_text, path)
    return path


@pytest.mark.parametrize(
    ("make", "message"),
    [
        (lambda t: t / "absent.csv", "absent.csv does not exist"),
        (lambda t: bad("a,b\n1,2\n", t, "x.txt"), "unsupported extension '.txt'"),
        (lambda t: bad("not parquet", t, "x.parquet"), "x.parquet cannot be read"),
        (lambda t: bad("", t), "bad.csv cannot be read"),
        (lambda t: bad("a,target\n", t), "bad.csv is empty"),
        (lambda t: bad(pd.DataFrame({"a": [1.0, 2.0]}), t), "lacks column(s) ['target']"),
        (
            lambda t: bad(pd.DataFrame({"a": np.arange(10.0), "target": [0, 1, None, 1, 0] * 2}), t),
            "target 'target' has 2 missing value(s) (first at row 2)",
        ),
        (  # a regression target
            lambda t: bad(pd.DataFrame({"a": np.arange(60.0), "target": np.linspace(0, 1.111, 60)}), t),
            "target 'target' looks continuous (60 distinct float values, e.g. 0.01883",
        ),
        (  # few distinct fractions, one seen once: a rating, not classes (Fair's affairs data)
            lambda t: bad(
                pd.DataFrame(
                    {
                        "a": np.arange(200.0),
                        "target": [0.0] * 150 + [0.6222222] + [round(k / 9, 7) for k in range(1, 8)] * 7,
                    }
                ),
                t,
            ),
            "target 'target' looks continuous (9 distinct float values, e.g. 0.6222222); "
            "this pipeline trains classifiers",
        ),
        (  # 3 distinct rows repeated 20 times: the holdout would be the training set
            lambda t: bad(pd.DataFrame({"a": [1.0, 2.0, 3.0] * 20, "target": [0, 1, 1] * 20}), t),
            "57 of 60 rows (95%) repeat an earlier row",
        ),
        (
            lambda t: bad(
                pd.DataFrame(
                    {"a": np.arange(10.0), "d": pd.date_range("2026-01-01", periods=10), "target": [0, 1] * 5}
                ),
                t,
                "x.parquet",
            ),
            "feature column(s) ['d'] hold dates or times",
        ),
        (lambda t: bad(pd.DataFrame({"a": np.arange(10.0), "target": [0] * 10}), t), "single class"),
        (
            lambda t: bad(pd.DataFrame({"a": np.arange(10.0), "target": [0] * 9 + [1]}), t),
            "class 1 of 'target' has 1 row",
        ),
    ],
)
def test_bad_data_is_rejected_naming_file_and_problem(tmp_path, make, message):
    path = make(tmp_path)
    with pytest.raises(data.DataError) as err:
        data.prepare_data(file_cfg(path))
    assert message in str(err.value)
    assert path.name in str(err.value)


def test_stratified_holdout_too_small_for_the_classes(tmp_path):
    frame = pd.DataFrame({"a": np.arange(12.0), "target": [0, 1, 2] * 4})
    path = write(frame, tmp_path / "small.csv")
    with pytest.raises(data.DataError, match="cannot hold all 3 classes"):
        data.prepare_data(file_cfg(path, "data.test_size=0.1"))


def test_batch_generator_creates_and_grows_a_file(tmp_path):
    path = tmp_path / "batch.csv"
    make_batch.main([str(path)])
    assert len(pd.read_csv(path)) == 150
    make_batch.main([str(path), "--append", "30", "--seed", "1"])
    grown = pd.read_csv(path)
    assert len(grown) == 180
    assert list(grown.columns) == list(data.load_iris_frame().columns)
    assert not list(tmp_path.glob(".*.tmp"))
    data.prepare_data(file_cfg(path))  # a generated batch passes validation


def test_text_and_missing_features_pass_the_data_check(tmp_path):
    """The estimator decides what it accepts (a tabular config encodes and imputes)."""
    frame = pd.DataFrame(
        {
            "n": [1.0, None, 3.0, 4.0] * 5,
            "t": ["x", "y", None, "x"] * 5,
            "k": [5, 3, 8, 1] * 5,
            "target": ["a", "b"] * 10,
        }
    )
    train_rows, holdout, features = data.prepare_data(file_cfg(write(frame, tmp_path / "mixed.csv")))
    assert features == ["n", "t", "k"] and len(train_rows) + len(holdout) == 20


def test_a_saved_row_index_is_left_out_with_a_warning(tmp_path, caplog):
    frame = data.load_iris_frame()
    frame.to_csv(tmp_path / "indexed.csv")  # pandas writes the index as "Unnamed: 0"
    frame.insert(0, "row", range(1, 151))
    _, _, from_pandas = data.prepare_data(file_cfg(tmp_path / "indexed.csv"))
    _, _, numbered = data.prepare_data(file_cfg(write(frame, tmp_path / "numbered.csv")))
    assert "Unnamed: 0" not in from_pandas and "row" not in numbered
    assert "column 'Unnamed: 0' left out: identifier (a saved row index)" in caplog.text
    kept = file_cfg(tmp_path / "numbered.csv", "data.features=[row,'petal width (cm)']")
    assert data.prepare_data(kept)[2] == ["row", "petal width (cm)"]  # listed: kept


def test_a_few_repeated_rows_are_reported_not_refused(tmp_path, caplog):
    frame = pd.concat([data.load_iris_frame(), data.load_iris_frame().head(15)])
    data.prepare_data(file_cfg(write(frame, tmp_path / "repeats.csv")))
    assert "16 of 165 rows (10%) repeat an earlier row" in caplog.text


@pytest.mark.parametrize(
    ("override", "message"),
    [
        ("data.test_size=1.5", "data.test_size=1.5 is out of range"),
        ("data.test_size=0", "data.test_size=0.0 is out of range"),
        ("data.test_size=-0.1", "data.test_size=-0.1 is out of range"),
        ("data.random_state=abc", "could not be converted to Integer"),
        ("data.max_duplicate_share=2", "data.max_duplicate_share=2.0 is out of range"),
        ("data.random_state=-1", "data.random_state=-1 is out of range"),
        ("data.random_state=4294967296", "data.random_state=4294967296 is out of range"),
        ("validation.atol=-1", "validation.atol=-1.0 is out of range: it must be a finite number, zero or more"),
        ("validation.atol=nan", "validation.atol=nan is out of range"),
        ("gate.metrics.accuracy.tolerance=abc", "'abc' of type 'str' could not be converted to Float"),
        ("gate.metrics.accuracy.tolerance=-0.1", "gate.metrics.accuracy.tolerance=-0.1 is out of range"),
        ("gate.metrics.log_loss.tolerance=inf", "gate.metrics.log_loss.tolerance=inf is out of range"),
        ("gate.metrics.accuracy.threshold=nan", "gate.metrics.accuracy.threshold=nan is out of range"),
        ("drift.p_value=0", "drift.p_value=0.0 is out of range: it must be a probability above 0, at most 1"),
        ("drift.jensen_shannon=1.5", "drift.jensen_shannon=1.5 is out of range"),
        ("drift.retrain.share=-0.1", "drift.retrain.share=-0.1 is out of range"),
        ("drift.chunk_size=0", "drift.chunk_size=0 is out of range"),
    ],
)
def test_settings_are_checked_when_the_config_is_composed(override, message, capsys):
    """Types and ranges fail before any run, with exit 2: nothing is half-done."""
    import mlflow

    from pipeline import main

    with pytest.raises(SystemExit) as exit_info:
        main.main([override])
    assert exit_info.value.code == 2
    assert message in capsys.readouterr().err
    assert mlflow.search_runs(search_all_experiments=True, output_format="list") == []  # before any run


def test_pandas_nullable_types_from_parquet_are_taken_as_numpy_gaps(tmp_path):
    """Int64/boolean/string columns hold pd.NA, which scikit-learn cannot compare."""
    frame = pd.DataFrame(
        {
            "n": pd.array([None, 2, 3, 4] * 5, dtype="Int64"),  # a gap first: no index check trips on it
            "b": pd.array([True, None, False, True] * 5, dtype="boolean"),
            "s": pd.array(["x", "y", None, "x"] * 5, dtype="string"),
            "target": ["a", "b"] * 10,
        }
    )
    train_rows, holdout, _ = data.prepare_data(file_cfg(write(frame, tmp_path / "nullable.parquet")))
    both = pd.concat([train_rows, holdout])
    assert both["n"].dtype == np.float64 and both["b"].dtype == object and both["s"].dtype == object
    assert both["s"].isna().sum() == 5 and not any(v is pd.NA for column in both for v in both[column])
