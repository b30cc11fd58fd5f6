"""The dynamic-dispatch pyfunc model, logged as code ("models from code").

MLflow stores this file with the model and executes it at load time, so the
model needs no pickled class and loads from any directory. It must therefore
import nothing from this project: everything it needs lives here, and the
pipeline steps import the shared names (``PREDICT_METHODS``, ``sha256_file``)
from this module.

Contract with ``package_pyfunc``:
- artifact ``estimator``: a joblib file holding a fitted scikit-learn estimator;
- model config ``estimator_sha256``: that file's SHA-256, recorded at serialize time.

``predict(model_input, params={"predict_method": m})`` calls the estimator's
``predict``, ``predict_proba`` or ``predict_log_proba``, whichever it really has
(:func:`available_methods`); the default is ``predict_proba``, or ``predict``
for an estimator without probabilities (an SVC, say).
"""

from __future__ import annotations

import hashlib
from pathlib import Path

import joblib
import mlflow
import numpy as np
import pandas as pd
from mlflow.exceptions import MlflowException
from mlflow.protos.databricks_pb2 import INVALID_PARAMETER_VALUE, INVALID_STATE

PREDICT_METHODS = ("predict", "predict_proba", "predict_log_proba")
DEFAULT_PREDICT_METHOD = "predict_proba"
PREDICT_METHOD_PARAM = "predict_method"
ESTIMATOR_ARTIFACT_KEY = "estimator"
DIGEST_CONFIG_KEY = "estimator_sha256"


def sha256_file(path: str | Path) -> str:
    """Hex SHA-256 of a file, read in chunks."""
    with open(path, "rb") as handle:
        return hashlib.file_digest(handle, "sha256").hexdigest()


def load_verified_estimator(path: str | Path, expected_sha256: str | None):
    """Unpickle ``path`` only if its SHA-256 equals ``expected_sha256``.

    joblib files are pickles and can run code when loaded, so a file that is not
    byte-for-byte the one serialize produced is refused before it is opened.
    """
    if not expected_sha256:
        raise MlflowException(
            f"Refusing to load {path}: no '{DIGEST_CONFIG_KEY}' was recorded in the "
            "model config, so the file cannot be verified.",
            error_code=INVALID_STATE,
        )
    actual = sha256_file(path)
    if actual != expected_sha256:
        raise MlflowException(
            f"Refusing to load {path}: its SHA-256 is {actual} but serialize recorded "
            f"{expected_sha256}. The artifact was modified or truncated after it was written.",
            error_code=INVALID_STATE,
        )
    return joblib.load(path)


def available_methods(estimator) -> tuple[str, ...]:
    """The prediction methods ``estimator`` really has, in ``PREDICT_METHODS`` order.

    ``hasattr`` honours scikit-learn's ``available_if``: ``SVC(probability=False)``
    and a ``Pipeline`` ending in one have no ``predict_proba``.
    """
    return tuple(method for method in PREDICT_METHODS if hasattr(estimator, method))


def offered_methods(metadata: dict | None) -> list[str]:
    """The prediction methods a packaged model advertises in its MLmodel metadata
    (``predict_methods``, written by package_pyfunc); all three for older models."""
    return list((metadata or {}).get("predict_methods", PREDICT_METHODS))


def default_method(estimator) -> str:
    """``predict_proba`` when the estimator has it, else ``predict``."""
    return DEFAULT_PREDICT_METHOD if hasattr(estimator, DEFAULT_PREDICT_METHOD) else "predict"


def resolve_predict_method(estimator, params: dict | None) -> str:
    """The estimator method named by ``params['predict_method']`` (default: :func:`default_method`).

    Raises ``MlflowException(INVALID_PARAMETER_VALUE)``, which the scoring server
    turns into an HTTP 400 carrying this message, for an unsupported name or a
    method the estimator does not have.
    """
    method = (params or {}).get(PREDICT_METHOD_PARAM) or default_method(estimator)
    if method not in PREDICT_METHODS:
        raise MlflowException(
            f"Unsupported {PREDICT_METHOD_PARAM} {method!r}; allowed values are "
            f"{', '.join(PREDICT_METHODS)}.",
            error_code=INVALID_PARAMETER_VALUE,
        )
    if not hasattr(estimator, method):
        raise MlflowException(
            f"{PREDICT_METHOD_PARAM} {method!r} is not available: the estimator "
            f"{type(estimator).__name__} has no {method}; this model offers "
            f"{', '.join(available_methods(estimator))}.",
            error_code=INVALID_PARAMETER_VALUE,
        )
    return method


def _allows_nan(estimator) -> bool:
    from sklearn.utils import get_tags

    try:
        return bool(get_tags(estimator).input_tags.allow_nan)
    except (AttributeError, TypeError, ValueError):  # not a scikit-learn estimator
        return True


def check_input(model_input, estimator_name: str, allow_nan: bool) -> None:
    """Reject empty input and NaN/infinite values with ``INVALID_PARAMETER_VALUE``, naming
    the row and column.

    Without this, scikit-learn's ValueError reaches the scoring server as an
    opaque error with a stack trace.
    """
    if len(model_input) == 0:
        raise MlflowException(
            "Input has no rows; send at least one row.", error_code=INVALID_PARAMETER_VALUE
        )
    if not hasattr(model_input, "columns"):
        return
    try:
        values = np.asarray(model_input, dtype=np.float64)  # no copy for float64 columns
    except (TypeError, ValueError):  # nullable dtypes holding pd.NA
        values = model_input.to_numpy(dtype=np.float64, na_value=np.nan)
    if np.isfinite(values).all():
        return
    bad = np.isinf(values) if allow_nan else ~np.isfinite(values)
    if bad.any():
        row, column = np.argwhere(bad)[0]
        kind = "a missing value (NaN)" if np.isnan(values[row, column]) else "an infinite value"
        raise MlflowException(
            f"Input row {model_input.index[row]} has {kind} in column {model_input.columns[column]!r}; "
            f"{estimator_name} does not accept it.",
            error_code=INVALID_PARAMETER_VALUE,
        )


class DynamicDispatchModel(mlflow.pyfunc.PythonModel):
    """Wraps a joblib-serialized estimator and dispatches on ``predict_method``."""

    def load_context(self, context):
        self.estimator = load_verified_estimator(
            context.artifacts[ESTIMATOR_ARTIFACT_KEY],
            (context.model_config or {}).get(DIGEST_CONFIG_KEY),
        )
        # Columns of probability outputs follow this order.
        self.classes_ = getattr(self.estimator, "classes_", None)
        names = getattr(self.estimator, "feature_names_in_", None)
        self.feature_names_ = None if names is None else list(names)
        self.allow_nan_ = _allows_nan(self.estimator)

    # Annotated with a type MLflow infers no schema from (the model has an explicit
    # signature); without any annotation MLflow warns at every load to add one.
    def predict(self, context, model_input: pd.DataFrame, params=None):
        method = resolve_predict_method(self.estimator, params)
        if (
            self.feature_names_ is not None
            and hasattr(model_input, "columns")
            and list(model_input.columns) != self.feature_names_
        ):
            # Same columns, same order as at fit time; schema enforcement has
            # already rejected inputs missing any of them.
            model_input = model_input[self.feature_names_]
        check_input(model_input, type(self.estimator).__name__, self.allow_nan_)
        return getattr(self.estimator, method)(model_input)


# Registers the model object for "models from code"; MLflow reads it when it
# executes this file at log and load time.
mlflow.models.set_model(DynamicDispatchModel())
