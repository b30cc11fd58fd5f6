"""The pipeline against a shared `mlflow server`: PostgreSQL backend store, proxied artifacts.

Needs PostgreSQL at 127.0.0.1:5432 (the machine's service: see tests/support/postgres.py);
the tests skip, saying so, where it is not running. The server: tests/support/tracking_server.py.
"""

from __future__ import annotations

import subprocess
import sys

import mlflow
from mlflow import MlflowClient

from core import contracts
from pipeline import graph
from tests.support.tracking_server import server_env

MODEL = "iris-classifier"
# The tests share the session's server (tests/e2e/conftest.py); each has its own experiment,
# and this module the registered model MODEL.


def test_pipeline_over_http_with_proxied_artifacts(tracking_server, project_env, tmp_path):
    uri, server_dir = tracking_server.uri, tracking_server.root
    name = "iris-over-http"
    env = server_env(project_env, uri, "over-http")
    result = subprocess.run(
        [sys.executable, "-m", "ops.retrain", "--wait", "60", f"registry.model_name={name}"],
        env=env,
        cwd=tmp_path,
        capture_output=True,
        text=True,
        timeout=900,
    )
    assert result.returncode == 0, result.stderr[-3000:]
    assert "promoted version 1 to champion" in result.stdout
    client = MlflowClient(tracking_uri=uri)
    champion = client.get_model_version_by_alias(name, "champion")
    run = client.get_run(champion.tags["lineage.train_run_id"])
    assert run.info.artifact_uri.startswith("mlflow-artifacts:/")
    assert (server_dir / "server-artifacts").is_dir()
    mlflow.set_tracking_uri(uri)
    model = mlflow.pyfunc.load_model(f"models:/{name}@champion")
    assert model.predict(
        __import__("pandas").DataFrame({"petal length (cm)": [1.4], "petal width (cm)": [0.2]}),
        params={"predict_method": "predict"},
    ).tolist() == [0]


def test_four_pipelines_at_once(tracking_server, project_env, tmp_path):
    uri = tracking_server.uri
    env = server_env(project_env, uri, "four-at-once")
    options = ["model.C=0.5", "model.C=1.0", "model.C=2.0", "model.C=4.0"]
    processes = [
        subprocess.Popen(
            [sys.executable, "-m", "pipeline.main", option],
            env=env,
            cwd=contracts.PROJECT_DIR,
            stdout=subprocess.PIPE,
            stderr=subprocess.STDOUT,
            text=True,
        )
        for option in options
    ]
    outputs = [p.communicate(timeout=1200)[0] for p in processes]
    assert [p.returncode for p in processes] == [0] * 4, "\n".join(o[-1500:] for o in outputs)

    client = MlflowClient(tracking_uri=uri)
    experiment = client.get_experiment_by_name("four-at-once").experiment_id
    runs = client.search_runs(experiment_ids=[experiment], max_results=1000)
    by_step = {}
    for run in runs:
        by_step.setdefault(run.data.tags.get(contracts.STEP_TAG), []).append(run)
    assert {step: len(found) for step, found in by_step.items()} == {s: 4 for s in ("main", *graph.NAMES)}
    assert all(run.info.status == "FINISHED" for run in runs)

    versions = client.search_model_versions(f"name='{MODEL}'")
    assert sorted(int(v.version) for v in versions) == [1, 2, 3, 4]
    evaluate_runs = {run.info.run_id for run in by_step["evaluate"]}
    decided = [v for v in versions if v.tags.get("validation_run_id") in evaluate_runs]
    assert len(decided) == 4  # one decision per run, each on its own version
    assert all(v.tags["gate.outcome"] in {"promoted", "challenger"} for v in versions)
    champion = client.get_model_version_by_alias(MODEL, "champion")
    assert champion.tags["gate.outcome"] == "promoted"
    # Decisions were serialized: each promotion compared with the champion of its moment.
    promoted = sorted((v for v in versions if v.tags["gate.outcome"] == "promoted"), key=lambda v: int(v.version))
    assert promoted and all(v.tags[contracts.VALIDATION_STATUS_TAG] == "passed" for v in versions)
