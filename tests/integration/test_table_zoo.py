"""Real tables that ship inside installed packages, fed raw with
``model=tabular_logistic_regression`` (and ``hist_gradient_boosting`` for ``category``
columns), each through train, package and evaluate in process: what the column profile
decided, and the promoted model's three methods against the native pipeline's.

The tables: the Palmer penguins (``palmerpenguins``), raw with its text dates and
comments, and as R and Spark write it (a ``rownames`` column, text dates, an empty
column, ``category`` columns in Parquet); scikit-learn's breast cancer table with a
gap in every row; scikit-learn's digits, 64 integer columns.
"""

from __future__ import annotations

import json
from pathlib import Path

import mlflow
import numpy as np
import pandas as pd
import pytest
import yaml
from sklearn import datasets

from core import data
from core.config import compose_config
from steps import evaluate
from tests.support.factories import run_chain


def palmer(name: str) -> pd.DataFrame:
    import palmerpenguins

    return pd.read_csv(Path(palmerpenguins.__file__).parent / "data" / name)


def r_export(frame: pd.DataFrame) -> pd.DataFrame:
    """``frame`` as an R user's CSV carries it: a ``rownames`` column of names, distinct in
    every row; a text date per row (ISO, as R writes a ``Date``); a column of ``NA`` only."""
    frame = frame.copy()
    frame.insert(0, "rownames", [f"{s} no. {i}" for i, s in enumerate(frame["species"])])
    frame["observed"] = (pd.Timestamp("2007-11-01") + pd.to_timedelta(np.arange(len(frame)) % 90, "D")).strftime(
        "%Y-%m-%d"
    )
    frame["notes"] = np.nan
    return frame


def as_sent(frame: pd.DataFrame) -> pd.DataFrame:
    """``frame`` as a client sends it: ``category`` columns as text, gaps as NaN."""
    return frame.assign(
        **{
            name: frame[name].astype(object).where(frame[name].notna(), np.nan)
            for name in frame.columns
            if isinstance(frame[name].dtype, pd.CategoricalDtype)
        }
    )


def through_pipeline(tmp_path, frame: pd.DataFrame, file: str, target: str, *overrides: str):
    """Write ``frame`` to ``file``, run train, serialize, package and evaluate; return the
    outputs, the evaluate result, the profile train logged (``{column: entry}``), the
    champion and the native pipeline, and the holdout's features."""
    path = tmp_path / file
    frame.to_csv(path, index=False) if path.suffix == ".csv" else frame.to_parquet(path, index=False)
    cfg = compose_config(
        ["data=file", f"data.path={path}", f"data.target={target}", "model=tabular_logistic_regression", *overrides]
    )
    outputs = run_chain(cfg)
    with mlflow.start_run():
        result = evaluate.run(outputs["registered_model_uri"], outputs["model_uri"], outputs["holdout_uri"], cfg)
    from core.profile import PROFILE_ARTIFACT

    train_run = outputs["holdout_uri"].split("/")[1]
    logged = yaml.safe_load(mlflow.artifacts.load_text(f"runs:/{train_run}/{PROFILE_ARTIFACT}"))
    model = mlflow.pyfunc.load_model(f"models:/{cfg.registry.model_name}@champion")
    reference = mlflow.sklearn.load_model(outputs["model_uri"])
    holdout = pd.read_parquet(mlflow.artifacts.download_artifacts(outputs["holdout_uri"]))
    return outputs, result, logged["columns"], model, reference, holdout[list(reference.feature_names_in_)]


def assert_same_as_native(model, reference, features: pd.DataFrame) -> None:
    """The champion's three methods on ``features`` as a client sends them equal the
    native pipeline's on ``features`` as they are."""
    from model.dispatch_model import available_methods

    sent = as_sent(features)
    np.testing.assert_array_equal(
        model.predict(sent, params={"predict_method": "predict"}), reference.predict(features)
    )
    assert model.metadata.metadata["predict_methods"] == list(available_methods(reference))
    for method in available_methods(reference)[1:]:
        np.testing.assert_allclose(
            model.predict(sent, params={"predict_method": method}), getattr(reference, method)(features), atol=1e-9
        )


def kinds(columns: dict) -> dict[str, tuple[str, str]]:
    return {name: (entry["kind"], entry["use"]) for name, entry in columns.items()}


def test_an_r_export_leaves_out_its_rownames_and_empty_column_and_refuses_its_text_dates(tmp_path, caplog):
    frame = r_export(palmer("penguins.csv"))
    # Text dates are dates, as a datetime column is: refused with the same message.
    path = tmp_path / "penguins-r.csv"
    frame.to_csv(path, index=False)
    with pytest.raises(
        data.DataError,
        match=r"feature column\(s\) \['observed'\] hold dates or times "
        r"\(e.g. '2007-11-01' in row 0\); set data.dates=days",
    ):
        data.prepare_data(compose_config(["data=file", f"data.path={path}", "data.target=species"]).data)

    outputs, result, columns, model, reference, features = through_pipeline(
        tmp_path, frame, "penguins-r.csv", "species", "data.drop=[observed]"
    )
    assert (result["validation_status"], result["gate_outcome"]) == ("passed", "promoted")
    found = kinds(columns)
    assert found["rownames"] == ("identifier", "left out")
    assert columns["rownames"]["reason"] == "text distinct in 344 of 344 rows"
    assert found["notes"] == ("empty", "left out")
    assert found["observed"] == ("date", "left out")
    assert found["island"] == ("text", "feature") and found["year"] == ("number", "feature")
    assert found["species"] == ("target", "target")
    assert list(features.columns) == [
        "island",
        "bill_length_mm",
        "bill_depth_mm",
        "flipper_length_mm",
        "body_mass_g",
        "sex",
        "year",
    ]
    assert "column 'rownames' left out: identifier (text distinct in 344 of 344 rows)" in caplog.text
    assert "column 'notes' left out: empty (no value in any row)" in caplog.text
    assert outputs["columns_left_out"] == "rownames (identifier), notes (empty)"  # in the pipeline's summary
    assert set(model.metadata.metadata["nullable_features"]) == {
        "island",
        "bill_length_mm",
        "bill_depth_mm",
        "flipper_length_mm",
        "body_mass_g",
        "sex",
    }
    assert_same_as_native(model, reference, features)


