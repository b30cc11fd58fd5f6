"""The training data's contract, written with pandera: each feature's dtype, whether it
had gaps, its range (numbers) and the values seen (text with few distinct values).

Inferred from the training split by ``train`` and logged with its run
(:data:`CONTRACT_ARTIFACT`); batch scoring checks new data against it and reports what
falls outside (drift: a value beyond the training range, a category never seen, a gap
where training had none). It reports, it does not refuse: what a model refuses is its
signature's and its own checks' business (``model/dispatch_model.py``).

pandera rather than hand-written checks: it infers the schema from a DataFrame, writes
it as YAML a person can read and edit, and validates a whole chunk at once, reporting
every failing row and check.
"""

from __future__ import annotations

import pandas as pd

CONTRACT_ARTIFACT = "data/contract.yaml"
METADATA_KEY = "data_contract"  # where a packaged model keeps it (MLmodel metadata)
MAX_CATEGORIES = 50  # text columns with more distinct values get no list of allowed values


def infer_contract(features: pd.DataFrame):
    """A pandera ``DataFrameSchema`` of ``features`` (no index, no coercion)."""
    import pandera.pandas as pa

    schema = pa.infer_schema(features).reset_index(drop=True)
    for name in features.columns:
        values = features[name]
        if pd.api.types.is_numeric_dtype(values) or pd.api.types.is_bool_dtype(values):
            continue
        seen = sorted(str(v) for v in values.dropna().unique())
        if 0 < len(seen) <= MAX_CATEGORIES:
            schema = schema.update_column(name, checks=[pa.Check.isin(seen)])
    return schema


def contract_yaml(features: pd.DataFrame) -> str:
    return infer_contract(features).to_yaml()


def load_contract(text: str):
    import pandera.pandas as pa

    return pa.DataFrameSchema.from_yaml(text)


def drift(schema, frame: pd.DataFrame) -> pd.DataFrame:
    """One row per (column, check) that rows of ``frame`` fail: the number of rows and the
    first failing row and value. Empty when every row meets the contract."""
    import pandera.pandas as pa

    columns = [name for name in schema.columns if name in frame.columns]
    try:
        schema.validate(frame[columns], lazy=True)
    except pa.errors.SchemaErrors as err:
        cases = err.failure_cases
        cases = cases[cases["column"].notna()]
        return (
            cases.groupby(["column", "check"], sort=False)
            .agg(rows=("index", "nunique"), first_row=("index", "first"), example=("failure_case", "first"))
            .reset_index()
        )
    return drift_columns()


def combine(reports: list[pd.DataFrame]) -> pd.DataFrame:
    """Reports of successive chunks as one: rows added up, the first failing row kept."""
    found = [report for report in reports if len(report)]
    if not found:
        return drift_columns()
    return (
        pd.concat(found)
        .groupby(["column", "check"], sort=False)
        .agg(rows=("rows", "sum"), first_row=("first_row", "first"), example=("example", "first"))
        .reset_index()
    )


def drift_columns() -> pd.DataFrame:
    return pd.DataFrame(columns=["column", "check", "rows", "first_row", "example"])


def describe(report: pd.DataFrame) -> list[str]:
    """The report as lines for people."""
    return [
        f"column {row.column!r}: {row.rows} row(s) fail {row.check} (first: row {row.first_row}, value {row.example!r})"
        for row in report.itertuples()
    ]
