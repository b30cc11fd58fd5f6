"""Accounts on MLflow's basic-auth server, set up as docs/operations.md (Accounts) shows: the
scheduler trains and promotes; the reader loads the champion and reads runs, and each command
that would change something ends with one line (exit 77), leaving no run RUNNING and the
aliases as they were; no password or token anywhere in the store or the output.

Needs PostgreSQL at 127.0.0.1:5432 (tracking store and auth database; tests/support/postgres.py)
and Flask-WTF (requirements-dev.lock); skips, saying so, without them.
"""

from __future__ import annotations

import re
import subprocess
import sys
from pathlib import Path

import pytest
from mlflow import MlflowClient

from core import contracts
from tests.support import postgres
from tests.support.factories import venv_env
from tests.support.helpers import free_port, stop, wait_for_http

pytest.importorskip("flask_wtf", reason="MLflow's basic-auth app needs Flask-WTF (requirements-dev.lock)")

DOC = contracts.PROJECT_DIR / "docs" / "operations.md"
ADMIN_PASSWORD = "admin-Passw0rd-for-tests"
PASSWORDS = {"scheduler": "scheduler-Passw0rd-7f3a", "reader": "reader-Passw0rd-91c2"}
TOKEN = "canary-token-5e0d2b7c"  # sent nowhere (a password wins): must not appear anywhere either
MODEL, EXPERIMENT = "iris-classifier", "iris-dynamic-dispatch"


def documented(language: str, containing: str) -> str:
    """The ``language`` block of the Accounts section of docs/operations.md that holds ``containing``."""
    section = DOC.read_text().split("### Accounts", 1)[1]
    (block,) = [b for b in re.findall(rf"```{language}\n(.*?)```", section, re.S) if containing in b]
    return block


@pytest.fixture(scope="module")
def auth_server(tmp_path_factory):
    with postgres.fresh_database(migrated=True) as store, postgres.fresh_database() as auth_db:
        if store is None or auth_db is None:
            pytest.skip(postgres.unavailable() or f"PostgreSQL at {postgres.ADDRESS} refused a connection")
        tmp = tmp_path_factory.mktemp("auth-server")
        ini = tmp / "basic_auth.ini"
        ini.write_text(re.sub(r"(?m)^database_uri = .*$", f"database_uri = {auth_db}", documented("ini", "[mlflow]")))
        port, log = free_port(), open(tmp / "server.log", "w")
        env = venv_env(
            MLFLOW_AUTH_CONFIG_PATH=str(ini),
            MLFLOW_AUTH_ADMIN_PASSWORD=ADMIN_PASSWORD,
            MLFLOW_FLASK_SERVER_SECRET_KEY="tests-only-key",
            MLFLOW_SERVER_ENABLE_JOB_EXECUTION="false",
        )
        command = ["mlflow", "server", "--app-name", "basic-auth", "--backend-store-uri", store]
        command += ["--artifacts-destination", str(tmp / "artifacts"), "--host", "127.0.0.1", "--port", str(port)]
        process = subprocess.Popen(
            [sys.executable, "-m", *command, "--workers", "1"], env=env, cwd=tmp, stdout=log, stderr=subprocess.STDOUT
        )
        uri = f"http://127.0.0.1:{port}"
        try:
            wait_for_http(process, f"{uri}/health", tmp / "server.log", timeout=300)
            yield uri
        finally:
            stop(process)
            log.close()


def as_account(project_env, uri, user, password=None) -> dict[str, str]:
    # The experiment of the config, the one the admin made and granted (not the tests' own).
    ours = ("MLFLOW_TRACKING_", "MLFLOW_EXPERIMENT_NAME")
    env = {key: value for key, value in project_env.items() if not key.startswith(ours)}
    return env | {
        "MLFLOW_TRACKING_URI": uri,
        "MLFLOW_TRACKING_USERNAME": user,
        "MLFLOW_TRACKING_PASSWORD": password or PASSWORDS.get(user, ADMIN_PASSWORD),
        "MLFLOW_TRACKING_TOKEN": TOKEN,
        "MLFLOW_HTTP_REQUEST_MAX_RETRIES": "0",
        "PYTHONPATH": str(contracts.PROJECT_DIR),
    }


def run(env, cwd, *args, timeout=900) -> subprocess.CompletedProcess:
    return subprocess.run([sys.executable, *args], env=env, cwd=cwd, capture_output=True, text=True, timeout=timeout)


def one_line(result: subprocess.CompletedProcess, command: str) -> str:
    """The refusal: exit 77, no traceback, one line from the command (log records aside)."""
    assert result.returncode == 77, f"{command}: exit {result.returncode}\n{result.stderr[-3000:]}"
    assert "Traceback" not in result.stderr, result.stderr[-3000:]
    lines = [line for line in result.stderr.splitlines() if line.startswith(f"{command}: ")]
    assert len(lines) == 1, result.stderr[-3000:]
    return lines[0]


