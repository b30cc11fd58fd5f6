"""The schema of ``conf/drift/`` (a section of ``core.config.Config``): when a batch has
drifted, and when that is reason to retrain. The values and what each means are in
``conf/drift/default.yaml``."""

from __future__ import annotations

import math
from dataclasses import dataclass, field


@dataclass
class DriftRetrain:
    share: float = 0.3
    max_drop: float = 0.05
    min_labelled_rows: int = 30


@dataclass
class DriftConfig:
    psi: float = 0.2
    jensen_shannon: float = 0.1
    p_value: float = 0.01
    chunk_size: int = 100_000
    plotted: int = 6
    retrain: DriftRetrain = field(default_factory=DriftRetrain)


# Ranges the types cannot say (core.config.RANGES).
DRIFT_RANGES = (
    ("drift.psi", lambda v: 0 <= v < math.inf, "a finite number, zero or more"),
    ("drift.jensen_shannon", lambda v: 0 <= v <= 1, "a distance between 0 and 1"),
    ("drift.p_value", lambda v: 0 < v <= 1, "a probability above 0, at most 1"),
    ("drift.chunk_size", lambda v: v >= 1, "at least 1 row"),
    ("drift.plotted", lambda v: v >= 0, "zero or more features"),
    ("drift.retrain.share", lambda v: 0 <= v <= 1, "a share between 0 and 1"),
    ("drift.retrain.max_drop", lambda v: 0 <= v < math.inf, "a finite number, zero or more"),
    ("drift.retrain.min_labelled_rows", lambda v: v >= 1, "at least 1 row"),
)
