"""How a step process runs: its arguments (MLproject parameters and Hydra
overrides), its MLflow run, and the outputs it hands to the next step.

The driver (``pipeline.run``) starts each step with ``mlflow run``; the step
publishes each output as run tag ``pipeline.output.<name>`` (:func:`record_outputs`)
and the driver reads them back (:func:`read_outputs`).
"""

from __future__ import annotations

import argparse
import logging
from collections.abc import Mapping, Sequence

from omegaconf import DictConfig, OmegaConf

from core.config import compose_config, describe_error, split_overrides
from core.contracts import CONFIG_ARTIFACT, ERROR_TAG, OUTPUT_TAG_PREFIX, OVERRIDES_TAG, STEP_TAG
from core.errors import StepError

log = logging.getLogger(__name__)


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
        parser.exit(2, f"{parser.prog}: error: invalid Hydra override: {describe_error(err)}\n")
    return args, cfg


def log_config(cfg: DictConfig, overrides: Sequence[str], step: str) -> None:
    """Log the resolved config as an artifact and the overrides and step name as tags."""
    import mlflow

    mlflow.log_text(OmegaConf.to_yaml(cfg, resolve=True), CONFIG_ARTIFACT)
    mlflow.set_tags({OVERRIDES_TAG: " ".join(overrides), STEP_TAG: step})


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
