"""Batch scoring on Spark with ``mlflow.pyfunc.spark_udf``, for data that outgrows one machine.

    python -m serving.spark --input in.parquet --output out_dir [--predict-method predict]
    # or, in your own Spark job:
    scored = score_dataframe(spark, df, "models:/iris-classifier@champion", "predict_proba")

The UDF is built once per method with ``params={"predict_method": ...}`` and is
fed the model's feature columns by name. Result types keep every column:
``array<double>`` for probabilities (a scalar ``double`` would silently keep
only the first class), expanded into ``proba_<label>`` / ``log_proba_<label>``
columns in the model's class order; labels come back as ``long``, ``double``
or ``string`` to match the classes. Other input columns are kept.

Each prediction column carries, as Spark column metadata, the model that computed it
(``serving.batch.scored_by``: ``model_uri``, ``model_id``, and ``model_name`` and
``model_version`` for a registered version; an alias is read once, before scoring):
``scored.schema["prediction"].metadata["model_version"]``. Spark keeps column
metadata in the Parquet files it writes and reads it back.

Needs ``pyspark`` and Java (not in ``requirements.lock``; in
``requirements-dev.lock``).
"""

from __future__ import annotations

import argparse
import os
import sys
from collections.abc import Sequence

from core.integrity import verified_copy
from model.dispatch_model import DEFAULT_PREDICT_METHOD, PREDICT_METHOD_PARAM, PREDICT_METHODS, offered_methods
from serving.batch import COLUMN_PREFIX, scored_by

RESULT_COLUMN = "__prediction"


def label_type(classes: Sequence) -> str:
    """Spark type of ``predict``'s labels."""
    if classes and all(isinstance(c, bool) for c in classes):
        return "boolean"
    if classes and all(isinstance(c, int) for c in classes):
        return "long"
    if classes and all(isinstance(c, (int, float)) for c in classes):
        return "double"
    return "string"


def score_dataframe(spark, frame, model_uri: str, method: str = DEFAULT_PREDICT_METHOD):
    """``frame`` with prediction columns added, computed by the pyfunc's ``method``."""
    import mlflow
    from pyspark.sql import functions as F

    if method not in PREDICT_METHODS:
        raise ValueError(f"predict_method {method!r} is not one of {', '.join(PREDICT_METHODS)}")
    exact, provenance = scored_by(model_uri)  # the version recorded is the version that scores
    info = mlflow.models.get_model_info(exact)
    features = info.signature.inputs.input_names()
    classes = (info.metadata or {}).get("classes", [])
    offered = offered_methods(info.metadata)
    if method not in offered:  # refused here rather than as an error inside every Spark task
        raise ValueError(f"predict_method {method!r} is not offered by {model_uri}; it offers {', '.join(offered)}")
    missing = [f for f in features if f not in frame.columns]
    if missing:
        raise ValueError(f"Spark DataFrame lacks feature column(s) {missing}; it has {frame.columns}")
    # spark_udf copies the model it is given for the executors: a verified copy (core.integrity).
    with verified_copy(exact) as local:
        udf = mlflow.pyfunc.spark_udf(
            spark,
            str(local),
            result_type=label_type(classes) if method == "predict" else "array<double>",
            env_manager="local",
            params={PREDICT_METHOD_PARAM: method},
        )
    scored = frame.withColumn(RESULT_COLUMN, udf(*[F.col(f"`{f}`") for f in features]))
    kept = [F.col(f"`{c}`") for c in frame.columns]
    if method == "predict":
        return scored.select(*kept, F.col(RESULT_COLUMN).alias("prediction", metadata=provenance))
    prefix = COLUMN_PREFIX[method]
    return scored.select(
        *kept,
        *[F.col(RESULT_COLUMN)[i].alias(f"{prefix}{label}", metadata=provenance) for i, label in enumerate(classes)],
    )


def main(argv: Sequence[str] | None = None) -> None:
    from pyspark.sql import SparkSession

    from core import contracts

    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--input", required=True, help="Parquet or CSV (with header) path Spark can read")
    parser.add_argument("--output", required=True, help="Parquet directory to write")
    parser.add_argument("--model-uri", default=contracts.CHAMPION_URI, help=f"default {contracts.CHAMPION_URI}")
    parser.add_argument("--predict-method", default=DEFAULT_PREDICT_METHOD, choices=PREDICT_METHODS)
    args = parser.parse_args(argv)
    contracts.configure_tracking()
    # Local workers run this interpreter (with mlflow and the model's packages) unless told otherwise.
    os.environ.setdefault("PYSPARK_PYTHON", sys.executable)
    spark = SparkSession.builder.appName("score_spark").getOrCreate()
    reader = spark.read.option("header", True).option("inferSchema", True)
    frame = reader.csv(args.input) if args.input.endswith(".csv") else reader.parquet(args.input)
    score_dataframe(spark, frame, args.model_uri, args.predict_method).write.mode("error").parquet(args.output)


if __name__ == "__main__":
    main()
