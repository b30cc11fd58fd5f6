"""The model on Spark executors: shipped with the job, and its files checked there before
it is loaded, as in process (``core.integrity``).

On the driver, :func:`ship_model` reads the digest recorded of the model's files when it
was logged, downloads a verified copy, packs it into a zip and adds it to the job
(``SparkContext.addFile``), together with this project's ``core`` and ``serving``
packages (``SparkContext.addPyFile``), the code the executors run. A worker node thus
needs no shared disk and no copy of the project or of the model: only Java 17 and the
project's Python environment at the path of the driver's ``PYSPARK_PYTHON``.

On an executor, the first task of each Python worker unpacks the zip into a private
folder and compares its files with the recorded digest, which travels with the job
(:func:`load_shipped`); only then does MLflow load it (and the dispatch model check its
estimator's SHA-256). A copy that differs raises ``UntrustedModel`` naming the model and
the host: the task fails, none of the copy's bytes has been unpickled or executed, and
the job fails with that message (``serving.spark`` prints it as one line). The loaded
model serves that Python worker's later tasks. It needs a classic session (one with a
``SparkContext``), not a Spark Connect client.
"""

import atexit
import functools
import logging
import os
import shutil
import socket
import sys
import tempfile
import uuid
import zipfile
from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path

import numpy as np
import pandas as pd

from core.contracts import PROJECT_DIR
from core.integrity import check_files, recorded_files, verified_copy

SHIPPED_PACKAGES = ("core", "serving")  # what the executors import: this module and core.integrity
CODE_ARCHIVE = "project-code.zip"
SPARK_TYPES = {"long": np.int64, "double": np.float64, "boolean": np.bool_}

log = logging.getLogger(__name__)
_loaded: dict[str, object] = {}  # per Python worker: zip name -> the model loaded from it


@dataclass(frozen=True)
class ShippedModel:
    """What an executor needs to find, check and name the model's copy."""

    archive: str  # the zip's name among the job's files (SparkFiles)
    digest: str  # recorded when the model was logged (core.integrity.FILES_DIGEST_TAG)
    model_uri: str  # exactly this model: models:/<name>/<version> or models:/<model id>


@functools.cache
def _job_folder() -> Path:
    """A folder, removed when the driver exits, for the zips Spark serves to executors
    (while the job runs, which is after ``score_dataframe`` returns)."""
    folder = Path(tempfile.mkdtemp(prefix="spark-shipped-"))
    atexit.register(shutil.rmtree, folder, True)
    return folder


def pack_model(local: Path, archive: Path) -> Path:
    """Zip the model folder ``local`` into ``archive``."""
    with zipfile.ZipFile(archive, "w", zipfile.ZIP_DEFLATED) as packed:
        for path in sorted(p for p in local.rglob("*") if p.is_file()):
            packed.write(path, path.relative_to(local).as_posix())
    return archive


def _ship_code(context) -> None:
    """Add the packages of :data:`SHIPPED_PACKAGES` to the job, once per SparkContext."""
    archive = _job_folder() / CODE_ARCHIVE
    if not archive.exists():
        partial = archive.with_suffix(".partial")
        with zipfile.ZipFile(partial, "w", zipfile.ZIP_DEFLATED) as packed:
            for package in SHIPPED_PACKAGES:
                for path in sorted((PROJECT_DIR / package).glob("*.py")):
                    packed.write(path, f"{package}/{path.name}")
        partial.replace(archive)
    if not any(added.endswith(f"/{CODE_ARCHIVE}") for added in context.listFiles):
        context.addPyFile(str(archive))


def ship_model(spark, model_uri: str) -> ShippedModel:
    """Add a verified copy of ``model_uri`` (and the code that checks it) to ``spark``'s jobs."""
    exact, digest = recorded_files(model_uri)
    with verified_copy(exact) as local:
        archive = pack_model(local, _job_folder() / f"model-{uuid.uuid4().hex}.zip")
    spark.sparkContext.addFile(str(archive))
    _ship_code(spark.sparkContext)
    return ShippedModel(archive.name, digest, exact)


def _executor_log() -> logging.Logger:
    """This module's logger, writing to the Python worker's stderr (the executor's log)."""
    if not log.handlers:
        handler = logging.StreamHandler(sys.stderr)
        handler.setFormatter(logging.Formatter("%(asctime)s %(levelname)s %(name)s: %(message)s"))
        log.addHandler(handler)
        log.setLevel(logging.INFO)
        log.propagate = False
    return log


def load_shipped(shipped: ShippedModel):
    """On an executor: the model of ``shipped``, its files checked before it is loaded."""
    import mlflow
    from pyspark import SparkFiles

    if shipped.archive in _loaded:
        return _loaded[shipped.archive]
    where = f"{socket.gethostname()} (Python worker {os.getpid()})"
    with tempfile.TemporaryDirectory(prefix="verified-model-") as tmp:
        with zipfile.ZipFile(SparkFiles.get(shipped.archive)) as packed:
            packed.extractall(tmp)
        check_files(
            Path(tmp),
            shipped.digest,
            f"refusing to load {shipped.model_uri} on the Spark executor at {where}: "
            "the copy shipped with the job differs from the files recorded when it was logged",
        )
        _executor_log().info(
            "verified the files of %s (digest %s...) on the Spark executor at %s, running %s",
            shipped.model_uri,
            shipped.digest[:12],
            where,
            sys.executable,
        )
        _loaded[shipped.archive] = mlflow.pyfunc.load_model(tmp)
    return _loaded[shipped.archive]


def spark_column(result, result_type: str) -> pd.Series:
    """The model's output as the values of a Spark column of ``result_type``: labels as
    ``long``, ``double``, ``boolean`` or ``string``, probabilities as ``array<double>``."""
    values = np.asarray(result)
    if result_type == "array<double>":
        return pd.Series(list(values.astype(np.float64)))
    if result_type == "string":
        return pd.Series(values).map(str)
    return pd.Series(values.astype(SPARK_TYPES[result_type]))


def scoring_udf(shipped: ShippedModel, features: list[str], params: dict, result_type: str):
    """A pandas UDF taking the feature columns in ``features``' order and giving the
    model's output for ``params``; each executor checks the model before its first batch."""
    from pyspark.sql.functions import pandas_udf

    def score(batches: Iterator[tuple[pd.Series, ...]]) -> Iterator[pd.Series]:
        model = load_shipped(shipped)
        for columns in batches:
            columns = (columns,) if isinstance(columns, pd.Series) else columns
            frame = pd.DataFrame(dict(zip(features, columns, strict=True)), columns=features)
            yield spark_column(model.predict(frame, params=params), result_type)

    return pandas_udf(score, result_type)
