"""The reference profile of the training data: what a drift test needs of each feature,
small (kilobytes) and readable (JSON).

``train`` builds it from the training split and logs it as :data:`REFERENCE_ARTIFACT`
(its SHA-256 recorded, ``core.integrity``); ``package_pyfunc`` keeps it in the packaged
model's metadata (:data:`METADATA_KEY`) beside the data contract, so that it travels
with each registered version under the digest of the model's files.

Per feature:

- ``number``: ``edges``, the cut points of (at most) :data:`BINS` quantile bins of the
  training values, and ``counts`` per bin; bins are right-closed, ``(-inf, e0]``,
  ``(e0, e1]``, ..., ``(e_last, inf)``: one more count than edges;
- ``boolean`` and ``category`` (text, pandas ``category``): ``counts`` per value, the
  :data:`MAX_CATEGORIES` most frequent, and ``other`` for the rest;
- both: ``missing``, the number of gaps.

A batch is counted into the same bins (:class:`BatchCounts`), chunk by chunk: a file
of any size is a counting job, and counts taken chunk by chunk equal those of the whole.
"""

from __future__ import annotations

import json
from collections import Counter
from collections.abc import Mapping

import numpy as np
import pandas as pd

from core.errors import StepError

REFERENCE_ARTIFACT = "data/reference.json"
METADATA_KEY = "data_reference"  # where a packaged model keeps it (MLmodel metadata), as JSON text
FORMAT = 1
BINS = 10
MAX_CATEGORIES = 50
KINDS = ("number", "boolean", "category")
TRUTH = {"true": "true", "false": "false", "1": "true", "0": "false", "1.0": "true", "0.0": "false"}
UNSEEN_KEPT = 1000  # distinct unseen values a batch keeps count of, for the report


class DriftInputError(StepError, ValueError):
    """A batch that cannot be compared with the reference; the message names the file, row and column."""


class NoReference(DriftInputError):
    """The model has no reference profile (packaged before profiles were kept)."""


def kind_of(values: pd.Series) -> str:
    if pd.api.types.is_bool_dtype(values) or (
        values.dtype == object and pd.api.types.infer_dtype(values, skipna=True) == "boolean"
    ):
        return "boolean"
    if pd.api.types.is_numeric_dtype(values) and not isinstance(values.dtype, pd.CategoricalDtype):
        return "number"
    return "category"


def as_text(values: pd.Series, kind: str) -> pd.Series:
    """Values of a boolean or category feature as the profile's keys: text, ``true``/``false``
    for booleans (from booleans, or text as a CSV holds them); a gap stays a gap."""
    present = values.notna()
    text = values.astype(object).where(present, None).map(lambda v: v if v is None else str(v))
    if kind == "boolean":
        text = text.map(lambda v: v if v is None else TRUTH.get(v.strip().lower(), v))
    return text


def text_counts(values: pd.Series, kind: str) -> tuple[Counter, int]:
    """(how often each value occurs, as the profile's keys; the number of gaps): counted first,
    so only the distinct values are turned into text."""
    found = values.value_counts(dropna=True)
    found = found[found.to_numpy() > 0]  # a category column lists unused categories too
    counts: Counter = Counter()
    for key, count in zip(as_text(pd.Series(found.index, dtype=object), kind), found.to_numpy(), strict=True):
        counts[key] += int(count)
    return counts, int(len(values) - found.sum())


def number_edges(values: np.ndarray, bins: int = BINS) -> list[float]:
    """The distinct quantiles of ``values`` at 1/bins, 2/bins, ...: bin edges (ties merge bins)."""
    finite = values[np.isfinite(values)]
    if not len(finite):
        return []
    return [float(edge) for edge in np.unique(np.quantile(finite, np.linspace(0, 1, bins + 1)[1:-1]))]


