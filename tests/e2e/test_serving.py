"""The registered champion behind a real scoring server, called over HTTP: `mlflow
models serve`, and `python -m serving.server` (`make serve`: MLflow's app without
stack traces in 4xx answers)."""

from __future__ import annotations

import contextlib
import json
import subprocess
import sys
from pathlib import Path

import mlflow
import numpy as np
import pytest
import requests

from core import contracts
from core.config import compose_config
from steps import evaluate
from tests.support.champion_store import OUTPUTS
from tests.support.factories import EXPERIMENT, copy_store, new_store, run_chain, venv_env
from tests.support.helpers import free_port, stop, wait_for_http

# One worker runs this module: its tests share the two servers (module-scoped).

FEATURES = ["petal length (cm)", "petal width (cm)"]
ROWS = [[1.4, 0.2], [4.7, 1.4], [6.0, 2.5]]


SERVERS = {
    "mlflow models serve": [
        sys.executable,
        "-m",
        "mlflow",
        "models",
        "serve",
        "-m",
        "models:/iris-classifier@champion",
        "--env-manager",
        "local",
        "-h",
        "127.0.0.1",
    ],
    "make serve": [sys.executable, "-m", "serving.server", "--model-uri", "models:/iris-classifier@champion"],
}


def build_champion(root: Path, empty_store: Path, overrides) -> tuple[str, object]:
    """Register and validate a champion built with ``overrides`` in a store of its own
    under ``root``; return (tracking URI, the native estimator)."""
    with pytest.MonkeyPatch.context() as patch:
        uri = new_store(empty_store, root)
        patch.setenv("MLFLOW_TRACKING_URI", uri)
        patch.setenv("MLFLOW_EXPERIMENT_NAME", EXPERIMENT)
        patch.setenv("PIPELINE_LOCK_DIR", str(root / "locks"))
        patch.chdir(root)
        mlflow.set_tracking_uri(uri)
        cfg = compose_config(list(overrides))
        outputs = run_chain(cfg)
        with mlflow.start_run():
            evaluate.run(outputs["registered_model_uri"], outputs["model_uri"], outputs["holdout_uri"], cfg)
        estimator = mlflow.sklearn.load_model(outputs["model_uri"])
        mlflow.set_tracking_uri(None)
    return uri, estimator


def copied_champion(root: Path, template: Path) -> tuple[str, object]:
    """The default pipeline's champion (a copy of the session's store); (URI, estimator)."""
    uri = copy_store(template, root)
    model_uri = json.loads((template / OUTPUTS).read_text())["model_uri"]
    mlflow.set_tracking_uri(uri)
    try:
        return uri, mlflow.sklearn.load_model(model_uri)
    finally:
        mlflow.set_tracking_uri(None)


@contextlib.contextmanager
def serve(root: Path, uri: str, server: str):
    """Serve ``models:/iris-classifier@champion`` of the store at ``uri`` with ``server``; yield its base URL."""
    port = free_port()
    env = venv_env(MLFLOW_TRACKING_URI=uri, PYTHONPATH=str(contracts.PROJECT_DIR))
    with open(root / "server.log", "w") as log:
        process = subprocess.Popen(
            SERVERS[server] + ["--port", str(port)], env=env, cwd=root, stdout=log, stderr=subprocess.STDOUT
        )
        base = f"http://127.0.0.1:{port}"
        try:
            wait_for_http(process, f"{base}/ping", root / "server.log", timeout=300)
            yield base
        finally:
            stop(process)


@pytest.fixture(scope="module", params=list(SERVERS))
def server(request, tmp_path_factory, champion_template):
    root = tmp_path_factory.mktemp("serving")
    uri, estimator = copied_champion(root, champion_template)
    with serve(root, uri, request.param) as base:
        yield base, estimator, request.param


def invocations(base: str, body, content_type="application/json"):
    data = body if isinstance(body, str) else None
    return requests.post(
        f"{base}/invocations",
        json=None if data is not None else body,
        data=data,
        headers={"Content-Type": content_type},
        timeout=30,
    )


def expected(estimator, method):
    import pandas as pd

    return getattr(estimator, method)(pd.DataFrame(ROWS, columns=FEATURES))


@pytest.mark.parametrize("method", ["predict", "predict_proba", "predict_log_proba"])
def test_each_method_over_http(server, method):
    base, estimator, _ = server
    body = {"dataframe_split": {"columns": FEATURES, "data": ROWS}, "params": {"predict_method": method}}
    response = invocations(base, body)
    assert response.status_code == 200, response.text
    np.testing.assert_allclose(response.json()["predictions"], expected(estimator, method), atol=1e-12)


def test_default_method_over_http_is_predict_proba(server):
    base, estimator, _ = server
    records = [dict(zip(FEATURES, row, strict=False)) for row in ROWS]
    for body in ({"dataframe_records": records}, {"inputs": records}):
        response = invocations(base, body)
        assert response.status_code == 200, response.text
        np.testing.assert_allclose(response.json()["predictions"], expected(estimator, "predict_proba"), atol=1e-12)


