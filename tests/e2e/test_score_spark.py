"""Spark scoring through mlflow.pyfunc.spark_udf, checked against the in-process pyfunc."""

from __future__ import annotations

import sys

import mlflow
import numpy as np
import pandas as pd
import pytest
from sklearn.linear_model import LogisticRegression

from serving import spark as score_spark
from tests.support.factories import FEATURES, package, rows

pyspark = pytest.importorskip("pyspark", reason="pyspark is not installed (requirements-dev.lock)")
# One worker runs this module: its tests share one Spark session.


@pytest.fixture(scope="module")
def spark():
    from pyspark.sql import SparkSession

    # Workers use this venv's Python (with pandas and mlflow), not the first python3 on PATH.
    patch = pytest.MonkeyPatch()
    patch.setenv("PYSPARK_PYTHON", sys.executable)

    session = (
        SparkSession.builder.master("local[2]")
        .appName("tests")
        .config("spark.ui.enabled", "false")
        .config("spark.sql.shuffle.partitions", "2")
        .getOrCreate()
    )
    yield session
    session.stop()
    patch.undo()


def test_each_method_equals_the_in_process_pyfunc(spark, tmp_path, cfg):
    info, _, _ = package(LogisticRegression(max_iter=5000), tmp_path, cfg)
    model = mlflow.pyfunc.load_model(info.model_uri)
    frame = rows(500)
    sdf = spark.createDataFrame(frame).repartition(3)
    for method in ("predict", "predict_proba", "predict_log_proba"):
        scored = score_spark.score_dataframe(spark, sdf, info.model_uri, method).toPandas()
        scored = scored.sort_values("id", ascending=False).reset_index(drop=True)
        expected = model.predict(frame[FEATURES], params={"predict_method": method})
        assert scored["note"].tolist() == frame["note"].tolist()
        if method == "predict":
            np.testing.assert_array_equal(scored["prediction"].to_numpy(), expected)
        else:
            prefix = "proba_" if method == "predict_proba" else "log_proba_"
            columns = [f"{prefix}{label}" for label in (0, 1, 2)]
            assert [c for c in scored.columns if c.startswith(prefix)] == columns
            np.testing.assert_allclose(scored[columns].to_numpy(), expected, rtol=0, atol=1e-12)


def test_missing_feature_column_is_named(spark, tmp_path, cfg):
    info, _, _ = package(LogisticRegression(max_iter=5000), tmp_path, cfg)
    sdf = spark.createDataFrame(pd.DataFrame({"petal length (cm)": [1.0]}))
    with pytest.raises(ValueError, match=r"lacks feature column\(s\) \['petal width \(cm\)'\]"):
        score_spark.score_dataframe(spark, sdf, info.model_uri, "predict")


def test_label_types():
    assert score_spark.label_type([0, 1, 2]) == "long"
    assert score_spark.label_type(["setosa", "virginica"]) == "string"
    assert score_spark.label_type([0.0, 1.5]) == "double"


def test_method_the_model_does_not_offer_is_refused_before_spark_runs(spark, tmp_path, cfg):
    from sklearn.svm import SVC

    info, _, _ = package(SVC(random_state=0), tmp_path, cfg)
    frame = spark.createDataFrame(rows(5))
    with pytest.raises(ValueError, match="'predict_proba' is not offered by .*; it offers predict$"):
        score_spark.score_dataframe(spark, frame, info.model_uri, "predict_proba")
    scored = score_spark.score_dataframe(spark, frame, info.model_uri, "predict").toPandas()
    assert scored["prediction"].notna().all() and len(scored) == 5


def test_a_table_with_text_and_gaps_scores_as_in_process(spark, tmp_path):
    """The penguins table (text columns, gaps, a text target) with a tabular pipeline."""
    from pathlib import Path

    import palmerpenguins
    from hydra.utils import instantiate

    from core.config import compose_config
    from steps import package_pyfunc, serialize, train

    raw = pd.read_csv(Path(palmerpenguins.__file__).parent / "data" / "penguins.csv")
    features = [c for c in raw.columns if c != "species"]
    estimator = train.fit_estimator(
        instantiate(compose_config(["model=tabular_logistic_regression"]).model), raw, features, "species"
    )
    path = tmp_path / "estimator.joblib"
    digest = serialize.serialize_estimator(estimator, path)
    with mlflow.start_run():
        info = package_pyfunc.log_dispatch_model(str(path), digest, estimator, raw[features])
    model = mlflow.pyfunc.load_model(info.model_uri)
    plain = raw.astype(object).where(raw.notna(), None)  # Spark takes None for a gap
    sdf = spark.createDataFrame(plain.astype({c: float for c in features if raw[c].dtype == float}))
    for method in ("predict", "predict_proba"):
        scored = score_spark.score_dataframe(spark, sdf, info.model_uri, method).toPandas()
        expected = model.predict(raw[features], params={"predict_method": method})
        if method == "predict":
            assert scored["prediction"].tolist() == list(expected)
        else:
            columns = ["proba_Adelie", "proba_Chinstrap", "proba_Gentoo"]
            np.testing.assert_allclose(scored[columns].to_numpy(), expected, rtol=0, atol=1e-12)


def test_prediction_columns_record_the_version_that_computed_them(spark, tmp_path, cfg):
    from core import contracts

    info, _, _ = package(LogisticRegression(max_iter=5000), tmp_path, cfg)
    version = str(mlflow.register_model(info.model_uri, "spark-scored").version)
    mlflow.MlflowClient().set_registered_model_alias("spark-scored", "champion", version)
    frame = spark.createDataFrame(rows(5))
    scored = score_spark.score_dataframe(spark, frame, "models:/spark-scored@champion", "predict_proba")
    scored.write.parquet(str(tmp_path / "scored"))
    written = spark.read.parquet(str(tmp_path / "scored"))  # Spark keeps column metadata in its files
    for column in ("proba_0", "proba_2"):
        metadata = written.schema[column].metadata
        assert metadata[contracts.SCORED_BY_VERSION_KEY] == version, metadata
        assert metadata[contracts.SCORED_BY_URI_KEY] == f"models:/spark-scored/{version}"
    assert written.schema["note"].metadata == {}


def test_the_command_refuses_in_one_line_and_leaves_no_output(spark, tmp_path, cfg, capsys):
    info, _, _ = package(LogisticRegression(max_iter=5000), tmp_path, cfg)
    source, out = tmp_path / "in.parquet", tmp_path / "scored"
    command = ["--input", str(source), "--output", str(out), "--model-uri", info.model_uri]

    def refusal(frame: pd.DataFrame) -> str:
        frame.to_parquet(source)
        with pytest.raises(SystemExit) as exited:
            score_spark.main(command)
        assert exited.value.code == 1
        return capsys.readouterr().err.splitlines()[-1]

    # On the executor: a value the model refuses fails the job; the folder it made is removed.
    overflowing = rows(5)
    overflowing.loc[2, FEATURES[0]] = 1e308
    assert refusal(overflowing).startswith("score_spark: error: Input row 2 gives nan from LogisticRegression")
    assert not out.exists()
    # On the driver, before any job.
    expected = "score_spark: error: Spark DataFrame lacks feature column(s) ['petal width (cm)']; it has "
    assert refusal(rows(5).drop(columns=FEATURES[1])).startswith(expected)
    out.mkdir()
    (out / "kept.txt").write_text("mine")
    assert refusal(rows(5)).startswith("score_spark: error: [PATH_ALREADY_EXISTS] Path file:")
    assert [p.name for p in out.iterdir()] == ["kept.txt"]
    assert spark.range(3).count() == 3  # the command left the session it found running
