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
    _, x_test, _, y_test = train_test_split(
        iris.data[:, 2:], iris.target, test_size=0.2, random_state=9001
    )
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
            lambda t: bad(pd.DataFrame({"a": ["x", "y"] * 5, "target": [0, 1] * 5}), t),
            "feature column(s) ['a'] are not numeric",
        ),
        (
            lambda t: bad(pd.DataFrame({"a": [1.0, None] * 5, "target": [0, 1] * 5}), t),
            "missing values: {'a': 5} (first at row 1)",
        ),
        (
            lambda t: bad(pd.DataFrame({"a": np.arange(10.0), "target": [0] * 10}), t),
            "single class",
        ),
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