def test_csv_body(server):
    base, estimator, _ = server
    csv = ",".join(f'"{name}"' for name in FEATURES) + "\n" + "\n".join(",".join(map(str, r)) for r in ROWS)
    response = invocations(base, csv, content_type="text/csv")
    assert response.status_code == 200, response.text
    np.testing.assert_allclose(response.json()["predictions"], expected(estimator, "predict_proba"), atol=1e-12)


def test_unsupported_method_message_names_the_allowed_values(server):
    base, _, _ = server
    body = {"dataframe_split": {"columns": FEATURES, "data": ROWS}, "params": {"predict_method": "transform"}}
    response = invocations(base, body)
    assert response.status_code == 400
    payload = response.json()
    assert payload["error_code"] == "INVALID_PARAMETER_VALUE"
    assert "'transform'" in payload["message"] and "predict_log_proba" in payload["message"]
    assert "stack_trace" not in payload


SPLIT = {"columns": FEATURES, "data": ROWS}
BAD_REQUESTS = {
    "unsupported method": (
        {"dataframe_split": SPLIT, "params": {"predict_method": "transform"}},
        "Unsupported predict_method 'transform'",
    ),
    "wrong param type": ({"dataframe_split": SPLIT, "params": {"predict_method": 3}}, "predict_method"),
    "wrong column names": (
        {"dataframe_split": {"columns": ["petal_length", "petal_width"], "data": ROWS}},
        "missing inputs ['petal length (cm)', 'petal width (cm)']",
    ),
    "missing column": ({"dataframe_records": [{FEATURES[0]: 1.4}]}, "missing inputs ['petal width (cm)']"),
    "string value": ({"dataframe_records": [{FEATURES[0]: "long", FEATURES[1]: 0.2}]}, "petal length (cm)"),
    "missing value": (
        {"dataframe_records": [{FEATURES[0]: 1.4, FEATURES[1]: None}]},
        "missing value in column 'petal width (cm)'; LogisticRegression does not accept one there",
    ),
    "no rows": ({"dataframe_split": {"columns": FEATURES, "data": []}}, "no rows"),
    "empty records": ({"dataframe_records": []}, "missing inputs"),
    "malformed json": ('{"dataframe_records": [{', "Invalid input"),
    "csv with a text value": (
        # MLflow's CSV parser names the value, not the column.
        '"petal length (cm)","petal width (cm)"\nlong,0.2',
        "could not convert string to float: 'long'",
    ),
}


@pytest.mark.parametrize("case", list(BAD_REQUESTS))
def test_bad_request_is_a_400_naming_the_problem(server, case):
    base, _, name = server
    body, expected_text = BAD_REQUESTS[case]
    content_type = "text/csv" if case.startswith("csv") else "application/json"
    response = invocations(base, body, content_type=content_type)
    assert response.status_code == 400, response.text
    payload = response.json()
    assert expected_text in payload["message"]
    if case.startswith("csv") and name == "mlflow models serve":
        # MLflow's scoring server parses CSV bodies before the model sees them and
        # always attaches its own traceback to that parse error (docs/serving.md, "Serve it");
        # `make serve` (serving.server) keeps it in the server log instead.
        assert "stack_trace" in payload
        return
    assert "stack_trace" not in payload
    assert "Traceback" not in response.text
    if name == "make serve":  # the message alone, without MLflow's echo of the request's data
        assert "Failed to predict data" not in payload["message"]


def test_unknown_param_key_is_ignored_by_mlflow(server):
    """MLflow drops params the signature does not declare (with a server-side
    warning) and answers with the default method."""
    base, estimator, _ = server
    body = {"dataframe_split": SPLIT, "params": {"method": "predict"}}
    response = invocations(base, body)
    assert response.status_code == 200
    np.testing.assert_allclose(response.json()["predictions"], expected(estimator, "predict_proba"), atol=1e-12)


def test_model_without_probabilities_offers_predict_only_over_http(tmp_path, empty_store):
    (tmp_path / "svc").mkdir()
    uri, estimator = build_champion(tmp_path / "svc", empty_store, ["model=svc", "gate=labels_only"])
    with serve(tmp_path / "svc", uri, "mlflow models serve") as base:
        response = invocations(base, {"dataframe_split": SPLIT})  # no params: predict
        assert response.status_code == 200, response.text
        np.testing.assert_array_equal(response.json()["predictions"], expected(estimator, "predict"))
        for method in ("predict_proba", "predict_log_proba"):
            response = invocations(base, {"dataframe_split": SPLIT, "params": {"predict_method": method}})
            assert response.status_code == 400
            payload = response.json()
            assert payload["error_code"] == "INVALID_PARAMETER_VALUE"
            assert f"SVC has no {method}; this model offers predict." in payload["message"]
            assert "stack_trace" not in payload
