"""A model's metrics on the labelled rows of a batch, counted chunk by chunk.

The holdout metrics (``core.metrics``) that add up over chunks: ``accuracy`` and
``f1_macro`` from a confusion matrix, ``log_loss`` from a sum, each equal to
scikit-learn's on all the rows at once. ``roc_auc_ovr`` needs every row's score at
once, so a batch has none (a gated ``roc_auc_ovr`` is not compared).

A label is compared with the model's classes as text (a CSV's ``1`` is class ``1``); a
label the model does not know is a wrong prediction, and left out of the log loss
(scikit-learn refuses it there). Rows without a label are not counted.
"""

from __future__ import annotations

from collections import Counter
from collections.abc import Sequence

import numpy as np
import pandas as pd


def label_text(value) -> str:
    """A label as text, a whole float as an integer: a CSV column of labels with a gap is read
    as floats (``1.0``), where the model's classes are ``1``."""
    if isinstance(value, (float, np.floating)) and float(value).is_integer():
        return str(int(value))
    return str(value.item() if isinstance(value, np.generic) else value)


class LabelledScores:
    def __init__(self, classes: Sequence):
        self.classes = [label_text(c) for c in classes]
        self.index = {label: i for i, label in enumerate(self.classes)}
        k = len(self.classes)
        self.confusion = np.zeros((k, k), dtype=np.int64)  # truth x predicted, known labels
        self.unknown = Counter()  # labels the model does not know, and how often
        self.guessed_for_unknown = np.zeros(k, dtype=np.int64)  # predictions for those rows
        self.log_loss_sum = 0.0
        self.log_loss_rows = 0
        self.without_proba = 0  # labelled rows scored without probabilities
        self.rows = 0

    def add(self, labels: pd.Series, predicted: Sequence, proba: np.ndarray | None = None) -> None:
        """Count one chunk: its ``labels`` (gaps are unlabelled rows, skipped), the model's
        ``predicted`` labels and, when it has them, ``proba`` (rows x classes)."""
        labelled = labels.notna().to_numpy()
        if not labelled.any():
            return
        truth = [label_text(v) for v in labels[labelled]]
        guessed = [label_text(v) for v in np.asarray(predicted, dtype=object)[labelled]]
        self.rows += len(truth)
        truth_index = np.asarray([self.index.get(t, -1) for t in truth])
        guessed_index = np.asarray([self.index.get(g, -1) for g in guessed])
        known = truth_index >= 0
        self.unknown.update(t for t, ok in zip(truth, known, strict=True) if not ok)
        both = known & (guessed_index >= 0)
        np.add.at(self.confusion, (truth_index[both], guessed_index[both]), 1)
        stray = ~known & (guessed_index >= 0)
        np.add.at(self.guessed_for_unknown, guessed_index[stray], 1)
        if proba is None:
            self.without_proba += len(truth)
            return
        rows = np.asarray(proba, dtype=np.float64)[labelled][known]
        eps = np.finfo(np.float64).eps
        picked = np.clip(rows[np.arange(len(rows)), truth_index[known]], eps, 1 - eps)
        self.log_loss_sum += float(-np.log(picked).sum())
        self.log_loss_rows += len(rows)

    def metrics(self) -> dict[str, float]:
        """``accuracy``, ``f1_macro`` and (with probabilities for every labelled row) ``log_loss``."""
        if not self.rows:
            return {}
        right = np.diag(self.confusion)
        found = {"accuracy": float(right.sum() / self.rows)}
        truth = self.confusion.sum(axis=1)
        guessed = self.confusion.sum(axis=0) + self.guessed_for_unknown
        present = (truth + guessed) > 0
        denominator = truth + guessed
        f1 = np.divide(2 * right, denominator, out=np.zeros(len(right)), where=denominator > 0)
        # scikit-learn averages over the labels seen in truth or prediction; an unknown label scores 0.
        found["f1_macro"] = float(f1[present].sum() / (present.sum() + len(self.unknown)))
        if self.log_loss_rows and not self.without_proba:
            found["log_loss"] = self.log_loss_sum / self.log_loss_rows
        return found


def labels_of(proba: np.ndarray, classes: Sequence) -> np.ndarray:
    """The class of the highest probability in each row (what ``predict`` gives for the
    estimators here), for a batch scored with ``predict_proba`` only."""
    return np.asarray(classes, dtype=object)[np.argmax(np.asarray(proba), axis=1)]
