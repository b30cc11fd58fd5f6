"""The dynamic-dispatch pyfunc model, logged as code ("models from code").

MLflow stores this file with the model and executes it at load time, so the
model needs no pickled class and loads from any directory. It must therefore
import nothing from this project: everything it needs lives here, and the
pipeline steps import the shared names (``PREDICT_METHODS``, ``sha256_file``)
from this module.

Contract with ``package_pyfunc``:
- artifact ``estimator``: a joblib file holding a fitted scikit-learn estimator;
- model config ``estimator_sha256``: that file's SHA-256, recorded at serialize time;
- model config ``nullable_features``: the columns in which the estimator accepts a
  missing value (older models without it: scikit-learn's ``allow_nan`` tag).

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
NULLABLE_CONFIG_KEY = "nullable_features"  # columns where the estimator accepts missing values


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
    """The estimator method named by ``params['predict_method']`` (default: :func:`default_method`,
    when the param is absent or null).

    Raises ``MlflowException(INVALID_PARAMETER_VALUE)``, which the scoring server
    turns into an HTTP 400 carrying this message, for an unsupported name (the
    empty string included: taking it as the default would hide a client's bug)
    or a method the estimator does not have.
    """
    method = (params or {}).get(PREDICT_METHOD_PARAM)
    if method is None:  # not sent (JSON null included): the default
        method = default_method(estimator)
    if method not in PREDICT_METHODS:  # "" included: an empty name is a mistake, not the default
        raise MlflowException(
            f"Unsupported {PREDICT_METHOD_PARAM} {method!r}; allowed values are {', '.join(PREDICT_METHODS)}.",
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


def check_input(model_input, estimator_name: str, nullable) -> pd.DataFrame:
    """The input as the estimator takes it, or ``INVALID_PARAMETER_VALUE`` naming the row
    and column: no rows, an infinite number, or a missing value (NaN, null) in a column
    where the estimator accepts none. ``nullable``: the columns that may hold missing
    values (``True``: all of them). A gap becomes NaN whatever the column's type
    (``None``, or ``pd.NA`` in pandas' nullable ``string``, ``boolean`` and ``Int64``
    types, which scikit-learn cannot compare), as pandas reads a gap from a CSV.

    Without this, scikit-learn's ValueError reaches the scoring server as an opaque
    error with a stack trace, or, worse, a NaN is scored without a word.
    """
    if len(model_input) == 0:
        raise MlflowException("Input has no rows; send at least one row.", error_code=INVALID_PARAMETER_VALUE)
    if not hasattr(model_input, "columns"):
        return model_input
    if _all_finite_floats(model_input):  # the common case, checked in one pass
        return model_input
    missing = model_input.isna()
    for position, column in enumerate(model_input.columns):
        values = model_input[column]
        if pd.api.types.is_numeric_dtype(values) and not pd.api.types.is_bool_dtype(values):
            infinite = np.isinf(values.to_numpy(dtype=np.float64, na_value=np.nan))
            if infinite.any():
                raise MlflowException(
                    f"Input row {model_input.index[infinite.argmax()]} has an infinite value in column "
                    f"{column!r}; {estimator_name} does not accept it.",
                    error_code=INVALID_PARAMETER_VALUE,
                )
        holes = missing.iloc[:, position].to_numpy()
        if holes.any():
            if nullable is not True and column not in (nullable or ()):
                raise MlflowException(
                    f"Input row {model_input.index[holes.argmax()]} has a missing value in column "
                    f"{column!r}; {estimator_name} does not accept one there.",
                    error_code=INVALID_PARAMETER_VALUE,
                )
            if values.dtype == object or pd.api.types.is_extension_array_dtype(values.dtype):
                if pd.api.types.is_numeric_dtype(values) and not pd.api.types.is_bool_dtype(values):
                    filled = values.astype(np.float64)  # Int64/Float64 with pd.NA
                else:
                    filled = values.astype(object).where(~holes, np.nan)
                model_input = model_input.assign(**{column: filled})
    return model_input


def _all_finite_floats(model_input: pd.DataFrame) -> bool:
    """Whether every column is a NumPy float column without NaN or infinity: nothing for
    :func:`check_input` to refuse or convert, found in one pass over the values."""
    if not all(dtype.kind == "f" and isinstance(dtype, np.dtype) for dtype in model_input.dtypes):
        return False
    return bool(np.isfinite(model_input.to_numpy()).all())


def _numeric_columns(model_input: pd.DataFrame):
    for column in model_input.columns:
        values = model_input[column]
        if pd.api.types.is_numeric_dtype(values) and not pd.api.types.is_bool_dtype(values):
            yield column, values.to_numpy(dtype=np.float64, na_value=np.nan)


def value_beyond_float32(model_input, estimator_name: str) -> MlflowException | None:
    """``INVALID_PARAMETER_VALUE`` naming the first row and column whose value is finite
    but beyond float32's range, or None. Tree estimators (random forests, decision
    trees) compute in float32 and refuse such a value with a ValueError that names
    neither; :meth:`DynamicDispatchModel.predict` asks this when one is raised."""
    if not hasattr(model_input, "columns"):
        return None
    limit = float(np.finfo(np.float32).max)
    for column, values in _numeric_columns(model_input):
        beyond = np.abs(values) > limit
        if beyond.any():
            position = int(beyond.argmax())
            return MlflowException(
                f"Input row {model_input.index[position]} has the value {values[position]:g} in column "
                f"{column!r}, beyond the float32 range (magnitude up to {limit:.4g}) in which "
                f"{estimator_name} computes.",
                error_code=INVALID_PARAMETER_VALUE,
            )
    return None


def check_output(output, model_input, method: str, estimator_name: str):
    """``output``, unless it holds NaN or an infinity: then ``INVALID_PARAMETER_VALUE``
    naming the first input row that produced one. Inputs far beyond the training
    range overflow an estimator's arithmetic (1e308 into a logistic regression gives
    NaN probabilities); scored silently, they would reach clients as numbers no JSON
    parser accepts. ``-inf`` from ``predict_log_proba`` is the log of a probability
    that is exactly 0 and is kept.
    """
    values = np.asarray(output)
    if not np.issubdtype(values.dtype, np.floating):
        return output  # labels
    bad = np.isnan(values) | (values == np.inf)
    if method != "predict_log_proba":
        bad |= values == -np.inf
    if not bad.any():
        return output
    position = int(bad.reshape(len(values), -1).any(axis=1).argmax())
    label = model_input.index[position] if hasattr(model_input, "index") else position
    produced = values.ravel()[bad.ravel().argmax()]
    largest = ""
    if hasattr(model_input, "columns"):
        row = {column: column_values[position] for column, column_values in _numeric_columns(model_input)}
        if row:
            column = max(row, key=lambda name: abs(np.nan_to_num(row[name])))
            largest = f" (its largest value: {row[column]:g} in column {column!r})"
    raise MlflowException(
        f"Input row {label} gives {produced} from {estimator_name}.{method}, which JSON cannot carry: "
        f"its values overflow the estimator's arithmetic{largest}; send values in the range "
        "the model was trained on.",
        error_code=INVALID_PARAMETER_VALUE,
    )


class DynamicDispatchModel(mlflow.pyfunc.PythonModel):
    """Wraps a joblib-serialized estimator and dispatches on ``predict_method``."""

    def load_context(self, context):
        self.estimator = load_verified_estimator(
            context.artifacts[ESTIMATOR_ARTIFACT_KEY], (context.model_config or {}).get(DIGEST_CONFIG_KEY)
        )
        # Columns of probability outputs follow this order.
        self.classes_ = getattr(self.estimator, "classes_", None)
        names = getattr(self.estimator, "feature_names_in_", None)
        self.feature_names_ = None if names is None else list(names)
        # Recorded by package_pyfunc (asked of the fitted estimator); older models: its tag.
        recorded = (context.model_config or {}).get(NULLABLE_CONFIG_KEY)
        self.nullable_ = set(recorded) if recorded is not None else (_allows_nan(self.estimator) or set())

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
        name = type(self.estimator).__name__
        model_input = check_input(model_input, name, self.nullable_)
        try:
            output = getattr(self.estimator, method)(model_input)
        except ValueError as err:
            refusal = value_beyond_float32(model_input, name)
            if refusal is None:
                raise
            raise refusal from err
        return check_output(output, model_input, method, name)


# Registers the model object for "models from code"; MLflow reads it when it
# executes this file at log and load time.
mlflow.models.set_model(DynamicDispatchModel())
