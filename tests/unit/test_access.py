"""A tracking server's refusal (403, 401) is one line naming the account, the permission, the
object and the request, never a password; secrets in the environment are masked in what is
recorded and logged; ``/status`` gives other errors than the project's own by kind only."""

from __future__ import annotations

import http.server
import logging
import threading

import pytest
from mlflow import MlflowClient
from mlflow.exceptions import MlflowException
from mlflow.protos.databricks_pb2 import PERMISSION_DENIED, UNAUTHENTICATED

from core.access import EXIT_DENIED, explain, explained, model_name, refused_step
from core.errors import stored
from core.secrets import MASK, RedactingFilter, redact, secret_values

PASSWORD = "s3cret-password-42"


def refused(endpoint: str, status: int = 403) -> MlflowException:
    """MLflow's exception for a request the server refused (``verify_rest_response``'s)."""
    code = PERMISSION_DENIED if status == 403 else UNAUTHENTICATED
    return MlflowException(
        f"API request to endpoint {endpoint} failed with error code {status} != 200. "
        "Response body: 'Permission denied'",
        error_code=code,
    )


@pytest.fixture
def account(monkeypatch):
    monkeypatch.setenv("MLFLOW_TRACKING_USERNAME", "reader")
    monkeypatch.setenv("MLFLOW_TRACKING_PASSWORD", PASSWORD)


@pytest.fixture
def refusing_server():
    """A tracking server that refuses every request with 403 ``Permission denied``, except a
    read of the registered model (which MLflow's client makes before it sets an alias)."""

    class Handler(http.server.BaseHTTPRequestHandler):
        def refuse(self):
            readable = self.path.startswith("/api/2.0/mlflow/registered-models/get?")
            body = b'{"registered_model": {"name": "iris-classifier"}}' if readable else b"Permission denied"
            self.send_response(200 if readable else 403)
            self.send_header("Content-Length", str(len(body)))
            self.end_headers()
            self.wfile.write(body)

        do_GET = do_POST = do_PATCH = do_DELETE = refuse

        def log_message(self, *args):
            pass

    server = http.server.ThreadingHTTPServer(("127.0.0.1", 0), Handler)
    threading.Thread(target=server.serve_forever, daemon=True).start()
    yield f"http://127.0.0.1:{server.server_address[1]}"
    server.shutdown()


def test_a_refused_registry_write_names_account_permission_model_and_request(account):
    line = explain(refused("/api/2.0/mlflow/model-versions/set-tag"), "iris-dynamic-dispatch", "iris-classifier")
    assert line == (
        "permission denied: account 'reader' lacks EDIT on registered model 'iris-classifier'; the tracking "
        "server refused a request (/api/2.0/mlflow/model-versions/set-tag, HTTP 403)"
    )
    assert PASSWORD not in line
    run = explain(refused("/api/2.0/mlflow/runs/create"), "iris-dynamic-dispatch", "iris-classifier")
    assert "lacks EDIT on experiment 'iris-dynamic-dispatch'" in run


@pytest.mark.parametrize(
    "call, permission",
    [
        (lambda c: c.get_model_version_by_alias("iris-classifier", "champion"), "READ"),
        (lambda c: c.set_registered_model_alias("iris-classifier", "champion", "2"), "EDIT"),
        (lambda c: c.delete_registered_model_alias("iris-classifier", "challenger"), "MANAGE"),
        (lambda c: c.delete_model_version_tag("iris-classifier", "1", "x"), "MANAGE"),
        (lambda c: c.delete_registered_model_tag("iris-classifier", "x"), "EDIT"),
    ],
)
def test_the_permission_is_the_one_mlflow_asks_for_the_call_refused(
    refusing_server, account, monkeypatch, call, permission
):
    monkeypatch.setenv("MLFLOW_HTTP_REQUEST_MAX_RETRIES", "0")
    with pytest.raises(MlflowException) as err:
        call(MlflowClient(tracking_uri=refusing_server, registry_uri=refusing_server))
    line = explain(err.value, model="iris-classifier")
    assert f"lacks {permission} on registered model 'iris-classifier'" in line
    assert "/api/2.0/mlflow/registered-models/" in line or "/api/2.0/mlflow/model-versions/" in line


