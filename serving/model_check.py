"""The check a model passes before ``make serve`` answers with it: a prediction on its own
logged input example with every method it offers, each output shaped and valued as that
method's output must be.

A version whose files load but whose estimator cannot score (an incompatible scikit-learn
pickle, a broken preprocessing step, an estimator whose probabilities are NaN) would
otherwise be swapped in and fail every request. What is checked, for ``n`` example rows
and the model's ``classes`` (its metadata, written by ``package_pyfunc``):

- ``predict``: ``n`` labels, each one of ``classes``;
- ``predict_proba``: ``n`` rows of ``len(classes)`` finite values in [0, 1], each row
  summing to 1;
- ``predict_log_proba``: the same shape, no NaN and nothing above 0 (``-inf``, the log of
  a probability of exactly 0, is a valid answer: the server sends it as the most
  negative double).

Any refusal is a :class:`ModelCheckFailed` naming the method and what was wrong.
"""

from __future__ import annotations

import numpy as np

from model.dispatch_model import PREDICT_METHOD_PARAM, offered_methods

SUM_TOLERANCE = 1e-6  # how far a row of probabilities may sum from 1


class ModelCheckFailed(Exception):
    """The model cannot be served: the message says which method failed and how."""


def check_model(model) -> list[str]:
    """Predict ``model``'s input example with each method it offers and check the outputs
    (module docstring); return the methods checked, or raise :class:`ModelCheckFailed`."""
    example = model.input_example
    if example is None or len(example) == 0:
        raise ModelCheckFailed("the model has no logged input example to check it with")
    metadata = model.metadata.metadata or {}
    classes = list(metadata.get("classes") or [])
    methods = offered_methods(metadata)
    for method in methods:
        try:
            output = np.asarray(model.predict(example, params={PREDICT_METHOD_PARAM: method}))
        except Exception as err:  # whatever the estimator raises, the version is not served
            raise ModelCheckFailed(f"{method} on the input example failed: {type(err).__name__}: {err}") from err
        problem = output_problem(method, output, len(example), classes)
        if problem:
            raise ModelCheckFailed(f"{method} on the input example ({len(example)} rows): {problem}")
    return methods


def output_problem(method: str, output: np.ndarray, rows: int, classes: list) -> str | None:
    """What is wrong with ``output`` as ``method``'s answer for ``rows`` rows, or None."""
    if method == "predict":
        if output.shape != (rows,):
            return f"expected {rows} labels, got an array of shape {output.shape}"
        unknown = [label for label in output.tolist() if classes and label not in classes]
        return f"label {unknown[0]!r} is not one of the classes {classes}" if unknown else None
    width = len(classes) if classes else (output.shape[1] if output.ndim == 2 else -1)
    if output.shape != (rows, width):
        return f"expected shape ({rows}, {width}), one column per class; got {output.shape}"
    try:
        values = output.astype(float)
    except (TypeError, ValueError):
        return f"values are not numbers (dtype {output.dtype})"
    if np.isnan(values).any():
        return "NaN in the output"
    if method == "predict_log_proba":
        if (values > 0).any():
            return "a log-probability above 0"
        probabilities = np.exp(values)
    else:
        if not np.isfinite(values).all() or (values < 0).any() or (values > 1).any():
            return "a probability outside [0, 1]"
        probabilities = values
    sums = probabilities.sum(axis=1)
    worst = int(np.argmax(np.abs(sums - 1)))
    if abs(sums[worst] - 1) > SUM_TOLERANCE:
        return f"row {worst}'s probabilities sum to {sums[worst]:.6g}, not 1"
    return None
