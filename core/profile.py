"""What each column of a table is, decided once at train time and written down.

Every column but the target gets a kind and a use:

- a feature: ``number``, ``boolean``, ``text`` or ``category`` (pandas' ``category``
  dtype: R factors, Spark, ``astype("category")``);
- ``identifier``: text or integers distinct in nearly every row (R's ``rownames``, a
  name, a sample id), or a saved row index (``Unnamed: 0``, integers 0..n-1 or 1..n):
  left out, since a model learns nothing from it but the rows it has seen;
- ``date``: datetime values, or text in ISO 8601 form (``2012-01-01``,
  ``2012-01-01 10:30:00``): refused unless ``data.dates=days`` turns them into
  numbers (days since 1970-01-01); never one-hot encoded as text;
- ``empty``: no value in any row: left out.

``data.features`` keeps exactly the columns it lists (an identifier or an empty column
included); ``data.drop`` leaves columns out whatever they look like. The profile is
logged by ``train`` as :data:`PROFILE_ARTIFACT`, beside the data contract.
"""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import asdict, dataclass

import numpy as np
import pandas as pd

PROFILE_ARTIFACT = "data/profile.yaml"
IDENTIFIER_SHARE = 0.95  # distinct in at least this share of its non-empty rows
IDENTIFIER_MIN_ROWS = 20  # fewer non-empty values: too few to tell an identifier
FEATURE, LEFT_OUT = "feature", "left out"
# Reasons that are the config's choice, not what the column looks like: no warning.
LISTED, UNLISTED, DROPPED = "listed in data.features", "not listed in data.features", "listed in data.drop"
# Dates and times written as text, ISO 8601: a date, then optionally a time and a zone.
ISO_DATE = r"\d{4}-\d{2}-\d{2}(?:[T ]\d{2}:\d{2}(?::\d{2}(?:\.\d+)?)?(?:Z|[+-]\d{2}:?\d{2})?)?"
EPOCH = pd.Timestamp("1970-01-01")


@dataclass(frozen=True)
class Column:
    name: str
    kind: str  # number, boolean, text, category, identifier, date, empty, target
    use: str  # feature, target, left out
    reason: str  # why, in a few words
    dtype: str
    missing: int
    distinct: int


def is_date(values: pd.Series) -> bool:
    """Whether ``values`` hold dates or times: a datetime dtype, Python dates in objects
    (Parquet's ``date32``), or text every value of which is an ISO 8601 date."""
    if pd.api.types.is_datetime64_any_dtype(values):
        return True
    if pd.api.types.is_numeric_dtype(values) or pd.api.types.is_bool_dtype(values):
        return False
    present = values.dropna()
    if isinstance(values.dtype, pd.CategoricalDtype):
        present = present.astype(object)
    if present.empty:
        return False
    inferred = pd.api.types.infer_dtype(present, skipna=True)
    if inferred in ("date", "datetime", "datetime64"):
        return True
    if inferred != "string":
        return False
    text = present.astype(str)
    if not text.head(20).str.fullmatch(ISO_DATE).all() or not text.str.fullmatch(ISO_DATE).all():
        return False
    return bool(pd.to_datetime(text, format="ISO8601", errors="coerce", utc=True).notna().all())


def as_days(values: pd.Series) -> pd.Series:
    """Dates or times as days since 1970-01-01 (UTC for values with a zone), a float with
    NaN for a gap: the number ``data.dates=days`` trains on and clients send."""
    if isinstance(values.dtype, pd.CategoricalDtype):
        values = values.astype(object)
    stamps = (
        pd.to_datetime(values.astype(object).where(values.notna(), None), format="ISO8601", utc=True)
        if not pd.api.types.is_datetime64_any_dtype(values)
        else values
    )
    if getattr(stamps.dt, "tz", None) is not None:
        stamps = stamps.dt.tz_convert("UTC").dt.tz_localize(None)
    return ((stamps - EPOCH) / pd.Timedelta(days=1)).astype(np.float64)


