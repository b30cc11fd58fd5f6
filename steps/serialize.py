"""Step 2, ``serialize``: write the trained estimator with joblib and record its digest.

Reads: ``--model-uri``, the native ``mlflow.sklearn`` model logged by ``train``
(``models:/m-…``), loaded only once its files match the record ``train`` made of
them (``core.integrity``).

Writes, on its MLflow run: ``estimator/estimator.joblib``, its SHA-256 as
``estimator/estimator.joblib.sha256`` (``sha256sum`` format) and as the param
``estimator_sha256``.

Outputs (run tags ``pipeline.output.*``): ``joblib_uri``
(``runs:/<run>/estimator/estimator.joblib``) and ``joblib_sha256``.

Run alone: ``python -m steps.serialize --model-uri URI [overrides]`` or
``mlflow run . -e serialize -P model_uri=URI``.
"""

from __future__ import annotations

import logging
import tempfile
from collections.abc import Sequence
from pathlib import Path

import joblib

from core import contracts
from core.integrity import load_verified
from model.dispatch_model import DIGEST_CONFIG_KEY, sha256_file
from pipeline.processes.loading import run_as_process
from pipeline.processes.step import log_config, parse_step_args, record_outputs, run_in_mlflow_run, step_parser

log = logging.getLogger(__name__)


def serialize_estimator(estimator, path: Path) -> str:
    """Write ``estimator`` to ``path`` with joblib and return the file's SHA-256."""
    joblib.dump(estimator, path)
    return sha256_file(path)


def run(model_uri: str, cfg, overrides: Sequence[str] = ()) -> dict[str, str]:
    """Serialize the model at ``model_uri`` inside the active MLflow run."""
    import mlflow

    log_config(cfg, overrides, step="serialize")
    mlflow.log_param("model_uri", model_uri)
    estimator = load_verified(model_uri, flavor=mlflow.sklearn)
    with tempfile.TemporaryDirectory() as tmp:
        path = Path(tmp) / contracts.ESTIMATOR_FILENAME
        digest = serialize_estimator(estimator, path)
        mlflow.log_artifact(str(path), artifact_path=contracts.ESTIMATOR_ARTIFACT_DIR)
        # sha256sum format, so `sha256sum -c` verifies a downloaded copy.
        digest_file = Path(tmp) / f"{contracts.ESTIMATOR_FILENAME}.sha256"
        digest_file.write_text(f"{digest}  {contracts.ESTIMATOR_FILENAME}\n")
        mlflow.log_artifact(str(digest_file), artifact_path=contracts.ESTIMATOR_ARTIFACT_DIR)
    mlflow.log_param(DIGEST_CONFIG_KEY, digest)
    run_id = mlflow.active_run().info.run_id
    outputs = {
        "joblib_uri": f"runs:/{run_id}/{contracts.ESTIMATOR_ARTIFACT_DIR}/{contracts.ESTIMATOR_FILENAME}",
        "joblib_sha256": digest,
    }
    record_outputs(outputs)
    return outputs


def main(argv: Sequence[str] | None = None) -> None:
    parser = step_parser(__doc__)
    parser.add_argument("--model-uri", required=True, help="MLflow URI of the trained sklearn model")
    args, cfg = parse_step_args(parser, argv)
    contracts.configure_logging()
    contracts.configure_tracking()
    run_in_mlflow_run(lambda: run(args.model_uri, cfg, args.overrides), cfg)


if __name__ == "__main__":
    run_as_process(main)
