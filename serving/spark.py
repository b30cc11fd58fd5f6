"""Batch scoring on Spark, for data that outgrows one machine: locally or on a cluster.

    python -m serving.spark --input in.parquet --output out_dir [--predict-method predict]
    python -m serving.spark --master spark://host:7077 --input in.parquet --output out_dir
    # or, in your own Spark job:
    scored = score_dataframe(spark, df, "models:/iris-classifier@champion", "predict_proba")

The master is Spark's ``spark.master``: ``--master`` sets it; without it, Spark's own
resolution applies (``spark-submit --master``, ``PYSPARK_SUBMIT_ARGS``, the ``MASTER``
variable, ``spark-defaults.conf``), and ``local[*]`` when none says. Executors run the
driver's ``PYSPARK_PYTHON`` (this interpreter unless set). The model travels with the
job and each executor checks its files before loading it (``serving.spark_executor``).

The UDF is fed the model's feature columns by name and calls the pyfunc with
``params={"predict_method": ...}``. Result types keep every column:
``array<double>`` for probabilities (a scalar ``double`` would keep only the
first class), expanded into ``proba_<label>`` / ``log_proba_<label>``
columns in the model's class order; labels come back as ``long``, ``double``
or ``string`` to match the classes. Other input columns are kept.

Each prediction column carries, as Spark column metadata, the model that computed it
(``serving.batch.scored_by``: ``model_uri``, ``model_id``, and ``model_name`` and
``model_version`` for a registered version; an alias is read once, before scoring):
``scored.schema["prediction"].metadata["model_version"]``. Spark keeps column
metadata in the Parquet files it writes and reads it back.

The command's refusals (a missing column, a method the model does not offer, a model
whose files differ from their record on the driver or on an executor, an output that
exists) are one line on stderr, ``score_spark: error: ...``, after Spark's own log, and
exit 1; a failed job's output folder is removed (when it is on this machine's disk).

Needs ``pyspark`` and Java 17 (not in ``requirements.lock``; in
``requirements-dev.lock``).
"""

from __future__ import annotations

import argparse
import os
import re
import shutil
import sys
from collections.abc import Sequence
from urllib.parse import urlparse

from mlflow.exceptions import MlflowException

from core.errors import stored
from model.dispatch_model import DEFAULT_PREDICT_METHOD, PREDICT_METHOD_PARAM, PREDICT_METHODS, offered_methods
from serving.batch import COLUMN_PREFIX, one_line, scored_by
from serving.spark_executor import scoring_udf, ship_model

RESULT_COLUMN = "__prediction"
# The last line of an executor's traceback, as the driver's error quotes it.
EXECUTOR_REFUSAL = re.compile(r"^(?:[\w.]+\.)?(?:UntrustedModel|MlflowException): (.+)$", re.MULTILINE)


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
    # The executors get a verified copy and check it again before loading it (serving.spark_executor).
    udf = scoring_udf(
        ship_model(spark, exact),
        features,
        {PREDICT_METHOD_PARAM: method},
        label_type(classes) if method == "predict" else "array<double>",
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


def executor_refusal(message: str) -> str | None:
    """The refusal a Spark task failed with (``UntrustedModel`` or another ``MlflowException``
    raised on an executor), found in the error the driver gets, or None."""
    found = EXECUTOR_REFUSAL.findall(message)
    return found[-1].strip() if found else None


def local_path(output: str) -> str | None:
    """``output`` as a path on this machine's disk, if it names one (a path or a file: URI)."""
    parsed = urlparse(output)
    return output if not parsed.scheme else parsed.path if parsed.scheme == "file" else None


def main(argv: Sequence[str] | None = None) -> None:
    from pyspark.errors import AnalysisException
    from pyspark.sql import SparkSession

    from core import contracts

    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--input", required=True, help="Parquet or CSV (with header) path Spark can read")
    parser.add_argument("--output", required=True, help="Parquet directory to write; it must not exist")
    parser.add_argument("--model-uri", default=contracts.CHAMPION_URI, help=f"default {contracts.CHAMPION_URI}")
    parser.add_argument("--predict-method", default=DEFAULT_PREDICT_METHOD, choices=PREDICT_METHODS)
    parser.add_argument(
        "--master", help="Spark master URL, e.g. spark://host:7077 (default: Spark's own, MASTER or local[*])"
    )
    args = parser.parse_args(argv)
    contracts.configure_tracking()
    # Executors run this interpreter unless told otherwise: on a cluster, the same path on every worker.
    os.environ.setdefault("PYSPARK_PYTHON", sys.executable)
    started = SparkSession.getActiveSession() is None  # inside a running job, the job's session is left to it
    builder = SparkSession.builder.appName("score_spark")
    spark = (builder.master(args.master) if args.master else builder).getOrCreate()
    try:
        reader = spark.read.option("header", True).option("inferSchema", True)
        frame = reader.csv(args.input) if args.input.endswith(".csv") else reader.parquet(args.input)
        scored = score_dataframe(spark, frame, args.model_uri, args.predict_method)
        local = local_path(args.output)
        existed = local is not None and os.path.lexists(local)
        try:
            scored.write.mode("error").parquet(args.output)
        except BaseException:
            if local is not None and not existed:  # the folder the failed job made (mode "error")
                shutil.rmtree(local, ignore_errors=True)
            raise
    except (ValueError, MlflowException, AnalysisException) as err:
        _fail(getattr(err, "message", None) or str(err))
    except Exception as err:  # a failed job: an executor's refusal is in its message
        refusal = executor_refusal(str(err))
        if refusal is None:
            raise
        _fail(refusal)
    finally:
        if started:
            spark.stop()


def _fail(message: str) -> None:
    print(f"score_spark: error: {stored(one_line(message), 500)}", file=sys.stderr)
    sys.exit(1)


if __name__ == "__main__":
    main()
