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
    if kind == "O" and pd.api.types.infer_dtype(values, skipna=True) == "boolean":
        return "boolean"  # booleans with gaps, as objects
    return _TYPES.get(kind, "string")


def plain_gaps(frame: pd.DataFrame) -> pd.DataFrame:
    """Columns of pandas' nullable types (``Int64``, ``boolean``, ``string``: a gap is
    ``pd.NA``, which scikit-learn cannot compare) as it takes them: numbers as float64
    with NaN, text and booleans as objects with NaN. Other columns are left as they are.
    (The model file does the same to requests: ``model/dispatch_model.check_input``.)"""
    changed = {}
    for name in frame.columns:
        values = frame[name]
        if (
            not pd.api.types.is_extension_array_dtype(values.dtype)
            or not values.isna().any()
            or isinstance(values.dtype, pd.CategoricalDtype)
        ):  # categories take NaN as they are
            continue
        if pd.api.types.is_numeric_dtype(values) and not pd.api.types.is_bool_dtype(values):
            changed[name] = values.astype(np.float64)
        else:
            changed[name] = values.astype(object).where(values.notna(), np.nan)
    return frame.assign(**changed) if changed else frame


def plain_categories(frame: pd.DataFrame) -> pd.DataFrame:
    """``category`` columns whose categories are not text (numbers, booleans) as the values
    they hold: a client sends such values as numbers, and the signature says so. Text
    categories stay ``category`` (``hist_gradient_boosting`` takes them natively)."""
    changed = {
        name: frame[name].astype(object).where(frame[name].notna(), np.nan).infer_objects()
        for name in frame.columns
        if isinstance(frame[name].dtype, pd.CategoricalDtype)
        and pd.api.types.infer_dtype(frame[name].cat.categories, skipna=True) != "string"
    }
    return frame.assign(**changed) if changed else frame


def as_sent(frame: pd.DataFrame) -> pd.DataFrame:
    """``frame`` as a client sends it to the model: ``category`` columns as text (objects,
    NaN for a gap), which the signature declares ``string`` and MLflow's schema takes;
    MLflow refuses a ``category`` column there ("Can not safely convert category")."""
    changed = {
        name: frame[name].astype(object).where(frame[name].notna(), np.nan)
        for name in frame.columns
        if isinstance(frame[name].dtype, pd.CategoricalDtype)
    }
    return frame.assign(**changed) if changed else frame


def input_schema(frame: pd.DataFrame):
    """A column-based MLflow schema with each column's real type, every column required
    (present in each request; its values may still be missing where the model allows)."""
    from mlflow.types import ColSpec, Schema

    return Schema([ColSpec(column_type(frame[name]), name, required=True) for name in frame.columns])


def nullable_columns(estimator, features: pd.DataFrame) -> list[str]:
    """The feature columns in which the fitted ``estimator`` accepts a missing value, found
    by asking it: a row it predicts (:func:`_predictable_row`) is predicted again with
    that column's value missing. Integer columns are left out: MLflow's schema refuses a
    gap in a ``long`` column before the model sees it.

    More exact than scikit-learn's ``allow_nan`` tag, which a ``Pipeline`` takes from its
    last step (a ``SimpleImputer`` in front of a ``LogisticRegression`` says False).
    """
    row = _predictable_row(estimator, features)
    if row is None:
        return []
    accepted = []
    for column in features.columns:
        if column_type(features[column]) == "long":
            continue
        probe = row.astype({column: object if column_type(row[column]) != "double" else np.float64})
        probe.loc[probe.index[0], column] = np.nan
        try:
            estimator.predict(probe)
        except Exception:  # noqa: BLE001 - any refusal means: not in this column
            continue
        accepted.append(column)
    return accepted


def template_row(features: pd.DataFrame, position: int) -> pd.DataFrame:
    """Row ``position`` of ``features`` with each gap filled by a value its column holds
    elsewhere (the column's ``position``-th value, cycling): a row with as few gaps as the
    table allows, found even in a table where every row has a gap. A column with no value
    at all keeps its gap."""
    row = features.iloc[[position]].copy()
    for column in row.columns[row.isna().iloc[0].to_numpy()]:
        present = features[column].dropna()
        if len(present):
            row[column] = pd.Series(
                [present.iloc[position % len(present)]], index=row.index, dtype=features[column].dtype
            )
    return row


def _predictable_row(estimator, features: pd.DataFrame, tries: int = 20) -> pd.DataFrame | None:
    """The first of the first ``tries`` rows (:func:`template_row`) that ``estimator`` predicts."""
    for position in range(min(tries, len(features))):
        row = template_row(features, position)
        try:
            estimator.predict(row)
        except Exception:  # noqa: BLE001 - try the next row
            continue
        return row
    return None
