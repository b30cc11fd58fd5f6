"""The names every part of the project agrees on: where the project and its
config live, artifact names, run and version tags, the registered model the
consumers call by default, and the tracking store.

A step records each output (an MLflow URI or a digest) as a run tag
``pipeline.output.<name>``; the driver reads those tags and passes them on as the
next step's parameters, so nothing travels through local paths.
"""

from __future__ import annotations

import logging
import os
from pathlib import Path

PROJECT_DIR = Path(__file__).resolve().parent.parent
CONF_DIR = PROJECT_DIR / "conf"
CONFIG_NAME = "config"
DEFAULT_DB = PROJECT_DIR / "mlflow.db"

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

# What a person filters the runs table by (the MLflow UI's search box):
# ``tags.`pipeline.outcome` = 'promoted'``. The outcome is one word
# (promoted, challenger, rolled_back, not_gated, unchanged, failed), the detail a sentence.
OUTCOME_TAG = "pipeline.outcome"
OUTCOME_DETAIL_TAG = "pipeline.outcome_detail"
MODEL_CLASS_TAG = "pipeline.model"  # the estimator's class, e.g. LogisticRegression
TRIGGER_TAG = "pipeline.trigger"  # manual, schedule or sweep
# Set by whatever starts a pipeline for it (ops.retrain: schedule); unset: manual.
TRIGGER_ENV = "PIPELINE_TRIGGER"
TRIGGERS = ("manual", "schedule", "sweep")

VALIDATION_STATUS_TAG = "validation_status"
# On a champion the gate found it could not load or score (validation_status=broken): why, and which run.
BROKEN_REASON_TAG = "validation.broken_reason"
BROKEN_RUN_TAG = "validation.broken_run_id"
DATA_DIGEST_TAG = "data.digest"
DATA_ROWS_TAG = "data.rows"

# What batch and Spark scoring record of the model that scored (Parquet metadata, Spark
# column metadata, tags of the `score` run): the exact model URI, the logged model's id and,
# for a registered version, its name and version.
SCORED_BY_URI_KEY = "model_uri"
SCORED_BY_ID_KEY = "model_id"
SCORED_BY_NAME_KEY = "model_name"
SCORED_BY_VERSION_KEY = "model_version"


# Pages of the MLflow UI, for links in descriptions (Markdown, relative to the UI's address).
def ui_run_page(experiment_id: str, run_id: str, artifact: str | None = None) -> str:
    return f"#/experiments/{experiment_id}/runs/{run_id}" + (f"/artifactPath/{artifact}" if artifact else "")


def ui_version_page(name: str, version: str) -> str:
    return f"#/models/{name}/versions/{version}"


# The registered model and alias consumers call when given no URI (conf/registry).
MODEL_NAME = "iris-classifier"
CHAMPION_ALIAS = "champion"
CHAMPION_URI = f"models:/{MODEL_NAME}@{CHAMPION_ALIAS}"


def tracking_uri() -> str:
    """The tracking URI: ``MLFLOW_TRACKING_URI`` when set, else SQLite in the project root.

    The SQLite path is absolute so that every step process, whatever its working
    directory, writes to the same database (a relative one would create a second).
    """
    return os.environ.get("MLFLOW_TRACKING_URI") or f"sqlite:///{DEFAULT_DB}"


def sqlite_path(uri: str) -> Path | None:
    """The database file of a ``sqlite:///`` tracking URI (absolute or relative path), else None."""
    prefix = "sqlite:///"
    return Path(uri.removeprefix(prefix)) if uri.startswith(prefix) else None


def sqlite_artifact_root(db: Path) -> str:
    """Where a SQLite store's experiments keep their artifacts: ``mlruns/`` beside the
    database, whatever the working directory of the process that creates them."""
    return (db.parent / "mlruns").as_uri()


# MLflow warns about integer columns each time it infers a schema (four times in a
# pipeline); steps.package_pyfunc says it once, in terms of this project.
INTEGER_HINT = r"Hint: Inferred schema contains integer column"


def configure_logging() -> None:
    """Log records at INFO to stderr, secrets masked (``core.secrets``)."""
    import warnings

    from core.secrets import RedactingFilter

    logging.basicConfig(level=logging.INFO, format="%(asctime)s %(levelname)s %(name)s: %(message)s")
    for handler in logging.getLogger().handlers:
        if not any(isinstance(f, RedactingFilter) for f in handler.filters):
            handler.addFilter(RedactingFilter())
    warnings.filterwarnings("ignore", message=INTEGER_HINT, category=UserWarning)


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
