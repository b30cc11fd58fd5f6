"""Step 1, ``train``: load the data, split it, fit the configured estimator.

Reads: the Hydra config (``data``, ``model``); no upstream URI. The data is
validated first (see ``core.data``): a bad file fails with a message naming it.

Writes, on its MLflow run:
- ``config.yaml``: the resolved config; params ``data.*`` and ``model.*``;
  tags ``data.digest`` (content hash), ``data.rows`` and ``data.source``;
- ``data/train.parquet`` and ``data/holdout.parquet``: the exact split, also
  logged as MLflow dataset inputs (contexts ``training`` and ``testing``), and
  ``data/contract.yaml``, ``data/profile.yaml`` (what each column is and whether it
  is a feature, ``core.profile``; each column left out is also a warning in the log) and
  ``data/reference.json`` (the training split's reference profile for drift checks:
  quantile bins and category counts, ``core.reference``), each with its SHA-256 as run
  tag ``artifact.sha256.<path>``;
- the fitted estimator as a native ``mlflow.sklearn`` model named ``model`` (a pickle),
  the digest of its files as uploaded as its tag ``model.files_sha256`` (``core.integrity``).

Outputs (run tags ``pipeline.output.*``): ``model_uri`` (``models:/m-…``),
``holdout_uri`` (``runs:/<run>/data/holdout.parquet``), and ``columns_left_out`` when the
profile left columns out for what they look like (``rownames (identifier), notes (empty)``).

Run alone: ``python -m steps.train [overrides]`` or ``mlflow run . -e train``.
"""

from __future__ import annotations

import logging
import tempfile
from collections.abc import Sequence
from pathlib import Path

import pandas as pd
from omegaconf import DictConfig, OmegaConf
from sklearn.base import BaseEstimator

from core import contract, contracts, data, profile, reference
from core.config import build_estimator, flatten
from core.errors import StepError
from core.integrity import log_artifact_recorded, log_model_recorded
from core.secrets import redact
from pipeline.lineage import MODEL_PACKAGES, pinned_requirements
from pipeline.processes.loading import run_as_process
from pipeline.processes.step import log_config, parse_step_args, record_outputs, run_in_mlflow_run, step_parser

log = logging.getLogger(__name__)


class FitError(StepError, ValueError):
    """The configured estimator refused its parameters or the data."""


def fit_estimator(estimator: BaseEstimator, train: pd.DataFrame, features: Sequence[str], target: str) -> BaseEstimator:
    """Fit ``estimator`` on the feature columns of ``train`` against ``target``.

    scikit-learn checks most parameters only here (``C=-1``, an unknown solver):
    its error becomes a :class:`FitError` naming the estimator and config ``model``.
    """
    try:
        return estimator.fit(train[list(features)], train[target])
    except (ValueError, TypeError) as err:
        hint = data.fit_hint(train[list(features)], err)
        raise FitError(f"cannot fit {type(estimator).__name__} from config 'model': {err}{hint}") from err


# MLflow infers a schema by checking every value in Python (about a minute per
# million rows); a sample of rows gives the same column types.
SCHEMA_SAMPLE_ROWS = 1000


def frame_digest(frame: pd.DataFrame) -> str | None:
    """A digest of ``frame``: its values and index (pandas' row hashes), column names and
    types. MLflow's own dataset digest looks at every cell's type in Python (about 2 s per
    million rows). None where pandas cannot hash a value (a list in a cell): MLflow's then."""
    import hashlib

    try:
        rows = pd.util.hash_pandas_object(frame, index=True).to_numpy()
    except TypeError:
        return None
    digest = hashlib.sha256(rows.tobytes())
    digest.update(repr([(str(name), str(dtype)) for name, dtype in frame.dtypes.items()]).encode())
    return digest.hexdigest()[:16]


def dataset_input(frame: pd.DataFrame, name: str, target: str):
    """``frame`` as an MLflow dataset, its schema inferred from a sample of rows."""
    import mlflow
    from mlflow.models import infer_signature

    dataset = mlflow.data.from_pandas(frame, name=name, targets=target, digest=frame_digest(frame))
    # `schema` is a cached property: setting it spares the full-table inference.
    dataset.schema = infer_signature(frame.head(SCHEMA_SAMPLE_ROWS)).inputs
    return dataset


def log_dataset(dataset, context: str, attempts: int = 3) -> None:
    """``mlflow.log_input``, retried: a tracking server inserting the same dataset for
    concurrent runs can fail one of them on its unique key ("dataset_pk"); the
    retry finds the row the other run wrote and links to it."""
    import time

    import mlflow
    from mlflow.exceptions import MlflowException

    for attempt in range(1, attempts + 1):
        try:
            mlflow.log_input(dataset, context)
            return
        except MlflowException as err:
            if attempt == attempts:
                raise
            log.warning("logging dataset %s failed (%s); retrying", dataset.name, err.message[:200])
            time.sleep(0.5 * attempt)


class _PickleNotice(logging.Filter):
    """Drops MLflow's warning that the pickle format needs caution: the native model's
    files are recorded (``core.integrity``) and checked before anything unpickles them."""

    def filter(self, record: logging.LogRecord) -> bool:
        return not record.getMessage().startswith("Saving scikit-learn models in the pickle")


