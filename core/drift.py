"""Drift of a batch against the reference profile of the training data (``core.reference``).

Per feature, a statistic (larger = more drift) and a decision, on the reference's bins
(with a bin for gaps, and for categories one for values the reference did not keep):

- numbers: the population stability index, ``PSI = sum((b - r) * ln(b / r))`` over the
  bins' shares (each at least :data:`SHARE_FLOOR`);
- booleans and categories: the Jensen-Shannon distance of the shares (base 2: 0 the
  same, 1 nothing in common).

A feature has drifted when its statistic reaches its threshold (``drift.psi``,
``drift.jensen_shannon``) **and** the chi-square test of homogeneity of the two sets
of counts gives a p-value below ``drift.p_value``. Both: a statistic alone flags a
small batch for its sampling noise (two random halves of 150 rows differ by a PSI of
about 0.2 on ten bins), a test alone flags a large batch for a shift nobody would act on.

scipy (already a dependency) does the statistics; Evidently, which offers the same
tests with its own reports, would add hundreds of megabytes of dependencies.
"""

from __future__ import annotations

import math
import re
from collections.abc import Mapping, Sequence
from dataclasses import dataclass, field

import numpy as np

from core.reference import BatchCounts

SHARE_FLOOR = 1e-4  # a bin's share in the PSI: an empty bin would make it infinite
MISSING, OTHER = "(missing)", "(other)"


@dataclass(frozen=True)
class FeatureDrift:
    name: str
    kind: str  # number, boolean, category
    statistic: str  # psi or jensen_shannon
    value: float
    threshold: float
    p_value: float
    drifted: bool
    bins: list[str]  # labels of the bins, in order
    reference: list[float]  # share of the reference's rows in each bin
    batch: list[float]  # share of the batch's rows in each bin
    note: str = ""  # values the reference did not keep, for the report

    @property
    def score(self) -> float:
        """The statistic in units of its threshold: features of both kinds sort together."""
        if self.threshold > 0:
            return self.value / self.threshold
        return math.inf if self.value > 0 else 0.0


@dataclass
class DriftResult:
    """A batch against a reference: each feature, most drifted first; with labels, the
    model's metrics on the labelled rows beside its holdout metrics."""

    source: str
    rows: int
    reference_rows: int
    features: list[FeatureDrift]
    model: str = ""  # what was compared, e.g. "iris-classifier version 3"
    labelled_rows: int = 0
    batch_metrics: dict[str, float] = field(default_factory=dict)
    holdout_metrics: dict[str, float] = field(default_factory=dict)
    greater_is_better: dict[str, bool] = field(default_factory=dict)

    @property
    def drifted(self) -> list[FeatureDrift]:
        return [feature for feature in self.features if feature.drifted]

    @property
    def share(self) -> float:
        return len(self.drifted) / len(self.features) if self.features else 0.0

    def drops(self) -> dict[str, float]:
        """Per metric computed on the labelled rows and known on the holdout: how much worse
        it is on the batch (holdout minus batch where greater is better; negative: better)."""
        found = {}
        for name, value in self.batch_metrics.items():
            if name in self.holdout_metrics:
                greater = self.greater_is_better.get(name, True)
                found[name] = (self.holdout_metrics[name] - value) if greater else (value - self.holdout_metrics[name])
        return found

    def metrics(self) -> dict[str, float]:
        """What MLflow records of the check: ``drift.*`` (larger = more drift) and ``batch.*``."""
        found = {
            "drift.share": self.share,
            "drift.features_drifted": float(len(self.drifted)),
            "batch.rows": float(self.rows),
        }
        names = metric_names([feature.name for feature in self.features])
        for feature in self.features:
            found[f"drift.{feature.statistic}.{names[feature.name]}"] = feature.value
        if self.labelled_rows:
            found["batch.labelled_rows"] = float(self.labelled_rows)
            found |= {f"batch.{name}": value for name, value in self.batch_metrics.items()}
            found |= {f"drift.drop.{name}": value for name, value in self.drops().items()}
        return found

    def summary(self) -> str:
        """One line: how many features drifted, which, and the labelled rows' metrics."""
        line = f"{len(self.drifted)} of {len(self.features)} features drifted (share {self.share:.2f})"
        if self.drifted:
            line += ": " + ", ".join(f"{f.name} {f.statistic} {f.value:.3g}" for f in self.drifted[:5])
            line += ", ..." if len(self.drifted) > 5 else ""
        for name in self.drops():
            line += (
                f"; {name} {self.batch_metrics[name]:.3f} on {self.labelled_rows} labelled rows, "
                f"{self.holdout_metrics[name]:.3f} on the holdout"
            )
        return line