def is_saved_index(name, values: pd.Series) -> bool:
    """pandas' ``Unnamed: 0`` (``to_csv`` without ``index=False``), or integers equal to
    0..n-1 or 1..n."""
    if str(name).startswith("Unnamed: "):
        return True
    if pd.api.types.is_integer_dtype(values) and len(values) > 2 and not values.isna().any():
        start = int(values.iloc[0])
        return start in (0, 1) and bool((values.to_numpy() == np.arange(start, start + len(values))).all())
    return False


def feature_kind(values: pd.Series) -> str:
    if isinstance(values.dtype, pd.CategoricalDtype):
        return "category"
    if pd.api.types.is_bool_dtype(values) or (
        values.dtype == object and pd.api.types.infer_dtype(values, skipna=True) == "boolean"
    ):
        return "boolean"
    return "number" if pd.api.types.is_numeric_dtype(values) else "text"


def describe(name, values: pd.Series, listed: bool | None, dropped: bool) -> Column:
    """One column's kind and use. ``listed``: whether ``data.features`` names it (None:
    no list configured); ``dropped``: whether ``data.drop`` does."""
    present = values.dropna()
    missing, distinct = int(len(values) - len(present)), int(present.nunique())

    def column(kind: str, use: str, reason: str) -> Column:
        return Column(str(name), kind, use, reason, str(values.dtype), missing, distinct)

    kind = feature_kind(values)
    if present.empty:
        kind, why = "empty", "no value in any row"
    elif is_date(values):
        kind, why = "date", "dates or times"
    elif is_saved_index(name, values):
        kind, why = "identifier", "a saved row index"
    elif (kind in ("text", "category") or pd.api.types.is_integer_dtype(values)) and (
        len(present) >= IDENTIFIER_MIN_ROWS and distinct >= IDENTIFIER_SHARE * len(present)
    ):
        kind, why = (
            "identifier",
            f"{kind if kind != 'number' else 'integers'} distinct in {distinct} of {len(present)} rows",
        )
    else:
        why = ""
    if dropped:
        return column(kind, LEFT_OUT, DROPPED)
    if listed is not None:
        return column(kind, FEATURE if listed else LEFT_OUT, LISTED if listed else UNLISTED)
    if kind in ("identifier", "empty"):
        return column(kind, LEFT_OUT, why)
    return column(kind, FEATURE, why or kind)


def profile_frame(
    frame: pd.DataFrame, target: str, features: Sequence[str] | None, drop: Sequence[str] = ()
) -> list[Column]:
    """Every column of ``frame`` described (:func:`describe`), in the frame's order."""
    listed = None if features is None else set(features)
    found = []
    for name in frame.columns:
        if name == target:
            found.append(
                Column(
                    str(name),
                    "target",
                    "target",
                    "data.target",
                    str(frame[name].dtype),
                    int(frame[name].isna().sum()),
                    int(frame[name].nunique()),
                )
            )
            continue
        found.append(describe(name, frame[name], None if listed is None else name in listed, name in drop))
    return found


def chosen(profile: Sequence[Column], use: str = FEATURE) -> list[str]:
    return [column.name for column in profile if column.use == use]


def left_out_lines(profile: Sequence[Column]) -> list[str]:
    """One line per column left out for what it looks like (not for a config list)."""
    return [
        f"column {c.name!r} left out: {c.kind} ({c.reason}); list it in data.features to keep it"
        for c in profile
        if c.use == LEFT_OUT and c.reason not in (UNLISTED, DROPPED)
    ]


def left_out_summary(profile: Sequence[Column]) -> str:
    """The columns left out for what they look like, for the pipeline's summary:
    ``rownames (identifier), notes (empty)``; empty when none."""
    return ", ".join(
        f"{c.name} ({c.kind})" for c in profile if c.use == LEFT_OUT and c.reason not in (UNLISTED, DROPPED)
    )


def profile_yaml(profile: Sequence[Column], source: str, rows: int) -> str:
    import yaml

    columns = {c.name: {k: v for k, v in asdict(c).items() if k != "name"} for c in profile}
    return yaml.safe_dump({"source": source, "rows": rows, "columns": columns}, sort_keys=False, allow_unicode=True)
