"""Validation of a loaded pyfunc model against the native estimator it wraps.

Checks on the holdout, for exactly the methods the estimator has: the model
advertises those; ``predict`` labels identical; ``predict_proba`` within ``atol``
and rows summing to 1; ``predict_log_proba`` equal to the log of the
probabilities where finite; the default method is ``predict_proba``
(``predict`` without probabilities); ``argmax(predict_proba)`` agrees with
``predict`` on the same rows as in the estimator; each missing method and an
unknown one are refused with ``INVALID_PARAMETER_VALUE``.
"""

from __future__ import annotations

import logging
from dataclasses import dataclass

import numpy as np
import pandas as pd

from core.errors import StepError, stored
from core.features import as_sent
from model.dispatch_model import (
    NULLABLE_CONFIG_KEY,
    PREDICT_METHOD_PARAM,
    PREDICT_METHODS,
    available_methods,
    default_method,
    offered_methods,
)

UNSUPPORTED_METHOD_PROBE = "decision_function"

log = logging.getLogger(__name__)


class ValidationFailed(StepError):
    """The registered model did not pass every check."""


@dataclass(frozen=True)
class Check:
    name: str
    passed: bool
    detail: str

    def __post_init__(self):
        # Details end in tags, descriptions and pipeline.error: MLflow's messages quote rows.
        object.__setattr__(self, "detail", stored(self.detail))


def call(model, features: pd.DataFrame, method: str | None):
    """The pyfunc's output for ``features`` as a client sends them (``category`` columns
    as text: ``core.features.as_sent``); the native estimator is asked with them as they are."""
    params = None if method is None else {PREDICT_METHOD_PARAM: method}
    return np.asarray(model.predict(as_sent(features), params=params))


def model_methods(model) -> list[str]:
    """The prediction methods a loaded pyfunc ``model`` advertises."""
    return offered_methods(getattr(getattr(model, "metadata", None), "metadata", None))


UNSEEN_CATEGORY = "__unseen_in_training__"


def edge_rows(features: pd.DataFrame, nullable) -> pd.DataFrame:
    """Rows the holdout may not hold, made from its first row: one per column where the
    model accepts a gap (``nullable``), with that gap, and one per text column with a
    category never seen in training."""
    base = features.head(1)
    rows = []
    for column in features.columns:
        values = features[column]
        text = not (pd.api.types.is_numeric_dtype(values) or pd.api.types.is_bool_dtype(values))
        if column in nullable:
            rows.append(base.astype({column: object if text else np.float64}).assign(**{column: np.nan}))
        if text:
            rows.append(base.assign(**{column: UNSEEN_CATEGORY}))
    if not rows:
        return base.iloc[:0]
    frame = pd.concat(rows, ignore_index=True)
    return frame.astype({c: object for c in frame.columns if frame[c].dtype != features[c].dtype})


def validate_edge_rows(model, reference, features: pd.DataFrame, methods, atol: float) -> list[Check]:
    """Each method on :func:`edge_rows`: equal to the native estimator's, gaps and unseen
    categories included (one check; none when the model takes neither)."""
    nullable = set((getattr(getattr(model, "metadata", None), "metadata", None) or {}).get(NULLABLE_CONFIG_KEY, []))
    rows = edge_rows(features, nullable)
    if rows.empty:
        return []
    native = rows.where(rows.notna(), np.nan)  # a gap is NaN to the estimator, as the model makes it
    problems = []
    for method in methods:
        try:
            got = call(model, rows, method)
            expected = np.asarray(getattr(reference, method)(native))
        except Exception as err:  # noqa: BLE001 - a refusal here is a failed check
            problems.append(f"{method}: {type(err).__name__}: {err}")
            continue
        if method == "predict":
            same = np.array_equal(got, expected)
        else:
            finite = np.isfinite(expected)
            same = np.array_equal(finite, np.isfinite(got)) and bool(
                np.all(np.abs(got[finite] - expected[finite]) <= atol)
            )
        if not same:
            problems.append(f"{method} differs from the estimator")
    detail = "; ".join(problems) or f"{len(rows)} row(s) with a gap or an unseen category agree"
    return [Check("gaps_and_unseen_categories_match_reference", not problems, detail)]


