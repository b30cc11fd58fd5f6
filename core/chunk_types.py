"""A chunk of an input table as the model's signature types it, for batch scoring and drift checks.

A CSV gives text; a Parquet file its own types. Each feature column becomes what
the signature says (numbers parsed, text as text, booleans as booleans, a gap as
a gap), or the chunk is refused naming the file, row and column: a value that is
not a number in a number column (a boolean included: pandas would take it as 1
or 0), not a whole number of 64 bits in an integer one, a gap in an integer one
(MLflow's schema cannot carry it, and would refuse the whole chunk quoting its
rows), not true/false in a boolean one. A chunk the model then refuses is named by its
first refused row (:func:`predict_chunk`).
"""

from __future__ import annotations

from pathlib import Path

import numpy as np
import pandas as pd
from mlflow.exceptions import MlflowException

from core.errors import StepError
from model.dispatch_model import PREDICT_METHOD_PARAM


class ScoringError(StepError, ValueError):
    """The input cannot be scored; the message names the file, row and column."""


NUMERIC_TYPES = {"double", "float", "long", "integer"}


def check_chunk(chunk: pd.DataFrame, types: dict[str, str], source: Path) -> pd.DataFrame:
    """The feature columns as the model's signature types them (``types``: column -> MLflow
    type): numbers parsed, text as text, booleans as booleans, a gap as a gap. A value
    that is not a number in a numeric column, not a whole number in an integer one, or
    not true/false in a boolean one is an error naming the file, row and column."""
    missing = [column for column in types if column not in chunk.columns]
    if missing:
        raise ScoringError(f"{source}: missing feature column(s) {missing}; it has {list(chunk.columns)}")
    out = {}
    for column, kind in types.items():
        values = chunk[column]
        if kind == "string":
            out[column] = values.astype("str")  # pandas' text type: a gap stays NaN
            continue
        if kind == "boolean":
            out[column] = booleans(values, column, source)
            continue
        if kind not in NUMERIC_TYPES:
            out[column] = values
            continue
        numbers = pd.to_numeric(values, errors="coerce")
        bad = (numbers.isna() & values.notna()) | truth_values(values)
        gaps = pd.Series(False, index=values.index)
        if kind in ("long", "integer"):
            bad |= numbers.notna() & ((numbers % 1 != 0) | (numbers.abs() >= 2**63))
            gaps = values.isna()
        if (bad | gaps).any():
            row = (bad | gaps).idxmax()
            if gaps[row]:
                raise ScoringError(
                    f"{source}: row {row}, column {column!r}: empty, where the model takes a "
                    "whole number (its signature types the column long, which has no gap)"
                )
            expected = "a whole number (64 bits)" if kind in ("long", "integer") else "a number"
            raise ScoringError(
                f"{source}: row {row}, column {column!r}: {shown(chunk.at[row, column])} is not {expected}"
            )
        if kind in ("long", "integer") and numbers.notna().all():
            out[column] = numbers.astype(np.int64)
        else:
            out[column] = numbers.astype(np.float64)
    return pd.DataFrame(out, index=chunk.index)


def shown(value) -> str:
    """A value as a message shows it: ``1e+308``, not ``np.float64(1e+308)``."""
    return repr(value.item() if isinstance(value, np.generic) else value)


def truth_values(values: pd.Series) -> pd.Series:
    """Where ``values`` holds a boolean: pandas would take it as 1 or 0 in a number
    column, but a Parquet boolean column there is a mistaken column, not a number."""
    if pd.api.types.is_bool_dtype(values):
        return values.notna()
    if values.dtype == object:
        return values.map(lambda v: isinstance(v, (bool, np.bool_))).astype(bool)
    return pd.Series(False, index=values.index)


TRUTH = {"true": True, "false": False, "1": True, "0": False}


def booleans(values: pd.Series, column: str, source: Path) -> pd.Series:
    """A boolean column as objects (``True``/``False``, ``None`` for a gap), from booleans
    or from text as a CSV holds it (true/false, 1/0, any case)."""
    if pd.api.types.is_bool_dtype(values) and not values.isna().any():
        return values
    parsed = values.map(
        lambda v: (
            v
            if isinstance(v, (bool, np.bool_)) or pd.isna(v)
            else TRUTH.get(str(v).strip().lower().removesuffix(".0"), "bad")
        )
    )
    bad = parsed.map(lambda v: isinstance(v, str))
    if bad.any():
        row = bad.idxmax()
        raise ScoringError(f"{source}: row {row}, column {column!r}: {shown(values.at[row])} is not true or false")
    return parsed.astype(object).where(parsed.notna(), None)


def predict_chunk(model, features: pd.DataFrame, method: str, source: Path):
    """The model's output for one chunk. A refusal names the file: the model's own message
    (``INVALID_PARAMETER_VALUE``, naming the row and column), or, for a ValueError the
    estimator raised itself (scikit-learn's input checks, such as a value beyond float32
    for a tree), the first row it refuses, found by halving the chunk."""
    params = {PREDICT_METHOD_PARAM: method}
    try:
        return model.predict(features, params=params)
    except MlflowException as err:
        raise ScoringError(f"{source}: {err.message}") from err
    except ValueError as err:
        estimator = (model.metadata.metadata or {}).get("estimator", "the model")
        where = refused_rows(model, features, params)
        raise ScoringError(f"{source}: {where}: {estimator} refused it: {err}") from err


def refused_rows(model, features: pd.DataFrame, params: dict) -> str:
    """``row N``: the first row the model refuses on its own, found by halving ``features``
    (predicting about as many rows again, only once a chunk has failed); the chunk's
    ``rows A to B`` if no single row is refused (a refusal of the rows together)."""

    def refuses(part: pd.DataFrame) -> bool:
        try:
            model.predict(part, params=params)
        except (ValueError, MlflowException):
            return True
        return False

    low, high = 0, len(features)
    while high - low > 1:
        middle = (low + high) // 2
        if refuses(features.iloc[low:middle]):
            high = middle
        else:
            low = middle
    if refuses(features.iloc[low : low + 1]):
        return f"row {features.index[low]}"
    return f"rows {features.index[0]} to {features.index[-1]}"
