"""Operator commands without a pipeline run: argument handling, examples, the lock."""

from __future__ import annotations

import re
import shlex
from pathlib import Path

import pytest

from core import contracts, locks, tracking
from core.config import compose_config, split_overrides
from ops import retrain

DEPLOY = contracts.PROJECT_DIR / "deploy"


def retrain_args(command: str) -> list[str]:
    words = shlex.split(command)
    return words[words.index("ops.retrain") + 1 :]


def example_commands() -> list[str]:
    cron = [
        line
        for line in (DEPLOY / "cron" / "iris-retrain.cron").read_text().splitlines()
        if "ops.retrain" in line and not line.startswith("#")
    ]
    service = re.findall(r"^ExecStart=(.*)$", (DEPLOY / "systemd" / "iris-retrain.service").read_text(), re.M)
    return [*cron, *service]


def test_scheduler_examples_call_retrain_with_valid_arguments():
    commands = example_commands()
    assert len(commands) == 2
    for command in commands:
        args = retrain.build_parser().parse_args(retrain_args(command.split(">>")[0]))
        assert args.wait > 0
        compose_config(split_overrides(args.overrides))


def test_bad_override_exits_2_before_anything_runs(capsys):
    with pytest.raises(SystemExit) as exit_info:
        retrain.main(["model.nonexistent=1"])
    assert exit_info.value.code == 2
    assert "model.nonexistent" in capsys.readouterr().err


def test_file_lock_is_exclusive_and_released(tmp_path):
    path = tmp_path / "x.lock"
    with locks.file_lock(path, wait=0):
        assert "pid" in path.read_text()
        with pytest.raises(locks.LockBusy, match="another pipeline run holds"):
            with locks.file_lock(path, wait=0.3):
                pass
    with locks.file_lock(path, wait=0):  # released on exit
        pass


def test_lock_is_per_tracking_store():
    assert locks.lock_path("sqlite:////a/mlflow.db") == Path("/a/mlflow.db.pipeline.lock")
    assert locks.lock_path("http://x") == locks.lock_path("http://x") != locks.lock_path("http://y")
    assert locks.lock_path("http://x").parent == locks.lock_dir()


def test_check_server_accepts_a_healthy_server_and_names_a_sick_one(health_server):
    uri, state = health_server
    tracking.check_server(uri, timeout=5)
    state["status"] = 503
    with pytest.raises(ConnectionError, match=rf"tracking server {uri} is unreachable"):
        tracking.check_server(uri, timeout=5)


@pytest.fixture
def silent_server():
    """A port that accepts connections (the kernel's backlog) and never answers."""
    import socket

    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        sock.listen(8)
        yield f"http://127.0.0.1:{sock.getsockname()[1]}"


def test_check_server_times_out_on_a_silent_host(silent_server):
    with pytest.raises(ConnectionError, match="unreachable .*timed out.* with a 1 s timeout"):
        tracking.check_server(silent_server, timeout=1)


@pytest.mark.parametrize(
    "make_uri",
    [
        lambda tmp: "sqlite:////proc/nope/mlflow.db",  # a directory that cannot be made
        lambda tmp: f"sqlite:///{(tmp / 'not-a-db').with_suffix('.db')}",  # a file that is no database
    ],
)
def test_a_store_that_cannot_be_opened_is_one_line_and_exit_69(make_uri, tmp_path, monkeypatch, capsys):
    import mlflow

    from pipeline import main as pipeline

    (tmp_path / "not-a-db.db").write_bytes(b"these are not the tables you are looking for" * 100)
    uri = make_uri(tmp_path)
    with pytest.raises(tracking.StoreUnavailable, match=rf"tracking store {re.escape(uri)} cannot be opened: "):
        tracking.check_store(uri)
    monkeypatch.setenv("MLFLOW_TRACKING_URI", uri)
    for command in (retrain.main, pipeline.main):
        with pytest.raises(SystemExit) as exit_info:
            command([])
        assert exit_info.value.code == tracking.EXIT_UNAVAILABLE
        err = capsys.readouterr().err
        assert "cannot be opened" in err and "Traceback" not in err and len(err.strip().splitlines()) == 1
    assert not Path("/proc/nope").exists()
    mlflow.set_tracking_uri(None)


@pytest.mark.parametrize(
    "setting, seconds", [(None, 10.0), ("3", 3.0), ("0.5", 0.5), ("soon", 10.0), ("30", 10.0), ("300", 10.0)]
)
def test_the_store_check_waits_10_s_or_less_if_mlflows_own_requests_do(setting, seconds, monkeypatch):
    if setting is None:
        monkeypatch.delenv("MLFLOW_HTTP_REQUEST_TIMEOUT", raising=False)
    else:
        monkeypatch.setenv("MLFLOW_HTTP_REQUEST_TIMEOUT", setting)
    assert tracking.connect_timeout() == seconds


def test_make_run_against_a_server_that_is_down_fails_fast_in_one_line(silent_server, project_env):
    """`mlflow run` alone would retry for minutes; `make run` checks the store first."""
    import subprocess

    # The deadline (timeout) is for a loaded machine; `mlflow run` alone retries for minutes.
    result = subprocess.run(
        ["make", "--no-print-directory", "-C", str(contracts.PROJECT_DIR), "run"],
        capture_output=True,
        text=True,
        timeout=120,
        # MLflow's request timeout is the check's too where it is shorter than 10 s.
        env={**project_env, "MLFLOW_TRACKING_URI": silent_server, "MLFLOW_HTTP_REQUEST_TIMEOUT": "2"},
    )
    assert result.returncode != 0
    assert f"tracking server {silent_server} is unreachable" in result.stderr
    assert "with a 2 s timeout" in result.stderr
    assert "Traceback" not in result.stderr and "mlflow run" not in result.stdout


def test_serve_drops_mlflows_echo_of_the_request_data():
    from serving.server import client_message

    echoed = "Failed to predict data '   petal length (cm)  petal width (cm)\n0  1.4  NaN'. \nError: Input row 0 has a missing value"
    assert client_message(echoed) == "Input row 0 has a missing value"
    assert (
        client_message("Invalid input. Ensure that input is a valid JSON")
        == "Invalid input. Ensure that input is a valid JSON"
    )