def test_listing_an_identifier_in_data_features_keeps_it(tmp_path):
    frame = r_export(palmer("penguins.csv")).drop(columns=["observed", "notes"])
    path = tmp_path / "listed.csv"
    frame.to_csv(path, index=False)
    cfg = compose_config(
        ["data=file", f"data.path={path}", "data.target=species", "data.features=[rownames,bill_length_mm]"]
    )
    _, _, features, columns = data.prepare(cfg.data)
    assert features == ["rownames", "bill_length_mm"]
    assert (columns[0].kind, columns[0].use) == ("identifier", "feature")


def test_penguins_raw_with_dates_as_days(tmp_path):
    frame = palmer("penguins-raw.csv")
    outputs, result, columns, model, reference, features = through_pipeline(
        tmp_path, frame, "penguins-raw.csv", "Species", "data.dates=days"
    )
    assert result["validation_status"] == "passed"
    assert kinds(columns)["Date Egg"] == ("date", "feature")
    assert features["Date Egg"].dtype == np.float64  # days since 1970-01-01
    assert features["Date Egg"].min() > 13000  # after 2005
    types = {spec.name: spec.type.name for spec in model.metadata.get_input_schema().inputs}
    assert types["Date Egg"] == "double" and types["Comments"] == "string"
    assert_same_as_native(model, reference, features)


@pytest.mark.parametrize("config", ["tabular_logistic_regression", "hist_gradient_boosting"])
def test_category_columns_in_parquet_go_end_to_end(tmp_path, config):
    from mlflow.pyfunc.scoring_server import invocations

    from serving.batch import score_file

    frame = palmer("penguins.csv").astype({"island": "category", "sex": "category", "species": "category"})
    outputs, result, columns, model, reference, features = through_pipeline(
        tmp_path,
        frame,
        "penguins.parquet",
        "species",
        f"model={config}",
        *(["model.max_iter=20"] if config == "hist_gradient_boosting" else []),
    )
    assert (result["validation_status"], result["gate_outcome"]) == ("passed", "promoted")
    assert kinds(columns)["island"] == ("category", "feature")
    assert features["island"].dtype == "category"  # the native pipeline was trained on categories
    if config == "hist_gradient_boosting":
        assert reference.is_categorical_.tolist() == [name in ("island", "sex") for name in features.columns]
    types = {spec.name: spec.type.name for spec in model.metadata.get_input_schema().inputs}
    assert types["island"] == types["sex"] == "string"
    assert {"island", "sex"} <= set(model.metadata.metadata["nullable_features"])
    assert_same_as_native(model, reference, features)

    # Over REST, as the scoring server parses a request (JSON records, nulls included).
    records = json.loads(as_sent(features).to_json(orient="records"))
    body = json.dumps({"dataframe_records": records, "params": {"predict_method": "predict_proba"}})
    answer = invocations(body, "application/json", model, model.metadata.get_input_schema())
    assert answer.status == 200, answer.response
    np.testing.assert_allclose(json.loads(answer.response)["predictions"], reference.predict_proba(features), atol=1e-9)
    # In batch, from the same Parquet file with its category columns.
    rows = score_file(model, tmp_path / "penguins.parquet", tmp_path / "scored.parquet", method="predict")
    scored = pd.read_parquet(tmp_path / "scored.parquet")
    assert rows == len(frame)
    np.testing.assert_array_equal(scored.iloc[:, -1].to_numpy(), reference.predict(frame[features.columns]))


def test_a_table_with_a_gap_in_every_row_is_trained_validated_and_served(tmp_path):
    frame = datasets.load_breast_cancer(as_frame=True).frame
    names = [c for c in frame.columns if c != "target"]
    for position in range(len(frame)):  # one gap per row, in a column that moves along
        frame.iloc[position, position % len(names)] = np.nan
    assert frame[names].isna().any(axis=1).all()
    outputs, result, columns, model, reference, features = through_pipeline(tmp_path, frame, "cancer.csv", "target")
    assert result["validation_status"] == "passed"
    assert model.metadata.metadata["nullable_features"] == names
    assert {entry["kind"] for name, entry in columns.items() if name != "target"} == {"number"}
    assert features.isna().any(axis=1).all()
    assert_same_as_native(model, reference, features)


def test_a_wide_integer_table_is_numbers_throughout(tmp_path):
    frame = datasets.load_digits(as_frame=True).frame.astype("int64").head(600)
    outputs, result, columns, model, reference, features = through_pipeline(
        tmp_path, frame, "digits.parquet", "target", "data.stratify=true"
    )
    assert result["validation_status"] == "passed"
    assert features.shape[1] == 64
    assert {entry["kind"] for name, entry in columns.items() if name != "target"} == {"number"}
    assert {spec.type.name for spec in model.metadata.get_input_schema().inputs} == {"long"}
    assert_same_as_native(model, reference, features)
