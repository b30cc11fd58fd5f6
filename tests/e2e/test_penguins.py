"""A table nobody here prepared: the Palmer penguins CSV that the ``palmerpenguins``
package ships (numbers with gaps, ``island`` and ``sex`` as text, ``species`` as a text
target), raw, through `mlflow run`, then served over HTTP and scored in batch."""

from __future__ import annotations

import subprocess
import sys
from pathlib import Path

import mlflow
import numpy as np
import pandas as pd
import requests

from core import contracts
from model.dispatch_model import available_methods
from tests.support.factories import mlflow_run, pipeline_outputs, venv_env
from tests.support.helpers import free_port, stop, wait_for_http


def penguins_csv() -> Path:
    import palmerpenguins

    return Path(palmerpenguins.__file__).parent / "data" / "penguins.csv"


RECORDS = [  # JSON as a client writes it: integers, text, nulls, a category never seen
    {
        "island": "Biscoe",
        "bill_length_mm": 47,
        "bill_depth_mm": 14.5,
        "flipper_length_mm": 215,
        "body_mass_g": 5000,
        "sex": "female",
        "year": 2008,
    },
    {
        "island": "Torgersen",
        "bill_length_mm": 38.9,
        "bill_depth_mm": 18,
        "flipper_length_mm": None,
        "body_mass_g": 3600,
        "sex": None,
        "year": 2009,
    },
    {
        "island": "Atlantis",
        "bill_length_mm": 49.5,
        "bill_depth_mm": 19.0,
        "flipper_length_mm": 200,
        "body_mass_g": None,
        "sex": "male",
        "year": 2007,
    },
]


def serve_champion(env: dict, tmp_path: Path) -> tuple[subprocess.Popen, str]:
    """``make serve``'s server on the champion of the test's store, once it answers /ping."""
    port, log = free_port(), tmp_path / "server.log"
    with open(log, "w") as handle:
        server = subprocess.Popen(
            [sys.executable, "-m", "serving.server", "--port", str(port)],
            env=env,
            cwd=tmp_path,
            stdout=handle,
            stderr=subprocess.STDOUT,
        )
    base = f"http://127.0.0.1:{port}"
    try:
        wait_for_http(server, f"{base}/ping", log, timeout=300)
    except BaseException:
        stop(server)
        raise
    return server, base