def test_credentials_not_taken_say_which_variables_to_check(monkeypatch):
    monkeypatch.delenv("MLFLOW_TRACKING_USERNAME", raising=False)
    monkeypatch.delenv("MLFLOW_TRACKING_TOKEN", raising=False)
    line = explain(refused("/api/2.0/mlflow/runs/create", 401))
    assert line.startswith("not authenticated: ") and "no account (MLFLOW_TRACKING_USERNAME is not set)" in line
    assert "set MLFLOW_TRACKING_USERNAME and MLFLOW_TRACKING_PASSWORD" in line


def test_anything_else_is_not_a_refusal():
    assert explain(MlflowException("RESOURCE_DOES_NOT_EXIST: no such model")) is None
    assert explain(ValueError("boom")) is None


def test_a_command_ends_with_one_line_and_exit_77_and_the_change_says_what_it_left(account, capsys):
    err = refused("/api/2.0/mlflow/registered-models/alias")
    err.add_note("the change was undone: the registry is as before it")
    with pytest.raises(SystemExit) as exit_:
        with explained("rollback", model="iris-classifier", after="nothing changed"):
            raise RuntimeError("while rolling back") from err
    assert exit_.value.code == EXIT_DENIED
    (line,) = capsys.readouterr().err.splitlines()
    assert line.startswith("rollback: permission denied: account 'reader' lacks EDIT on registered model")
    assert line.endswith("; the change was undone: the registry is as before it")
    with pytest.raises(ValueError), explained("rollback"):  # anything else goes on as it is
        raise ValueError("not a refusal")


def test_a_step_refused_is_the_pipelines_one_line():
    class Step:
        def __init__(self, step, status, error=""):
            self.step, self.status, self.error = step, status, error

    line = "permission denied: account 'x' lacks EDIT on registered model 'm'; ..."
    assert refused_step([Step("train", "FINISHED"), Step("package_pyfunc", "FAILED", line)]) == (
        f"step package_pyfunc: {line}"
    )
    assert refused_step([Step("train", "FAILED", "ValueError: boom")]) is None


def test_model_name_of_a_models_uri():
    assert model_name("models:/iris-classifier@champion") == "iris-classifier"
    assert model_name("models:/iris-classifier/3") == "iris-classifier"
    assert model_name("runs:/abc/model") is None


def test_secret_variables_are_masked_wherever_text_is_recorded_or_logged(monkeypatch, caplog):
    monkeypatch.setenv("MLFLOW_TRACKING_PASSWORD", PASSWORD)
    monkeypatch.setenv("MLFLOW_TRACKING_TOKEN", "tok-123456789")
    monkeypatch.setenv("TOKENIZERS_PARALLELISM", "false")  # not a secret: its name does not end so
    monkeypatch.setenv("SHORT_SECRET", "1")  # too short to mask
    assert PASSWORD in secret_values() and "false" not in secret_values() and "1" not in secret_values()
    assert redact(f"data.path=/x?p={PASSWORD} and tok-123456789") == f"data.path=/x?p={MASK} and {MASK}"
    assert PASSWORD not in stored(f"cannot open postgresql://u:{PASSWORD}@db/x")
    record = logging.LogRecord("x", logging.INFO, __file__, 1, "connecting with %s", (PASSWORD,), None)
    assert RedactingFilter().filter(record) and record.getMessage() == f"connecting with {MASK}"


def test_a_config_that_reads_a_secret_variable_is_logged_masked(monkeypatch, tmp_path):
    import mlflow
    from omegaconf import OmegaConf

    from pipeline.processes.step import log_config

    monkeypatch.setenv("MLFLOW_TRACKING_PASSWORD", PASSWORD)
    cfg = OmegaConf.create({"data": {"url": "${oc.env:MLFLOW_TRACKING_PASSWORD}"}})
    with mlflow.start_run() as run:
        log_config(cfg, [f"+x={PASSWORD}"], step="main")
    text = mlflow.artifacts.load_text(f"runs:/{run.info.run_id}/config.yaml")
    tags = mlflow.get_run(run.info.run_id).data.tags
    assert MASK in text and PASSWORD not in text and PASSWORD not in str(tags)