def reference_profile(features: pd.DataFrame, target: str | None = None) -> dict:
    """The reference profile of ``features`` (the training split's feature columns)."""
    profile: dict = {"format": FORMAT, "rows": len(features), "target": target, "features": {}}
    for name in features.columns:
        values = features[name]
        kind = kind_of(values)
        entry: dict = {"kind": kind, "missing": int(values.isna().sum())}
        if kind == "number":
            numbers = values.to_numpy(dtype=np.float64, na_value=np.nan)
            present = numbers[~np.isnan(numbers)]
            entry["edges"] = number_edges(present)
            entry["counts"] = number_counts(present, entry["edges"]).tolist()
            finite = present[np.isfinite(present)]  # JSON has no infinity
            entry["min"] = float(finite.min()) if len(finite) else None
            entry["max"] = float(finite.max()) if len(finite) else None
        else:
            seen, _ = text_counts(values, kind)
            kept = dict(seen.most_common(MAX_CATEGORIES))
            entry["counts"] = {key: int(count) for key, count in kept.items()}
            entry["other"] = int(sum(seen.values()) - sum(kept.values()))
        profile["features"][str(name)] = entry
    return profile


def number_counts(numbers: np.ndarray, edges: list[float]) -> np.ndarray:
    """How many of ``numbers`` (no gaps) fall in each right-closed bin of ``edges``."""
    return np.bincount(
        np.searchsorted(np.asarray(edges, dtype=np.float64), numbers, side="left"), minlength=len(edges) + 1
    )


def reference_json(profile: Mapping) -> str:
    return json.dumps(profile, indent=1, sort_keys=False, allow_nan=False)


def load_reference(text: str) -> dict:
    """A profile from its JSON text, its shape checked (a hand-edited one names what is wrong)."""
    profile = json.loads(text)
    if (
        not isinstance(profile, dict)
        or profile.get("format") != FORMAT
        or not isinstance(profile.get("features"), dict)
    ):
        raise DriftInputError(f"not a reference profile of format {FORMAT}")
    for name, entry in profile["features"].items():
        if entry.get("kind") not in KINDS:
            raise DriftInputError(
                f"reference profile: feature {name!r} has kind {entry.get('kind')!r}, not one of {KINDS}"
            )
    return profile


class BatchCounts:
    """A batch counted into the reference's bins, one chunk at a time."""

    def __init__(self, reference: Mapping, source: str):
        self.reference = reference
        self.source = source
        self.rows = 0
        self.missing = dict.fromkeys(reference["features"], 0)
        self.counts: dict[str, np.ndarray | Counter] = {}
        self.unseen: dict[str, Counter] = {}
        for name, entry in reference["features"].items():
            if entry["kind"] == "number":
                self.counts[name] = np.zeros(len(entry["edges"]) + 1, dtype=np.int64)
            else:
                self.counts[name] = Counter()
                self.unseen[name] = Counter()

    def check_columns(self, header) -> None:
        missing = [name for name in self.reference["features"] if name not in header]
        if missing:
            raise DriftInputError(
                f"{self.source}: missing feature column(s) {missing} of the model's training data; it has {list(header)}"
            )

    def add(self, chunk: pd.DataFrame) -> None:
        """Count ``chunk`` (indexed by row number in the file). A value that is not a number in
        a number feature is a :class:`DriftInputError` naming the file, row and column."""
        self.check_columns(chunk.columns)
        for name, entry in self.reference["features"].items():
            values = chunk[name]
            if entry["kind"] == "number":
                numbers = self.numbers(values, name)
                present = numbers[~np.isnan(numbers)]
                self.missing[name] += len(numbers) - len(present)
                self.counts[name] += number_counts(present, entry["edges"])
                continue
            found, missing = text_counts(values, entry["kind"])
            self.missing[name] += missing
            self.counts[name].update(found)
            unseen = self.unseen[name]
            for value, count in found.items():
                if value not in entry["counts"] and (value in unseen or len(unseen) < UNSEEN_KEPT):
                    unseen[value] += count
        self.rows += len(chunk)

    def numbers(self, values: pd.Series, name: str) -> np.ndarray:
        if pd.api.types.is_bool_dtype(values):
            raise DriftInputError(
                f"{self.source}: column {name!r} holds true/false, where the training data had numbers"
            )
        numbers = pd.to_numeric(values, errors="coerce")
        bad = numbers.isna() & values.notna()
        if bad.any():
            row = bad.idxmax()
            raise DriftInputError(
                f"{self.source}: row {row}, column {name!r}: {values[row]!r} is not a number "
                "(the training data had numbers there)"
            )
        return numbers.to_numpy(dtype=np.float64, na_value=np.nan)