def test_penguins_raw_csv_is_promoted_served_and_scored(project_env, tmp_path, tracking_store):
    source = penguins_csv()
    raw = pd.read_csv(source)
    assert raw.isna().any().any() and raw["island"].dtype != float  # the table as shipped

    result = mlflow_run(
        project_env, tmp_path, f"data=file data.path={source} data.target=species model=tabular_logistic_regression"
    )
    assert result.returncode == 0, result.stdout[-2000:] + result.stderr[-3000:]
    assert "promoted version 1 to champion" in result.stdout
    outputs = pipeline_outputs(tracking_store)
    assert outputs["validation_status"] == "passed"
    reference = mlflow.sklearn.load_model(outputs["model_uri"])
    classes = list(reference.classes_)
    assert classes == ["Adelie", "Chinstrap", "Gentoo"]

    server, base = serve_champion(venv_env(PYTHONPATH=str(contracts.PROJECT_DIR)), tmp_path)
    try:
        expected_rows = pd.DataFrame(RECORDS).astype({"bill_length_mm": float, "body_mass_g": float})

        def call(method, records=RECORDS):
            return requests.post(
                f"{base}/invocations",
                timeout=60,
                json={"dataframe_records": records, "params": {"predict_method": method}},
            )

        labels = call("predict")
        assert labels.status_code == 200, labels.text
        assert labels.json()["predictions"] == list(reference.predict(expected_rows))
        assert all(isinstance(label, str) for label in labels.json()["predictions"])
        for method in ("predict_proba", "predict_log_proba"):
            answer = call(method)
            assert answer.status_code == 200, answer.text
            # Columns in the order of the model's classes (metadata "classes").
            np.testing.assert_allclose(
                answer.json()["predictions"], getattr(reference, method)(expected_rows), atol=1e-9
            )
        wrong = call("predict", [{**RECORDS[0], "body_mass_g": "heavy"}])
        assert wrong.status_code == 400 and "body_mass_g" in wrong.json()["message"]
        assert "stack_trace" not in wrong.json()
    finally:
        stop(server)

    # The raw table, and two rows beyond what training saw: reported, scored all the same.
    odd = raw.head(2).assign(body_mass_g=[99999.0, 3500.0], island=["Biscoe", "Atlantis"])
    source = tmp_path / "penguins-and-two-odd-rows.csv"
    pd.concat([raw, odd], ignore_index=True).to_csv(source, index=False)
    raw = pd.read_csv(source)
    out = tmp_path / "scored.csv"
    scored = subprocess.run(
        [
            sys.executable,
            "-m",
            "serving.batch",
            "--no-progress",
            "--input",
            str(source),
            "--output",
            str(out),
            "--predict-method",
            "predict",
            "--id-columns",
            "species",
        ],
        env=venv_env(PYTHONPATH=str(contracts.PROJECT_DIR)),
        cwd=tmp_path,
        capture_output=True,
        text=True,
        timeout=300,
    )
    assert scored.returncode == 0, scored.stderr[-3000:]
    assert (
        "outside the training data's contract: column 'body_mass_g': 1 row(s) fail "
        "less_than_or_equal_to(6300.0) (first: row 344, value 99999.0)"
    ) in scored.stderr
    assert "column 'island': 1 row(s) fail isin(['Biscoe', 'Dream', 'Torgersen']) (first: row 345" in scored.stderr
    table = pd.read_csv(out)
    assert len(table) == len(raw)  # rows with gaps included
    features = [c for c in raw.columns if c != "species"]
    np.testing.assert_array_equal(table["prediction"], reference.predict(raw[features]))
    assert (table["prediction"] == table["species"]).mean() > 0.9
    # The table the model learned from has not drifted; its labels (species) give its accuracy.
    assert "0 of 7 features drifted (share 0.00); accuracy 0.9" in scored.stdout
    assert f"on {raw.species.notna().sum()} labelled rows" in scored.stdout


def test_penguins_with_factor_columns_in_parquet_are_promoted_and_served(project_env, tmp_path, tracking_store):
    """What R, Spark and ``astype("category")`` write: ``island`` and ``sex`` as pandas
    ``category`` columns in Parquet. Trained by the driver, then served over HTTP, where
    clients send those columns as text; the answers equal the native pipeline's."""
    factors = pd.read_csv(penguins_csv()).astype({"island": "category", "sex": "category"})
    source = tmp_path / "penguins-factors.parquet"
    factors.to_parquet(source)
    env = {**project_env, "PYTHONPATH": str(contracts.PROJECT_DIR)}
    trained = subprocess.run(
        [
            sys.executable,
            "-m",
            "pipeline.main",
            "data=file",
            f"data.path={source}",
            "data.target=species",
            "model=hist_gradient_boosting",
        ],
        env=env,
        cwd=tmp_path,
        capture_output=True,
        text=True,
        timeout=900,
    )
    assert trained.returncode == 0, trained.stdout[-2000:] + trained.stderr[-3000:]
    assert "promoted version 1 to champion" in trained.stdout
    reference = mlflow.sklearn.load_model(pipeline_outputs(tracking_store)["model_uri"])

    server, base = serve_champion(env, tmp_path)
    try:
        records = [{k: v for k, v in r.items() if k in reference.feature_names_in_} for r in RECORDS[:2]]
        native = pd.DataFrame(records).astype(
            {
                "island": factors["island"].dtype,
                "sex": factors["sex"].dtype,
                "bill_length_mm": float,
                "body_mass_g": float,
            }
        )
        for method in available_methods(reference):  # HistGradientBoosting has no predict_log_proba
            answer = requests.post(
                f"{base}/invocations",
                timeout=60,
                json={"dataframe_records": records, "params": {"predict_method": method}},
            )
            assert answer.status_code == 200, answer.text
            expected = getattr(reference, method)(native[list(reference.feature_names_in_)])
            if method == "predict":
                assert answer.json()["predictions"] == list(expected)
            else:
                np.testing.assert_allclose(answer.json()["predictions"], expected, atol=1e-9)
    finally:
        stop(server)
