"""The holdout metrics every model is compared on, and a model's outputs on the holdout."""

from __future__ import annotations

from collections.abc import Mapping, Sequence
from dataclasses import dataclass

import numpy as np
import pandas as pd
from sklearn import metrics

from core.validation import call, model_methods

# The metrics holdout_metrics computes, and whether greater is better for each.
HOLDOUT_METRICS = {"accuracy": True, "f1_macro": True, "roc_auc_ovr": True, "log_loss": False}


@dataclass(frozen=True)
class ModelOutputs:
    """One model's outputs on the holdout, and the metrics computed from them."""

    name: str  # shown in legends, e.g. "version 3 (new)"
    predicted: np.ndarray
    proba: np.ndarray | None  # None: the model offers no predict_proba
    metrics: Mapping[str, float]


def holdout_metrics(labels, predicted, proba, classes: Sequence) -> dict[str, float]:
    """``accuracy`` and ``f1_macro``; ``log_loss`` and ``roc_auc_ovr`` when there are probabilities."""
    result = {
        "accuracy": metrics.accuracy_score(labels, predicted),
        "f1_macro": metrics.f1_score(labels, predicted, average="macro"),
    }
    if proba is not None:
        result["log_loss"] = metrics.log_loss(labels, proba, labels=list(classes))
        if len(classes) == 2:  # scikit-learn wants the positive class's column for binary AUC
            result["roc_auc_ovr"] = metrics.roc_auc_score(labels, proba[:, 1])
        else:
            result["roc_auc_ovr"] = metrics.roc_auc_score(labels, proba, multi_class="ovr", labels=list(classes))
    return {name: float(value) for name, value in result.items()}


def holdout_outputs(model, features: pd.DataFrame, name: str, labels: pd.Series, classes: Sequence):
    """The pyfunc's own labels and (if it offers them) probabilities on the holdout, with metrics."""
    predicted = call(model, features, "predict")
    proba = call(model, features, "predict_proba") if "predict_proba" in model_methods(model) else None
    return ModelOutputs(name, predicted, proba, holdout_metrics(labels, predicted, proba, classes))
