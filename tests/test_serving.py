"""The registered champion behind a real `mlflow models serve`, called over HTTP."""

from __future__ import annotations

import os
import shutil
import socket
import subprocess
import sys
import time
from pathlib import Path

import mlflow
import numpy as np
import pytest
import requests

from steps import common, evaluate
from tests.test_evaluate import run_chain

pytestmark = pytest.mark.slow

FEATURES = ["petal length (cm)", "petal width (cm)"]
ROWS = [[1.4, 0.2], [4.7, 1.4], [6.0, 2.5]]


def free_port() -> int:
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        return sock.getsockname()[1]


@pytest.fixture(scope="module")
def server(tmp_path_factory, empty_store):
    """Register and validate a champion in a store of its own, then serve it."""
    root = tmp_path_factory.mktemp("serving")
    shutil.copyfile(empty_store, root / "mlflow.db")
    uri = f"sqlite:///{root / 'mlflow.db'}"
    with pytest.MonkeyPatch.context() as patch:
        patch.setenv("MLFLOW_TRACKING_URI", uri)
        patch.chdir(root)
        mlflow.set_tracking_uri(uri)
        experiment = mlflow.create_experiment("serving", artifact_location=(root / "a").as_uri())
        patch.setenv("MLFLOW_EXPERIMENT_ID", experiment)
        cfg = common.compose_config([])
        outputs = run_chain(cfg)
        with mlflow.start_run():
            evaluate.run(outputs["registered_model_uri"], outputs["model_uri"], outputs["holdout_uri"], cfg)
        estimator = mlflow.sklearn.load_model(outputs["model_uri"])
        mlflow.set_tracking_uri(None)

    port = free_port()
    env = {**os.environ, "MLFLOW_TRACKING_URI": uri}
    env["PATH"] = f"{Path(sys.executable).parent}{os.pathsep}{env['PATH']}"
    log = open(root / "server.log", "w")
    process = subprocess.Popen(
        [sys.executable, "-m", "mlflow", "models", "serve", "-m", "models:/iris-classifier@champion",
         "--env-manager", "local", "-h", "127.0.0.1", "-p", str(port)],
        env=env, cwd=root, stdout=log, stderr=subprocess.STDOUT,
    )
    base = f"http://127.0.0.1:{port}"
    deadline = time.monotonic() + 120
    while time.monotonic() < deadline:
        if process.poll() is not None:
            pytest.fail(f"server exited: {(root / 'server.log').read_text()[-3000:]}")
        try:
            if requests.get(f"{base}/ping", timeout=1).status_code == 200:
                break
        except requests.ConnectionError:
            time.sleep(0.5)
    else:
        process.kill()
        pytest.fail("server did not answer /ping within 120 s")
    yield base, estimator
    process.terminate()
    process.wait(timeout=30)
    log.close()


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
    base, estimator = server
    body = {"dataframe_split": {"columns": FEATURES, "data": ROWS}, "params": {"predict_method": method}}
    response = invocations(base, body)
    assert response.status_code == 200, response.text
    np.testing.assert_allclose(response.json()["predictions"], expected(estimator, method), atol=1e-12)


def test_default_method_over_http_is_predict_proba(server):
    base, estimator = server
    records = [dict(zip(FEATURES, row)) for row in ROWS]
    for body in ({"dataframe_records": records}, {"inputs": records}):
        response = invocations(base, body)
        assert response.status_code == 200, response.text
        np.testing.assert_allclose(response.json()["predictions"], expected(estimator, "predict_proba"), atol=1e-12)


def test_csv_body(server):
    base, estimator = server
    csv = ",".join(f'"{name}"' for name in FEATURES) + "\n" + "\n".join(",".join(map(str, r)) for r in ROWS)
    response = invocations(base, csv, content_type="text/csv")
    assert response.status_code == 200, response.text
    np.testing.assert_allclose(response.json()["predictions"], expected(estimator, "predict_proba"), atol=1e-12)


def test_unsupported_method_is_a_400_naming_the_allowed_values(server):
    base, _ = server
    body = {"dataframe_split": {"columns": FEATURES, "data": ROWS}, "params": {"predict_method": "transform"}}
    response = invocations(base, body)
    assert response.status_code == 400
    payload = response.json()
    assert payload["error_code"] == "INVALID_PARAMETER_VALUE"
    assert "'transform'" in payload["message"] and "predict_log_proba" in payload["message"]
    assert "stack_trace" not in payload


def test_missing_value_is_a_400_without_stack_trace(server):
    base, _ = server
    body = {"dataframe_records": [{FEATURES[0]: None, FEATURES[1]: 0.2}]}
    response = invocations(base, body)
    assert response.status_code == 400
    payload = response.json()
    assert "missing value" in payload["message"] and FEATURES[0] in payload["message"]
    assert "stack_trace" not in payload
