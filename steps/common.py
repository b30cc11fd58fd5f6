"""What every step shares: config composition, the tracking store, artifact
names and the way a step hands its outputs to the next one.

A step records each output (an MLflow URI or a digest) as a run tag
``pipeline.output.<name>``; the ``main`` entry point reads those tags and passes
them on as the next step's parameters, so nothing travels through local paths.
"""

from __future__ import annotations

import argparse
import logging
import os
import re
from collections.abc import Mapping, Sequence
from pathlib import Path

from hydra import compose, initialize_config_dir
from omegaconf import DictConfig, OmegaConf

log = logging.getLogger(__name__)

PROJECT_DIR = Path(__file__).resolve().parent.parent
CONF_DIR = PROJECT_DIR / "conf"
CONFIG_NAME = "config"

# Names under which steps log artifacts; one place so that producer and consumer agree.
TRAIN_DATA_ARTIFACT = "data/train.parquet"
HOLDOUT_ARTIFACT = "data/holdout.parquet"
ESTIMATOR_ARTIFACT_DIR = "estimator"
ESTIMATOR_FILENAME = "estimator.joblib"
LOGGED_MODEL_NAME = "model"
CONFIG_ARTIFACT = "config.yaml"

OUTPUT_TAG_PREFIX = "pipeline.output."
OVERRIDES_TAG = "pipeline.hydra_overrides"
ERROR_TAG = "pipeline.error"
STEP_TAG = "pipeline.step"

VALIDATION_STATUS_TAG = "validation_status"
DATA_DIGEST_TAG = "data.digest"
DATA_ROWS_TAG = "data.rows"


def tracking_uri() -> str:
    """The tracking URI: ``MLFLOW_TRACKING_URI`` when set, else SQLite in the project root.

    The SQLite path is absolute so that every step process, whatever its working
    directory, writes to the same database (a relative one would create a second).
    """
    return os.environ.get("MLFLOW_TRACKING_URI") or f"sqlite:///{PROJECT_DIR / 'mlflow.db'}"


def configure_logging() -> None:
    logging.basicConfig(
        level=logging.INFO, format="%(asctime)s %(levelname)s %(name)s: %(message)s"
    )


# Set unless the user chose otherwise, and inherited by step processes: bounded
# retries for MLflow's HTTP client (its defaults retry for minutes), and no
# artifact download progress bars in the logs of steps and schedulers.
MLFLOW_ENV_DEFAULTS = {
    "MLFLOW_HTTP_REQUEST_MAX_RETRIES": "2",
    "MLFLOW_HTTP_REQUEST_TIMEOUT": "30",
    "MLFLOW_ENABLE_ARTIFACTS_PROGRESS_BAR": "false",
}


def configure_tracking() -> str:
    """Point MLflow at :func:`tracking_uri` (with :data:`MLFLOW_ENV_DEFAULTS`) and return it."""
    import mlflow

    for key, value in MLFLOW_ENV_DEFAULTS.items():
        os.environ.setdefault(key, value)
    uri = tracking_uri()
    mlflow.set_tracking_uri(uri)
    return uri


# A run of non-space characters and quoted strings (which may contain spaces).
_OVERRIDE_TOKEN = re.compile(r"""(?:[^\s'"]+|'[^']*'|"[^"]*")+""")


def split_overrides(args: Sequence[str]) -> list[str]:
    """Turn command-line arguments into a flat list of Hydra overrides.

    ``mlflow run -P hydra_options="a=1 b=2"`` shell-quotes the value, so it arrives
    as one argument (and an empty value as ``''``). Each argument is split on
    whitespace outside quotes, and the quotes are kept for Hydra to parse
    (``registry.model_name='a b'`` stays one override).
    """
    overrides: list[str] = []
    for arg in args:
        if _OVERRIDE_TOKEN.sub("", arg).strip():
            raise ValueError(f"Unbalanced quotes in Hydra overrides: {arg!r}")
        overrides.extend(_OVERRIDE_TOKEN.findall(arg))
    return overrides


def compose_config(overrides: Sequence[str] = ()) -> DictConfig:
    """Compose ``conf/config.yaml`` with Hydra overrides.

    Raises Hydra's own exceptions (e.g. ``ConfigCompositionException``) for an
    unknown key or a malformed override; they name the offending override.
    """
    with initialize_config_dir(config_dir=str(CONF_DIR), version_base="1.3"):
        return compose(config_name=CONFIG_NAME, overrides=list(overrides))


def step_parser(description: str) -> argparse.ArgumentParser:
    """An argument parser whose trailing positional arguments are Hydra overrides."""
    parser = argparse.ArgumentParser(
        description=description, formatter_class=argparse.RawDescriptionHelpFormatter
    )
    parser.add_argument(
        "overrides",
        nargs="*",
        help="Hydra overrides, e.g. model.C=0.5 data.test_size=0.3 (one argument may hold several)",
    )
    return parser


