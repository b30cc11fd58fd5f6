"""The parts of Spark scoring that need no Spark: the model's zip, the output column
values, and the one line the driver reports from a failed job."""

from __future__ import annotations

import zipfile

import numpy as np
import pytest

from core.integrity import UntrustedModel, check_files, directory_digest
from serving.spark import executor_refusal, local_path
from serving.spark_executor import pack_model, spark_column

DRIVER_ERROR = """An exception was thrown from the Python worker. Please see the stack trace below.
Traceback (most recent call last):
  File "./project-code.zip/serving/spark_executor.py", line 120, in load_shipped
    check_files(
  File "./project-code.zip/core/integrity.py", line 258, in check_files
    raise UntrustedModel(
core.integrity.UntrustedModel: refusing to load models:/iris-classifier/1 on the Spark executor at vm: the copy differs
 SQLSTATE: 38000"""


def model_folder(root):
    (root / "artifacts").mkdir(parents=True)
    (root / "MLmodel").write_text("artifact_path: model\nflavors: {}\n")
    (root / "dispatch_model.py").write_text("x = 1\n")
    (root / "artifacts" / "estimator.joblib").write_bytes(b"\x80\x04joblib")
    return root


def test_the_zip_unpacks_to_the_digest_of_the_folder(tmp_path):
    folder = model_folder(tmp_path / "model")
    with zipfile.ZipFile(pack_model(folder, tmp_path / "model.zip")) as packed:
        packed.extractall(tmp_path / "unpacked")
    check_files(tmp_path / "unpacked", directory_digest(folder), "refusing")

    (tmp_path / "unpacked" / "dispatch_model.py").write_text("x = 2\n")
    with pytest.raises(UntrustedModel, match=r"^refusing \(digest \w{12}\.\.\., recorded \w{12}\.\.\.\); a file was"):
        check_files(tmp_path / "unpacked", directory_digest(folder), "refusing")


def test_the_driver_reports_the_executors_refusal_not_the_trace():
    assert executor_refusal(DRIVER_ERROR) == (
        "refusing to load models:/iris-classifier/1 on the Spark executor at vm: the copy differs"
    )
    assert executor_refusal("mlflow.exceptions.MlflowException: Input row 3 gives nan\n") == "Input row 3 gives nan"
    assert executor_refusal("java.lang.OutOfMemoryError: Java heap space") is None


def test_only_a_path_on_this_disk_is_local():
    assert local_path("out/scored") == "out/scored"
    assert local_path("file:///tmp/scored") == "/tmp/scored"
    assert local_path("hdfs://namenode/scored") is None
    assert local_path("s3a://bucket/scored") is None


def test_output_values_match_the_spark_type():
    assert spark_column(np.array([0, 2]), "long").dtype == np.int64
    assert spark_column(np.array([True, False]), "boolean").tolist() == [True, False]
    assert spark_column(np.array(["Adelie", "Gentoo"], dtype=object), "string").tolist() == ["Adelie", "Gentoo"]
    probabilities = spark_column(np.array([[0.25, 0.75], [1.0, 0.0]], dtype=np.float32), "array<double>")
    assert [list(row) for row in probabilities] == [[0.25, 0.75], [1.0, 0.0]]
    assert probabilities[0].dtype == np.float64
