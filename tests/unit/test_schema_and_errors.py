"""How two models' inputs are compared (core.schema), and what an error message keeps once
stored in the tracking store (core.errors.stored): never the rows MLflow quotes."""

from __future__ import annotations

import mlflow
import pandas as pd
import pytest
from mlflow.exceptions import MlflowException
from mlflow.models import infer_signature

from core import gate
from core.errors import stored, without_data
from core.schema import UNTYPED, input_difference, model_inputs


def test_added_removed_and_retyped_columns_are_named():
    assert input_difference({"a": "double", "b": "long"}, {"a": "double", "b": "double", "c": "string"}) == (
        "added 'c' (string); retyped 'b' (long -> double)"
    )
    assert input_difference({"a": "double", "b": "long"}, {"a": "double"}) == "removed 'b' (long)"
    assert input_difference({"a": "double"}, {"a": "double"}) is None
    assert input_difference(None, {"a": "double"}) is None  # unknown: the champion's scoring decides


def test_inputs_come_from_the_signature_else_the_feature_names():
    frame = pd.DataFrame({"n": [1, 2], "x": [0.5, 1.5], "s": ["a", "b"]})
    assert model_inputs(infer_signature(frame), None) == {"n": "long", "x": "double", "s": "string"}
    assert model_inputs(None, {"feature_names": ["n", "x"]}) == {"n": UNTYPED, "x": UNTYPED}
    assert input_difference({"n": "long"}, {"n": UNTYPED}) is None  # a type unknown is no retyping
    assert model_inputs(None, {}) is None


def test_a_stored_message_keeps_no_rows_and_says_what_is_missing():
    message = (
        f"Failed to enforce schema of data '{pd.DataFrame({'a': [0.123456789] * 500})}' with schema "
        "'['a': double (required), 'b': double (required)]'. Error: Model is missing inputs ['b']."
    )
    kept = stored(message)
    assert "0.123456789" not in kept and "\n" not in kept
    assert kept == (
        "The input does not match the model's schema: Model is missing inputs ['b']. Its schema: "
        "['a': double (required), 'b': double (required)]"
    )
    assert stored("x" * 5000, 100) == "x" * 100 + "... (4900 more characters not stored)"
    predicted = "Failed to predict data '   a\n0  0.123456789'. \nError: could not convert 'q' to float"
    assert without_data(predicted) == "could not convert 'q' to float"


class Echo(mlflow.pyfunc.PythonModel):
    def predict(self, context, model_input, params=None):
        return model_input


def test_mlflow_own_schema_error_loses_its_rows(tmp_path):
    frame = pd.DataFrame({"a": [0.123456789] * 300, "b": [0.5] * 300})
    mlflow.pyfunc.save_model(tmp_path / "echo", python_model=Echo(), signature=infer_signature(frame))
    with pytest.raises(MlflowException) as raised:
        mlflow.pyfunc.load_model(str(tmp_path / "echo")).predict(frame[["a"]])
    assert "0    0.123457" in str(raised.value)  # what MLflow says: the rows
    assert stored(str(raised.value)) == (
        "The input does not match the model's schema: Model is missing inputs "
        "['b']. Its schema: ['a': double (required), 'b': double (required)]"
    )


def test_a_broken_champion_reason_holds_no_rows():
    error = (
        "MlflowException: Failed to enforce schema of data '   a\n0  0.123456789\n1  0.123456789' "
        "with schema '['a': double (required)]'. Error: Incompatible input types for column a."
    )
    tags = gate.broken_tags(error, "run-1")
    assert "0.123456789" not in tags["validation.broken_reason"]
    assert "Incompatible input types for column a" in tags["validation.broken_reason"]


def test_mlflow_integer_hint_is_silenced_and_said_once_in_our_words(caplog):
    """MLflow warns at every schema inference over integer columns (four times a pipeline)."""
    import warnings

    from sklearn.linear_model import LogisticRegression

    from core import contracts
    from steps.package_pyfunc import model_signature

    frame = pd.DataFrame({"n": [1, 2, 3, 4], "x": [0.5, 1.5, 2.5, 3.5]})
    estimator = LogisticRegression().fit(frame, [0, 1, 0, 1])
    with warnings.catch_warnings(record=True) as seen:
        warnings.simplefilter("default")
        infer_signature(frame)
        assert any("Hint: Inferred schema contains integer" in str(w.message) for w in seen)  # MLflow's
        seen.clear()
        contracts.configure_logging()
        with caplog.at_level("INFO", logger="steps.package_pyfunc"):
            model_signature(estimator, frame)
            infer_signature(frame)
    assert not [w for w in seen if "Hint: Inferred schema" in str(w.message)]
    ours = [r.getMessage() for r in caplog.records if "typed long" in r.getMessage()]
    assert ours == [
        (
            "integer column(s) ['n'] are typed long: a request or batch row with a gap there is "
            "refused (a column with gaps in training is typed double)"
        )
    ]
