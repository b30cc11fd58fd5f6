"""The training data's contract (pandera): inferred from a table, then new data checked
against it, reported per column and check."""

from __future__ import annotations

import numpy as np
import pandas as pd

from core import contract

TRAINING = pd.DataFrame(
    {
        "mass": [3000.0, 4000.0, np.nan, 5000.0],
        "year": [2007, 2008, 2009, 2008],
        "island": ["Biscoe", "Dream", "Dream", None],
    }
)


def test_the_contract_records_types_gaps_ranges_and_categories():
    text = contract.contract_yaml(TRAINING)
    schema = contract.load_contract(text)
    assert schema.columns["mass"].nullable and not schema.columns["year"].nullable
    assert "less_than_or_equal_to: 5000.0" in text and "greater_than_or_equal_to: 2007" in text
    assert "- Biscoe" in text and "- Dream" in text


def test_data_like_the_training_data_meets_it():
    schema = contract.load_contract(contract.contract_yaml(TRAINING))
    assert contract.drift(schema, TRAINING.iloc[[0, 1]]).empty


def test_drift_names_column_check_count_and_first_row():
    schema = contract.load_contract(contract.contract_yaml(TRAINING))
    new = pd.DataFrame(
        {"mass": [99999.0, 3500.0, 88888.0], "year": [2008, 2008, 2008], "island": ["Atlantis", "Dream", "Dream"]},
        index=[10, 11, 12],
    )
    report = contract.drift(schema, new)
    rows = {(r.column, r.check.split("(")[0]): (r.rows, r.first_row, r.example) for r in report.itertuples()}
    assert rows[("mass", "less_than_or_equal_to")] == (2, 10, 99999.0)
    assert rows[("island", "isin")] == (1, 10, "Atlantis")
    lines = contract.describe(report)
    assert any(
        line.startswith("column 'mass': 2 row(s) fail less_than_or_equal_to(5000.0) (first: row 10") for line in lines
    )


def test_reports_of_chunks_add_up():
    schema = contract.load_contract(contract.contract_yaml(TRAINING))
    first = contract.drift(schema, pd.DataFrame({"mass": [1.0], "year": [2008], "island": ["Dream"]}, index=[0]))
    second = contract.drift(
        schema, pd.DataFrame({"mass": [2.0, 3.0], "year": [2008, 2008], "island": ["Dream", "Dream"]}, index=[5, 6])
    )
    (row,) = contract.combine([first, contract.drift_columns(), second]).itertuples()
    assert (row.column, row.rows, row.first_row, row.example) == ("mass", 3, 0, 1.0)


def test_nullable_columns_are_asked_of_a_row_the_estimator_predicts():
    """A gap in the first row, or a row it refuses, does not hide what the estimator takes."""
    from sklearn.ensemble import HistGradientBoostingClassifier
    from sklearn.linear_model import LogisticRegression

    from core.features import nullable_columns

    frame = pd.DataFrame({"a": [np.nan, 1.0, 2.0, 3.0] * 10, "b": [0.5, 1.5, 2.5, 3.5] * 10, "n": [1, 2, 3, 4] * 10})
    labels = [0, 1] * 20
    assert nullable_columns(HistGradientBoostingClassifier().fit(frame, labels), frame) == ["a", "b"]
    complete = frame.fillna(0.0)
    assert nullable_columns(LogisticRegression().fit(complete, labels), frame) == []


def test_column_types_come_from_the_data():
    from core.features import column_type, input_schema

    frame = pd.DataFrame(
        {
            "i": [1, 2],
            "f": [1.5, np.nan],
            "b": [True, False],
            "s": ["x", None],
            "nb": pd.Series([True, None], dtype=object),
            "ni": pd.array([1, None], dtype="Int64"),
        }
    )
    assert {name: column_type(frame[name]) for name in frame} == {
        "i": "long",
        "f": "double",
        "b": "boolean",
        "s": "string",
        "nb": "boolean",
        "ni": "long",
    }
    assert all(spec.required for spec in input_schema(frame).inputs)