def validate_predictions(model, reference, features: pd.DataFrame, atol: float) -> list[Check]:
    """Compare the pyfunc ``model`` with the native ``reference`` estimator on ``features``.

    Exactly the methods the reference estimator has are validated; the model must
    advertise those and no others, and must refuse each of the others (and an
    unknown name) with ``INVALID_PARAMETER_VALUE``.
    """
    from mlflow.exceptions import MlflowException

    expected_methods = list(available_methods(reference))
    offered = model_methods(model)
    checks = [
        Check(
            "advertised_methods_match_estimator",
            offered == expected_methods,
            f"model advertises {offered}; {type(reference).__name__} has {expected_methods}",
        )
    ]
    outputs = {}
    for method in expected_methods:
        try:
            outputs[method] = call(model, features, method)
        except Exception as err:  # every failure becomes a failed check with its message
            checks.append(Check(f"{method}_callable", False, f"{type(err).__name__}: {err}"))

    if "predict" in outputs:
        expected = reference.predict(features)
        same = np.array_equal(outputs["predict"], expected)
        mismatches = int(np.sum(outputs["predict"] != expected)) if not same else 0
        checks.append(Check("predict_labels_identical", same, f"{mismatches} label(s) differ"))

    if "predict_proba" in outputs:
        proba = outputs["predict_proba"]
        reference_proba = reference.predict_proba(features)
        diff = float(np.max(np.abs(proba - reference_proba)))
        checks.append(Check("predict_proba_matches_reference", diff <= atol, f"max |diff| {diff:.3g}"))
        sums = float(np.max(np.abs(proba.sum(axis=1) - 1.0)))
        checks.append(Check("predict_proba_rows_sum_to_one", sums <= atol, f"max |sum-1| {sums:.3g}"))
        if "predict" in outputs:
            # Rows where the most probable class is the predicted label: the same rows
            # as in the estimator (an SVC with Platt scaling may disagree with itself).
            classes = reference.classes_
            got = classes[np.argmax(proba, axis=1)] == outputs["predict"]
            expected = classes[np.argmax(reference_proba, axis=1)] == reference.predict(features)
            checks.append(
                Check(
                    "argmax_proba_agrees_with_predict_as_in_estimator",
                    np.array_equal(got, expected),
                    f"classes_[argmax(proba)] == predict on {int(got.sum())} of {len(got)} rows "
                    f"(estimator: {int(expected.sum())})",
                )
            )

    default_name = default_method(reference)
    if default_name in outputs:
        default = call(model, features, None)
        checks.append(
            Check(
                f"default_method_is_{default_name}",
                default.shape == outputs[default_name].shape and np.array_equal(default, outputs[default_name]),
                f"default output shape {default.shape}",
            )
        )

    if "predict_log_proba" in outputs and "predict_proba" in outputs:
        log_proba, proba = outputs["predict_log_proba"], outputs["predict_proba"]
        with np.errstate(divide="ignore"):
            expected_log = np.log(proba)
        finite = np.isfinite(expected_log)
        same_support = np.array_equal(finite, np.isfinite(log_proba))
        diff = float(np.max(np.abs(log_proba[finite] - expected_log[finite]), initial=0.0))
        checks.append(
            Check(
                "predict_log_proba_is_log_of_proba",
                same_support and diff <= atol,
                f"max |diff| where finite {diff:.3g}; non-finite cells agree: {same_support}",
            )
        )

    checks += validate_edge_rows(model, reference, features, expected_methods, atol)

    for method in [m for m in PREDICT_METHODS if m not in expected_methods] + [UNSUPPORTED_METHOD_PROBE]:
        name = "unsupported_method_rejected" if method == UNSUPPORTED_METHOD_PROBE else f"{method}_rejected"
        try:
            call(model, features.head(1), method)
            checks.append(Check(name, False, f"{method}: no error was raised"))
        except MlflowException as err:
            checks.append(Check(name, err.error_code == "INVALID_PARAMETER_VALUE", err.message))
        except Exception as err:  # any other error is not the clear refusal callers rely on
            checks.append(Check(name, False, f"{method}: {type(err).__name__}: {err}"))
    return checks


def load_and_validate(model_uri: str, reference, features: pd.DataFrame, atol: float):
    """Load ``model_uri`` and check it against ``reference``: (model or None, checks).
    A model that cannot even load fails validation; it is not promoted."""
    try:
        from core.integrity import load_verified

        model = load_verified(model_uri)
    except Exception as err:  # noqa: BLE001 - any load failure is a failed check
        return None, [Check("load_model", False, f"{type(err).__name__}: {err}")]
    try:
        return model, validate_predictions(model, reference, features, atol)
    except Exception as err:  # noqa: BLE001 - a check that cannot run fails: fail closed
        log.exception("validation could not run")
        return model, [Check("validate_predictions", False, f"{type(err).__name__}: {err}")]
