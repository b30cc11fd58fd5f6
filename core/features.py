"""What a model's features are, read from the data and the fitted estimator: each
column's type for the signature, and which columns may hold missing values."""

from __future__ import annotations

import numpy as np
import pandas as pd

# MLflow's column types by pandas dtype kind (integers, floats, booleans; text otherwise).
_TYPES = {"i": "long", "u": "long", "f": "double", "b": "boolean"}


def column_type(values: pd.Series) -> str:
    """The MLflow type of a column, from its dtype: long, double, boolean or string."""
    kind = values.dtype.kind if isinstance(values.dtype, np.dtype) else None
    if kind is None and pd.api.types.is_bool_dtype(values):
        return "boolean"
    if kind is None and pd.api.types.is_integer_dtype(values):
        return "long"
    if kind is None and pd.api.types.is_float_dtype(values):
        return "double"
    return _TYPES.get(kind, "string")


def input_schema(frame: pd.DataFrame):
    """A column-based MLflow schema with each column's real type, every column required
    (present in each request; its values may still be missing where the model allows)."""
    from mlflow.types import ColSpec, Schema

    return Schema([ColSpec(column_type(frame[name]), name, required=True) for name in frame.columns])


def nullable_columns(estimator, features: pd.DataFrame) -> list[str]:
    """The feature columns in which the fitted ``estimator`` accepts a missing value, found
    by asking it: one row of ``features`` with that column's value missing is predicted.

    More exact than scikit-learn's ``allow_nan`` tag, which a ``Pipeline`` takes from its
    last step (a ``SimpleImputer`` in front of a ``LogisticRegression`` says False).
    """
    row = features.head(1)
    accepted = []
    for column in features.columns:
        probe = row.copy()
        probe[column] = probe[column].astype(float if column_type(row[column]) in ("long", "boolean")
                                            else probe[column].dtype)
        probe.loc[probe.index[0], column] = np.nan
        try:
            estimator.predict(probe)
        except Exception:  # noqa: BLE001 - any refusal means: not in this column
            continue
        accepted.append(column)
    return accepted