def metric_names(features: Sequence[str]) -> dict[str, str]:
    """Each feature's name as MLflow takes it in a metric name (letters, digits, ``_-. ``);
    the others become ``_``, and a name that then collides gets a number."""
    found: dict[str, str] = {}
    for name in features:
        clean = re.sub(r"[^\w.\- ]", "_", str(name)).strip() or "_"
        candidate, n = clean, 1
        while candidate in found.values():
            n += 1
            candidate = f"{clean}_{n}"
        found[name] = candidate
    return found


def psi(reference: np.ndarray, batch: np.ndarray) -> float:
    """Population stability index of two sets of counts over the same bins."""
    r = np.maximum(reference / max(reference.sum(), 1), SHARE_FLOOR)
    b = np.maximum(batch / max(batch.sum(), 1), SHARE_FLOOR)
    return float(np.sum((b - r) * np.log(b / r)))


def jensen_shannon(reference: np.ndarray, batch: np.ndarray) -> float:
    from scipy.spatial.distance import jensenshannon

    if not reference.sum() or not batch.sum():
        return 0.0
    return float(jensenshannon(reference / reference.sum(), batch / batch.sum(), base=2))


def homogeneity_p_value(reference: np.ndarray, batch: np.ndarray) -> float:
    """p-value of the chi-square test that both sets of counts come from one distribution."""
    from scipy.stats import chi2_contingency

    table = np.vstack([reference, batch]).astype(np.float64)
    table = table[:, table.sum(axis=0) > 0]
    if table.shape[1] < 2 or not table[0].sum() or not table[1].sum():
        return 1.0
    return float(chi2_contingency(table, correction=False).pvalue)


def number_bins(edges: Sequence[float]) -> list[str]:
    if not edges:
        return ["all"]
    shown = [f"{edge:.4g}" for edge in edges]
    return [
        f"≤ {shown[0]}",
        *(f"{low}–{high}" for low, high in zip(shown[:-1], shown[1:], strict=True)),
        f"> {shown[-1]}",
    ]


def feature_counts(name: str, entry: Mapping, counts: BatchCounts) -> tuple[list[str], np.ndarray, np.ndarray, str]:
    """(bin labels, reference counts, batch counts, note) of one feature, a bin for gaps and
    (categories) one for the values the reference did not keep, where either side has any."""
    if entry["kind"] == "number":
        labels = number_bins(entry["edges"])
        reference = np.asarray(entry["counts"], dtype=np.int64)
        batch = np.asarray(counts.counts[name], dtype=np.int64)
        note = ""
    else:
        kept = list(entry["counts"])
        found = counts.counts[name]
        labels = [*kept, OTHER]
        reference = np.asarray([*(entry["counts"][key] for key in kept), entry["other"]], dtype=np.int64)
        batch = np.asarray(
            [*(found.get(key, 0) for key in kept), sum(found.values()) - sum(found.get(key, 0) for key in kept)]
        )
        unseen = counts.unseen[name].most_common(5)
        note = ("values not in the reference: " + ", ".join(f"{v!r} ({n})" for v, n in unseen)) if unseen else ""
        if not reference[-1] and not batch[-1]:
            labels, reference, batch = labels[:-1], reference[:-1], batch[:-1]
    if entry["missing"] or counts.missing[name]:
        labels = [*labels, MISSING]
        reference = np.append(reference, entry["missing"])
        batch = np.append(batch, counts.missing[name])
    return labels, reference, batch, note


def compare(reference: Mapping, counts: BatchCounts, settings) -> DriftResult:
    """Each feature of ``counts`` against ``reference``, judged with ``settings``
    (``drift.psi``, ``drift.jensen_shannon``, ``drift.p_value``)."""
    features = []
    for name, entry in reference["features"].items():
        labels, ref, batch, note = feature_counts(name, entry, counts)
        number = entry["kind"] == "number"
        statistic = "psi" if number else "jensen_shannon"
        value = psi(ref, batch) if number else jensen_shannon(ref, batch)
        threshold = float(settings.psi if number else settings.jensen_shannon)
        p_value = homogeneity_p_value(ref, batch)
        features.append(
            FeatureDrift(
                name,
                entry["kind"],
                statistic,
                value,
                threshold,
                p_value,
                bool(value >= threshold and p_value < settings.p_value),
                labels,
                (ref / max(ref.sum(), 1)).tolist(),
                (batch / max(batch.sum(), 1)).tolist(),
                note,
            )
        )
    features.sort(key=lambda f: (not f.drifted, -f.score, f.p_value, f.name))
    return DriftResult(counts.source, counts.rows, int(reference.get("rows", 0)), features)