def log_native_model(estimator, sample: pd.DataFrame):
    """Log ``estimator`` as a native ``mlflow.sklearn`` model and record its files' digest.

    It is the reference that ``evaluate`` checks the dispatch model against, and the
    estimator ``serialize`` writes with joblib; both load it only once its files match the
    record (``core.integrity.load_verified``). It is a pickle, as the joblib file is:
    MLflow's skops format cost each of the three steps about half a second to import
    (it scans scikit-learn, down to its test utilities), and protects nothing more here,
    since the types it trusts are read from the model's own ``MLmodel``.
    """
    import mlflow
    from mlflow.models import infer_signature

    notice = _PickleNotice()
    logging.getLogger("mlflow.sklearn").addFilter(notice)
    try:
        model_info = log_model_recorded(
            lambda: mlflow.sklearn.log_model(
                estimator,
                name=contracts.LOGGED_MODEL_NAME,
                serialization_format=mlflow.sklearn.SERIALIZATION_FORMAT_PICKLE,
                signature=infer_signature(sample, estimator.predict(sample)),
                input_example=sample.head(3),
                # Pinned here rather than inferred, which would import the model in a subprocess.
                pip_requirements=pinned_requirements(MODEL_PACKAGES),
            )
        )
    finally:
        logging.getLogger("mlflow.sklearn").removeFilter(notice)
    return model_info


def run(cfg: DictConfig, overrides: Sequence[str] = (), expected_digest: str = "") -> dict[str, str]:
    """Train inside the active MLflow run and return the step's outputs.

    ``expected_digest`` is the data digest ``main`` keyed the cache on; the data
    is hashed again before and after it is read, so a file replaced meanwhile
    fails the step instead of training on rows the lineage does not describe.
    """
    import mlflow

    log_config(cfg, overrides, step="train")
    params = flatten(OmegaConf.to_container(cfg.data, resolve=True), prefix="data.") | flatten(
        OmegaConf.to_container(cfg.model, resolve=True), prefix="model."
    )
    mlflow.log_params({key: redact(str(value)) for key, value in params.items()})  # ${oc.env:...} may hold one

    digest = data.data_digest(cfg.data)
    train, holdout, features, columns = data.prepare(cfg.data)
    after = data.data_digest(cfg.data)
    if after != digest or (expected_digest and digest != expected_digest):
        raise data.DataError(
            f"Data {data.describe_source(cfg.data)} changed while the pipeline ran "
            f"(digest expected {expected_digest or digest}, before reading {digest}, after {after})"
        )
    target = cfg.data.target
    mlflow.set_tags(
        {
            contracts.DATA_DIGEST_TAG: digest,
            contracts.DATA_ROWS_TAG: str(len(train) + len(holdout)),
            "data.source": data.describe_source(cfg.data),
        }
    )
    log.info("train rows: %d, holdout rows: %d", len(train), len(holdout))

    with tempfile.TemporaryDirectory() as tmp:
        for frame, artifact in ((train, contracts.TRAIN_DATA_ARTIFACT), (holdout, contracts.HOLDOUT_ARTIFACT)):
            path = Path(tmp) / Path(artifact).name
            frame.to_parquet(path)
            log_artifact_recorded(path, artifact)
    log_dataset(dataset_input(train, "train", target), "training")
    log_dataset(dataset_input(holdout, "holdout", target), "testing")
    log_contract(train[features])
    log_text(
        reference.reference_json(reference.reference_profile(train[features], target)), reference.REFERENCE_ARTIFACT
    )
    log_text(
        profile.profile_yaml(columns, data.describe_source(cfg.data), len(train) + len(holdout)),
        profile.PROFILE_ARTIFACT,
    )

    estimator = fit_estimator(build_estimator(cfg.model), train, features, target)
    model_info = log_native_model(estimator, train[features].head(SCHEMA_SAMPLE_ROWS))
    run_id = mlflow.active_run().info.run_id
    outputs = {"model_uri": model_info.model_uri, "holdout_uri": f"runs:/{run_id}/{contracts.HOLDOUT_ARTIFACT}"}
    if left_out := profile.left_out_summary(columns):
        outputs["columns_left_out"] = left_out
    record_outputs(outputs)
    return outputs


def log_contract(features: pd.DataFrame) -> None:
    """Log the training data's contract (``core.contract``) for consumers to check new data
    against. A contract that cannot be inferred is a warning: it reports, it decides nothing."""

    try:
        text = contract.contract_yaml(features)
    except Exception as err:  # noqa: BLE001 - pandera cannot describe some dtypes
        log.warning("no data contract logged: %s: %s", type(err).__name__, err)
        return
    log_text(text, contract.CONTRACT_ARTIFACT)


def log_text(text: str, artifact: str) -> None:
    """Log ``text`` as ``artifact``, its SHA-256 recorded (``core.integrity``)."""
    with tempfile.TemporaryDirectory() as tmp:
        path = Path(tmp) / Path(artifact).name
        path.write_text(text)
        log_artifact_recorded(path, artifact)


def main(argv: Sequence[str] | None = None) -> None:
    parser = step_parser(__doc__)
    parser.add_argument("--data-digest", default="", help="digest the data must still have (from main)")
    args, cfg = parse_step_args(parser, argv)
    contracts.configure_logging()
    contracts.configure_tracking()
    run_in_mlflow_run(lambda: run(cfg, args.overrides, args.data_digest), cfg)


if __name__ == "__main__":
    run_as_process(main)