def test_scheduler_promotes_reader_reads_and_is_refused_in_one_line(auth_server, project_env, tmp_path, monkeypatch):
    import mlflow

    uri, outputs = auth_server, []
    setup = tmp_path / "accounts.py"
    setup.write_text(documented("python", "get_app_client"))
    admin = as_account(project_env, uri, "admin") | {f"{u.upper()}_PASSWORD": p for u, p in PASSWORDS.items()}
    done = run(admin, tmp_path, str(setup), timeout=300)
    assert done.returncode == 0, done.stderr[-3000:]

    scheduler = as_account(project_env, uri, "scheduler") | {"PIPELINE_LOCK_DIR": str(tmp_path / "locks")}
    trained = run(scheduler, tmp_path, "-m", "ops.retrain", "--wait", "60")
    outputs.append(trained)
    assert trained.returncode == 0, trained.stderr[-3000:]
    assert "promoted version 1 to champion" in trained.stdout
    # A second champion as a second promotion would leave it: version 2, version 1 previous;
    # made by the scheduler's account from this process (MLflow reads the account's variables
    # at each request), which then reads as the admin, for the checks.
    monkeypatch.setenv("MLFLOW_TRACKING_URI", uri)
    mlflow.set_tracking_uri(uri)
    for key in ("MLFLOW_TRACKING_USERNAME", "MLFLOW_TRACKING_PASSWORD", "MLFLOW_TRACKING_TOKEN"):
        monkeypatch.setenv(key, scheduler[key])
    second_champion(MlflowClient(tracking_uri=uri))
    monkeypatch.setenv("MLFLOW_TRACKING_USERNAME", "admin")
    monkeypatch.setenv("MLFLOW_TRACKING_PASSWORD", ADMIN_PASSWORD)
    monkeypatch.delenv("MLFLOW_TRACKING_TOKEN")
    admin_client = MlflowClient(tracking_uri=uri)
    reader = as_account(project_env, uri, "reader") | {"PIPELINE_LOCK_DIR": str(tmp_path / "locks")}
    read = run(reader, tmp_path, "-c", READS, timeout=300)
    outputs.append(read)
    assert read.returncode == 0 and read.stdout.split()[-2:] == ["[0]", "runs:5"], read.stderr[-3000:]

    before = admin_client.get_registered_model(MODEL).aliases
    runs_before = admin_client.search_runs([experiment_id(admin_client)], max_results=1000)
    refusals = {
        "rollback": ["-m", "ops.rollback"],
        "promote": ["-m", "ops.promote", "1", "--reason", "a reader tries"],
        "pipeline": ["-m", "ops.retrain", "--wait", "60", "model.C=0.7"],
    }
    for command, args in refusals.items():
        result = run(reader, tmp_path, *args)
        outputs.append(result)
        line = one_line(result, command)
        wanted = "registered model 'iris-classifier'" if command != "pipeline" else f"experiment '{EXPERIMENT}'"
        assert line.startswith(f"{command}: permission denied: account 'reader' lacks EDIT on {wanted}"), line
    wrong = run(as_account(project_env, uri, "reader", "not-the-Passw0rd"), tmp_path, "-m", "ops.rollback")
    outputs.append(wrong)
    assert "not authenticated: the tracking server did not accept the credentials of account 'reader'" in (
        one_line(wrong, "rollback")
    )
    assert admin_client.get_registered_model(MODEL).aliases == before
    runs = admin_client.search_runs([experiment_id(admin_client)], max_results=1000)
    assert len(runs) == len(runs_before) and all(r.info.status != "RUNNING" for r in runs)
    assert_no_secret(admin_client, runs, outputs, tmp_path)


def second_champion(client: MlflowClient) -> None:
    import mlflow

    first = client.get_model_version(MODEL, "1")
    second = mlflow.register_model(first.source, MODEL, tags={"validation_status": "passed"})
    client.set_registered_model_alias(MODEL, "previous_champion", "1")
    client.set_registered_model_alias(MODEL, "champion", second.version)


READS = f"""
import mlflow, pandas as pd
from mlflow import MlflowClient
model = mlflow.pyfunc.load_model("models:/{MODEL}@champion")
rows = pd.DataFrame({{"petal length (cm)": [1.4], "petal width (cm)": [0.2]}})
print(model.predict(rows, params={{"predict_method": "predict"}}).tolist())
experiment = MlflowClient().get_experiment_by_name("{EXPERIMENT}")
print(f"runs:{{len(MlflowClient().search_runs([experiment.experiment_id]))}}")
"""


def experiment_id(client) -> str:
    return client.get_experiment_by_name(EXPERIMENT).experiment_id


def assert_no_secret(client, runs, outputs, workdir: Path) -> None:
    """No password or token in any run's params, tags, description or artifact, in the
    versions' tags and files, in the commands' output, or in any file they left behind."""
    import mlflow

    secrets = [*PASSWORDS.values(), ADMIN_PASSWORD, TOKEN]
    texts = [o.stdout + o.stderr for o in outputs]
    for found in runs:
        texts += [str(found.data.params), str(found.data.tags)]
        local = mlflow.artifacts.download_artifacts(run_id=found.info.run_id, dst_path=str(workdir / "grep" / "runs"))
        assert Path(local).is_dir()
    model = client.get_registered_model(MODEL)
    texts += [str(model.tags), str(model.aliases), model.description or ""]
    for version in client.search_model_versions(f"name='{MODEL}'"):
        texts += [str(version.tags), version.description or ""]
        into = str(workdir / "grep" / version.version)
        mlflow.artifacts.download_artifacts(f"models:/{MODEL}/{version.version}", dst_path=into)
    files = [p for p in workdir.rglob("*") if p.is_file()]
    assert any(p.name == "config.yaml" for p in files) and any(p.name == "MLmodel" for p in files)
    texts += [p.read_bytes().decode("utf-8", "replace") for p in files]
    for secret in secrets:
        assert not [t for t in texts if secret in t], f"a secret was recorded or printed: {secret[:6]}..."
