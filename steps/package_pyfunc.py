"""Step 3, ``package_pyfunc``: wrap the joblib estimator in the dynamic-dispatch pyfunc and register it.

Reads:
- ``--joblib-uri`` and ``--joblib-sha256``: the file ``serialize`` wrote and its
  digest; the file is refused if its digest differs;
- ``--example-uri``: a Parquet data file (the holdout) whose feature columns
  give the input example and the signature's column types (``core.features``);
  the data contract and the reference profile ``train`` logged in the same run
  (``core.contract``, ``core.reference``); each read only if its SHA-256 matches
  the one ``train`` recorded;
- the Hydra config (``registry.model_name``, ``registry.register``).

Writes: a pyfunc model named ``model`` logged from ``model/dispatch_model.py``
(models from code) with artifact ``estimator``, model config ``estimator_sha256``
and ``nullable_features`` (the columns where the fitted estimator accepts a gap,
asked of it), the ``predict_method`` param in its signature, metadata
``predict_methods`` (the methods the estimator really has),
``default_predict_method``, ``classes``, ``feature_names``, ``nullable_features``,
``data_contract`` and ``data_reference`` (the training data's reference profile, JSON, for
drift checks: ``core.drift``), and pinned pip requirements; the digest of all its files, taken
as they are uploaded, as its tag ``model.files_sha256`` in the tracking store, checked
against the stored copy before anything is registered (``core.integrity``: consumers
load it only if its files still match); registered as a new version of
``registry.model_name`` tagged ``validation_status=pending`` unless
``registry.register`` is false (sweep jobs whose candidates are not registered).

Outputs (run tags ``pipeline.output.*``): ``pyfunc_model_uri`` (the logged
model, ``models:/m-…``); when registered, ``registered_model_uri``
(``models:/<name>/<version>``) and ``registered_model_version``.

Run alone: ``python -m steps.package_pyfunc --joblib-uri URI --joblib-sha256 HEX
--example-uri URI [overrides]`` or ``mlflow run . -e package_pyfunc -P ...``.
"""

from __future__ import annotations

import logging
from collections.abc import Sequence
from pathlib import Path

import pandas as pd

from core import contracts
from core.contract import CONTRACT_ARTIFACT
from core.contract import METADATA_KEY as CONTRACT_METADATA_KEY
from core.errors import StepError
from core.features import as_sent, input_schema, nullable_columns
from core.integrity import log_model_recorded, verified_artifact
from core.reference import METADATA_KEY as REFERENCE_METADATA_KEY
from core.reference import REFERENCE_ARTIFACT
from model import dispatch_model
from model.dispatch_model import (
    DIGEST_CONFIG_KEY,
    ESTIMATOR_ARTIFACT_KEY,
    NULLABLE_CONFIG_KEY,
    PREDICT_METHOD_PARAM,
    available_methods,
    default_method,
    load_verified_estimator,
)
from pipeline.lineage import MODEL_PACKAGES, pinned_requirements
from pipeline.processes.loading import run_as_process
from pipeline.processes.step import log_config, parse_step_args, record_outputs, run_in_mlflow_run, step_parser

log = logging.getLogger(__name__)

MODEL_CODE_PATH = Path(dispatch_model.__file__)


def model_signature(estimator, features: pd.DataFrame):
    """The input schema with each feature's real type (``core.features.input_schema``), the
    default method's output, and the ``predict_method`` param whose default is that
    method (``predict`` for an estimator without probabilities)."""
    from mlflow.models import ModelSignature, infer_signature

    method = default_method(estimator)
    example = features.head(5)
    inferred = infer_signature(example, getattr(estimator, method)(example), params={PREDICT_METHOD_PARAM: method})
    inputs = input_schema(features)
    integers = [spec.name for spec in inputs.inputs if spec.type.name in ("long", "integer")]
    if integers:  # instead of MLflow's hint, silenced by contracts.configure_logging
        log.info(
            "integer column(s) %s are typed long: a request or batch row with a gap there is "
            "refused (a column with gaps in training is typed double)",
            integers,
        )
    return ModelSignature(inputs, inferred.outputs, inferred.params)


def model_metadata(estimator, features: Sequence[str]) -> dict:
    """What the model offers: its prediction methods (and default), class labels (the
    column order of probability outputs) and feature names."""
    classes = getattr(estimator, "classes_", None)
    return {
        "predict_methods": list(available_methods(estimator)),
        "default_predict_method": default_method(estimator),
        "classes": [] if classes is None else classes.tolist(),
        "feature_names": list(features),
        "estimator": type(estimator).__name__,
    }