def parse_step_args(
    parser: argparse.ArgumentParser, argv: Sequence[str] | None = None
) -> tuple[argparse.Namespace, DictConfig]:
    """Parse a step's arguments and compose its config, exiting 2 on a bad override."""
    from hydra.errors import HydraException

    args = parser.parse_args(argv)
    try:
        args.overrides = split_overrides(args.overrides)
        cfg = compose_config(args.overrides)
    except (HydraException, ValueError) as err:
        parser.exit(2, f"{parser.prog}: error: invalid Hydra override: {err}\n")
    return args, cfg


def log_config(cfg: DictConfig, overrides: Sequence[str], step: str) -> None:
    """Log the resolved config as an artifact and the overrides and step name as tags."""
    import mlflow

    mlflow.log_text(OmegaConf.to_yaml(cfg, resolve=True), CONFIG_ARTIFACT)
    mlflow.set_tags({OVERRIDES_TAG: " ".join(overrides), STEP_TAG: step})


class StepError(Exception):
    """A refusal a step explains in one line: bad data, a bad parameter, a refused
    artifact, a failed validation. Anything else is a bug and keeps its traceback."""


def run_in_mlflow_run(body) -> None:
    """Run ``body()`` inside ``mlflow.start_run()`` (which resumes the run ``mlflow run`` made).

    A failure ends the process with exit status 1 and the run FAILED, its message
    recorded as tag ``pipeline.error`` for ``main``'s summary. A :class:`StepError`,
    or an ``MlflowException`` refusing an input (a URI that does not exist, a bad
    parameter, a joblib file whose digest differs: ``INVALID_STATE``), is logged as
    one line; any other error with its traceback.
    """
    import mlflow
    from mlflow.exceptions import MlflowException
    from mlflow.protos.databricks_pb2 import (
        INVALID_PARAMETER_VALUE,
        INVALID_STATE,
        RESOURCE_DOES_NOT_EXIST,
        ErrorCode,
    )

    refusals = {ErrorCode.Name(code) for code in (INVALID_PARAMETER_VALUE, INVALID_STATE, RESOURCE_DOES_NOT_EXIST)}
    with mlflow.start_run():
        try:
            body()
        except Exception as err:
            message = getattr(err, "message", None) or str(err)
            if isinstance(err, StepError) or (isinstance(err, MlflowException) and err.error_code in refusals):
                log.error("%s", message)
            else:
                log.exception("%s: %s", type(err).__name__, message)
                message = f"{type(err).__name__}: {message}"
            mlflow.set_tag(ERROR_TAG, message[:4000])
            raise SystemExit(1) from err


def record_outputs(outputs: Mapping[str, str]) -> None:
    """Publish a step's outputs on its active run for the next step to read."""
    import mlflow

    mlflow.set_tags({OUTPUT_TAG_PREFIX + key: value for key, value in outputs.items()})
    for key, value in outputs.items():
        log.info("output %s = %s", key, value)


def read_outputs(run_id: str) -> dict[str, str]:
    """The outputs a finished step run published with :func:`record_outputs`."""
    from mlflow import MlflowClient

    tags = MlflowClient().get_run(run_id).data.tags
    return {
        key[len(OUTPUT_TAG_PREFIX) :]: value
        for key, value in tags.items()
        if key.startswith(OUTPUT_TAG_PREFIX)
    }


def parse_registered_uri(model_uri: str) -> tuple[str, str]:
    """``models:/<name>/<version>`` -> (name, version); anything else is a ``ValueError``."""
    prefix = "models:/"
    body = model_uri[len(prefix) :] if model_uri.startswith(prefix) else ""
    name, _, model_version = body.rpartition("/")
    if not name or not model_version.isdigit():
        raise ValueError(
            f"{model_uri!r} is not a registered version URI of the form models:/<name>/<version>"
        )
    return name, model_version


def alias_version(client, name: str, alias: str):
    """The model version holding ``alias`` on registered model ``name``; None only when
    the registry says so (no such model, or the model has no such alias).

    Fails closed: any other error reading the registry (a timeout, a server error
    after retries) is raised, so no caller mistakes "could not read the champion"
    for "there is no champion" and promotes past the gate.
    """
    from mlflow.exceptions import MlflowException
    from mlflow.protos.databricks_pb2 import RESOURCE_DOES_NOT_EXIST, ErrorCode

    try:
        model = client.get_registered_model(name)
    except MlflowException as err:
        if err.error_code == ErrorCode.Name(RESOURCE_DOES_NOT_EXIST):
            return None
        raise
    version = model.aliases.get(alias)
    return None if version is None else client.get_model_version(name, str(version))


def flatten(cfg: Mapping, prefix: str = "") -> dict[str, object]:
    """Flatten a nested mapping into dotted keys, for ``mlflow.log_params``."""
    flat: dict[str, object] = {}
    for key, value in cfg.items():
        name = f"{prefix}{key}"
        if isinstance(value, Mapping):
            flat.update(flatten(value, prefix=f"{name}."))
        else:
            flat[name] = value
    return flat
