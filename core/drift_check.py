"""A batch against the reference profile of a model: the check behind ``make drift``,
``ops.retrain --when drift`` and batch scoring.

Reads:
- the model (``models:/<name>/<version>``, an alias, or ``models:/m-…``), its files
  checked against their record first (``core.integrity``); from its ``MLmodel``: the
  reference profile (metadata ``data_reference``, ``core.reference``), the input schema
  and the classes; the holdout metrics ``evaluate`` logged on it;
- the batch, a CSV or Parquet file, in chunks of ``drift.chunk_size`` rows, each counted
  into the reference's bins: a file of any size is a counting job.

Where the batch has the training data's target column, the model is loaded and scores
the labelled rows (typed as its signature types them, ``core.chunk_types``); their
metrics (``core.batch_metrics``) stand beside the holdout's.
Writes nothing: ``core.drift_record`` records a check.
"""

from __future__ import annotations

from dataclasses import dataclass
from pathlib import Path

import numpy as np
import pandas as pd

from core.batch_metrics import LabelledScores, labels_of
from core.chunk_types import check_chunk
from core.drift import DriftResult, compare
from core.metrics import HOLDOUT_METRICS
from core.reference import METADATA_KEY, BatchCounts, DriftInputError, NoReference, load_reference
from core.tabular import columns, iter_chunks


@dataclass
class Compared:
    """The model a batch is compared with, and what the check needs of it."""

    uri: str  # exactly this model: models:/<name>/<version> or models:/m-…
    model_id: str
    name: str | None
    version: str | None
    reference: dict
    types: dict[str, str]  # input column -> MLflow type, from the signature
    classes: list
    holdout_metrics: dict[str, float]
    experiment_id: str

    @property
    def label(self) -> str:
        return f"{self.name} version {self.version}" if self.version else f"logged model {self.model_id}"


def holdout_metrics(model_id: str) -> dict[str, float]:
    """The metrics ``evaluate`` logged on the logged model (its holdout), the latest of each."""
    from mlflow import MlflowClient

    found = sorted(MlflowClient().get_logged_model(model_id).metrics or [], key=lambda m: (m.timestamp, m.step))
    return {metric.key: float(metric.value) for metric in found if metric.key in HOLDOUT_METRICS}


def compared_model(uri: str, version: str | None, model_id: str, found) -> Compared:
    """What a check needs of the model ``uri`` whose ``MLmodel`` is ``found`` (``mlflow.models.Model``,
    of its verified files, or a loaded pyfunc's ``metadata``)."""
    from mlflow import MlflowClient

    metadata = found.metadata or {}
    text = metadata.get(METADATA_KEY)
    if not text:
        raise NoReference(
            f"{uri} has no reference profile of its training data (metadata {METADATA_KEY}): it was packaged "
            "without one; the versions the pipeline registers now carry it"
        )
    signature = found.signature
    types = {spec.name: spec.type.name for spec in signature.inputs.inputs} if signature is not None else {}
    name = uri.removeprefix("models:/").rpartition("/")[0] if version else None
    return Compared(
        uri,
        model_id,
        name,
        version,
        load_reference(text),
        types,
        list(metadata.get("classes", [])),
        holdout_metrics(model_id),
        MlflowClient().get_logged_model(model_id).experiment_id,
    )


class BatchCheck:
    """A batch counted chunk by chunk against :class:`Compared`: its features into the
    reference's bins, its labelled rows (with the model's outputs) into metrics."""

    def __init__(self, compared: Compared, source: str):
        self.compared = compared
        self.counts = BatchCounts(compared.reference, source)
        self.target = compared.reference.get("target")
        self.scores = LabelledScores(compared.classes)

    def add(self, features: pd.DataFrame, labels: pd.Series | None = None, predicted=None, proba=None) -> None:
        """Count ``features``; with ``labels`` and the model's ``predicted`` labels (and
        ``proba``) for the same rows, score them."""
        self.counts.add(features)
        if labels is not None and predicted is not None:
            self.scores.add(labels, predicted, proba)

    def add_scored(self, chunk: pd.DataFrame, features: pd.DataFrame, output, method: str) -> None:
        """Count a chunk batch scoring scored with ``method`` (its ``output``); where the chunk
        has labels, the labels come from the output (the class of the highest probability
        for ``predict_proba``), and the log loss only with probabilities."""
        if self.target not in chunk.columns or not chunk[self.target].notna().any():
            self.add(features)
            return
        output = np.asarray(output)
        proba = None if method == "predict" else (np.exp(output) if method == "predict_log_proba" else output)
        predicted = output.reshape(len(output)) if proba is None else labels_of(proba, self.compared.classes)
        self.add(features, chunk[self.target], predicted, proba)

    def result(self, settings) -> DriftResult:
        result = compare(self.compared.reference, self.counts, settings)
        result.model = self.compared.label
        result.labelled_rows = self.scores.rows
        result.batch_metrics = self.scores.metrics()
        result.holdout_metrics = dict(self.compared.holdout_metrics)
        result.greater_is_better = dict(HOLDOUT_METRICS)
        return result


def check_file(model_uri: str, path: Path, settings) -> tuple[Compared, DriftResult]:
    """Check ``path`` against the reference of ``model_uri`` (an alias is read once).
    ``DriftInputError`` (or ``core.tabular.TableError``, ``ScoringError``) names the file, row
    and column of a batch that cannot be compared: a missing feature column, no rows, a
    value of the wrong type."""
    import mlflow
    from mlflow.models import Model

    from core.integrity import resolve, verified_copy
    from core.validation import call, model_methods

    exact, version, model_id = resolve(model_uri)
    path = Path(path)
    header = columns(path, "Input file")  # before the model is downloaded: a bad file fails at once
    with verified_copy(exact) as local:
        compared = compared_model(exact, version, model_id, Model.load(str(local)))
        check = BatchCheck(compared, str(path))
        check.counts.check_columns(header)
        labelled = bool(check.target) and check.target in header
        model = mlflow.pyfunc.load_model(str(local)) if labelled else None
        text = [name for name, kind in compared.types.items() if kind == "string"]
        kept = [check.target] if labelled else []
        for chunk in iter_chunks(path, settings.chunk_size, "Input file", text_columns=text, kept_columns=kept):
            if chunk.empty:  # a CSV with a header only
                continue
            check.counts.add(chunk)
            if not labelled or not chunk[check.target].notna().any():
                continue
            # Only the labelled rows go to the model, as its signature types them.
            rows = chunk[chunk[check.target].notna()]
            scored = check_chunk(rows, compared.types, path) if compared.types else rows
            proba = call(model, scored, "predict_proba") if "predict_proba" in model_methods(model) else None
            check.scores.add(rows[check.target], call(model, scored, "predict"), proba)
    if not check.counts.rows:
        raise DriftInputError(f"Input file {path} has no rows")
    return compared, check.result(settings)