def log_dispatch_model(
    estimator_path: str,
    digest: str,
    estimator,
    features: pd.DataFrame,
    data_contract: str | None = None,
    data_reference: str | None = None,
):
    """Log the dynamic-dispatch pyfunc in the active run; return its ``ModelInfo``.

    ``features`` (the holdout's feature columns) give the signature's column types and
    the columns in which the estimator accepts missing values (asked of the estimator).
    ``data_contract``: the training data's contract (YAML), kept in the model's metadata
    so that every consumer can check new data against it; ``data_reference``: the reference
    profile of the training data (JSON), kept beside it for drift checks.
    """
    import mlflow

    nullable = nullable_columns(estimator, features)
    metadata = model_metadata(estimator, features.columns) | {NULLABLE_CONFIG_KEY: nullable}
    if data_contract:
        metadata[CONTRACT_METADATA_KEY] = data_contract
    if data_reference:
        metadata[REFERENCE_METADATA_KEY] = data_reference
    # What every consumer checks before loading it: the digest of the files as uploaded.
    return log_model_recorded(
        lambda: mlflow.pyfunc.log_model(
            name=contracts.LOGGED_MODEL_NAME,
            python_model=str(MODEL_CODE_PATH),
            artifacts={ESTIMATOR_ARTIFACT_KEY: estimator_path},
            model_config={DIGEST_CONFIG_KEY: digest, NULLABLE_CONFIG_KEY: nullable},
            signature=model_signature(estimator, features),
            input_example=as_sent(features.head(5)),
            pip_requirements=pinned_requirements(MODEL_PACKAGES),
            metadata=metadata,
        )
    )


def training_artifact(example_uri: str, artifact: str = CONTRACT_ARTIFACT) -> str | None:
    """The text of ``artifact`` (the data contract, the reference profile) ``train`` logged in the
    run that also logged ``example_uri`` (``runs:/<train run>/...``); None, with a warning, when
    there is none."""
    from core.integrity import UntrustedModel

    run_id = example_uri.removeprefix("runs:/").split("/", 1)[0] if example_uri.startswith("runs:/") else None
    if not run_id:
        log.warning("no %s for %s: not an artifact of a train run", artifact, example_uri)
        return None
    try:
        with verified_artifact(f"runs:/{run_id}/{artifact}") as path:
            return path.read_text()
    except UntrustedModel as err:
        if "no record" not in err.message:
            raise
        log.warning("no %s for %s: %s", artifact, example_uri, err.message)  # train could not make one
        return None


def feature_columns(estimator, frame: pd.DataFrame, source: str) -> list[str]:
    """The estimator's fit-time feature names, checked against ``frame``."""
    names = getattr(estimator, "feature_names_in_", None)
    if names is None:
        raise StepError(
            f"{type(estimator).__name__} was fitted without feature names; "
            "fit it on a DataFrame so the model gets a column-based signature."
        )
    missing = [name for name in names if name not in frame.columns]
    if missing:
        raise StepError(f"Example data {source} lacks feature column(s) {missing}")
    return list(names)


def run(joblib_uri: str, joblib_sha256: str, example_uri: str, cfg, overrides: Sequence[str] = ()) -> dict[str, str]:
    """Package and register the model inside the active MLflow run."""
    import mlflow

    log_config(cfg, overrides, step="package_pyfunc")
    mlflow.log_params({"joblib_uri": joblib_uri, DIGEST_CONFIG_KEY: joblib_sha256, "example_uri": example_uri})
    estimator_path = mlflow.artifacts.download_artifacts(artifact_uri=joblib_uri)
    estimator = load_verified_estimator(estimator_path, joblib_sha256)
    with verified_artifact(example_uri) as example_path:
        frame = pd.read_parquet(example_path)
    features = frame[feature_columns(estimator, frame, example_uri)]
    model_info = log_dispatch_model(
        estimator_path,
        joblib_sha256,
        estimator,
        features,
        training_artifact(example_uri, CONTRACT_ARTIFACT),
        training_artifact(example_uri, REFERENCE_ARTIFACT),
    )
    outputs = {"pyfunc_model_uri": model_info.model_uri}
    if cfg.registry.register:
        run_id = mlflow.active_run().info.run_id
        outputs |= register(model_info.model_uri, cfg.registry.model_name, joblib_sha256, run_id)
    record_outputs(outputs)
    return outputs


def register(pyfunc_model_uri: str, name: str, joblib_sha256: str, package_run_id: str) -> dict[str, str]:
    """Register a logged dispatch model as a new version of ``name``; return the outputs naming it.

    The version gets its tags in the same call: no version ever exists without a status.
    """
    import mlflow

    registered = mlflow.register_model(
        pyfunc_model_uri,
        name,
        tags={
            contracts.VALIDATION_STATUS_TAG: "pending",
            "package_run_id": package_run_id,
            DIGEST_CONFIG_KEY: joblib_sha256,
        },
    )
    return {
        "registered_model_uri": f"models:/{registered.name}/{registered.version}",
        "registered_model_version": str(registered.version),
    }


def main(argv: Sequence[str] | None = None) -> None:
    parser = step_parser(__doc__)
    parser.add_argument("--joblib-uri", required=True, help="URI of the joblib file from serialize")
    parser.add_argument("--joblib-sha256", required=True, help="SHA-256 recorded by serialize")
    parser.add_argument("--example-uri", required=True, help="Parquet data for the input example")
    args, cfg = parse_step_args(parser, argv)
    contracts.configure_logging()
    contracts.configure_tracking()
    run_in_mlflow_run(lambda: run(args.joblib_uri, args.joblib_sha256, args.example_uri, cfg, args.overrides), cfg)


if __name__ == "__main__":
    run_as_process(main)
