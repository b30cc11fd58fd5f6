"""A step forked from the step server (pipeline/processes/launch.py, pipeline/processes/step_server.py) is
the step as ``mlflow run`` started it: its arguments, environment, directory, streams
and exit status, its life tied to the pipeline's; anything the server cannot serve runs
in the launching process instead."""

from __future__ import annotations

import json
import os
import signal
import socket
import subprocess
import sys
from pathlib import Path

import pytest

from core import contracts
from pipeline.processes.step_server import PRELOAD_ENV, SERVER_ENV, StepServer
from tests.support.helpers import wait_until

PROBE = "tests.support.launch_probe"
# The step server forks steps on Linux only; its tests read /proc.
pytestmark = pytest.mark.skipif(not sys.platform.startswith("linux"), reason="the step server runs on Linux only")


def started_server() -> StepServer:
    with pytest.MonkeyPatch.context() as patch:
        patch.delenv(PRELOAD_ENV, raising=False)
        started = StepServer([PROBE, "steps.serialize"], str(contracts.PROJECT_DIR))
        started.start()
    assert started.process is not None
    return started


@pytest.fixture(scope="module")
def server():
    """One step server for the module's tests: its start (importing mlflow, scikit-learn,
    pandas and matplotlib) is most of their cost. A test that kills a server starts its own."""
    started = started_server()
    yield started
    started.close()


def launch(
    server_env: dict[str, str], *args: str, cwd: Path = contracts.PROJECT_DIR, module: str = PROBE, **popen
) -> subprocess.Popen:
    env = {**os.environ, "PYTHONPATH": str(contracts.PROJECT_DIR), "PROBE": "from the caller", **server_env}
    return subprocess.Popen(
        [sys.executable, "-m", "pipeline.processes.launch", module, *args],
        cwd=cwd,
        env=env,
        stdout=subprocess.PIPE,
        stderr=subprocess.PIPE,
        text=True,
        **popen,
    )


def probe_report(process: subprocess.Popen) -> dict:
    return json.loads(process.stdout.readline())


def test_a_forked_step_gets_the_callers_arguments_environment_streams_and_exit_status(server):
    process = launch(server.environ() | {"PIPELINE_DRIVER": "123@4.500"}, "exit", "3")
    report = probe_report(process)
    _, err = process.communicate(timeout=60)
    assert process.returncode == 3
    assert report["ppid"] == server.process.pid != process.pid  # forked by the server
    assert report["driver"] == "123@4.500"  # the caller's driver, which the step checks, not the server
    assert report == {
        **report,
        "argv": ["exit", "3"],
        "probe": "from the caller",
        "name": "__main__",
        "cwd": str(contracts.PROJECT_DIR),
    }
    assert "on stderr" in err and "running it here" not in err
    assert report["collecting"]  # a step's garbage collector runs as in any process


def test_the_step_modules_preload_and_fork(server):
    """No step module fails to import in the server or leaves a thread that forbids the fork."""
    process = launch(server.environ(), "--help", module="steps.serialize")
    out, err = process.communicate(timeout=60)
    assert process.returncode == 0, err
    assert "--model-uri" in out
    assert "running it here" not in err and "could not preload" not in err


def test_a_step_killed_by_a_signal_ends_its_launcher_the_same_way(server):
    process = launch(server.environ(), "die", "-")
    process.communicate(timeout=60)
    assert process.returncode == -signal.SIGKILL


def wait_for_file(path: Path) -> str:
    return wait_until(lambda _: path.exists() and path.read_text() or None, 60, f"{path.name} to be written")


def test_sigterm_to_the_launcher_reaches_the_step(server, tmp_path):
    process = launch(server.environ(), "wait", str(tmp_path / "stopped"))
    assert probe_report(process)["ppid"] == server.process.pid
    assert process.stdout.readline().strip() == "waiting"
    process.terminate()
    process.communicate(timeout=60)
    assert process.returncode == 7
    assert wait_for_file(tmp_path / "stopped") == "SIGTERM"


def sigterm_pending(pid: int) -> bool:
    """Whether ``pid`` holds a SIGTERM it has blocked (``/proc/PID/status``)."""
    status = Path(f"/proc/{pid}/status").read_text()
    pending = dict(line.split(":\t", 1) for line in status.splitlines() if ":\t" in line)
    held = int(pending["ShdPnd"], 16) | int(pending["SigPnd"], 16)
    return held & (1 << (signal.SIGTERM - 1)) != 0


def test_sigterm_before_the_step_is_known_is_not_lost(tmp_path):
    """A SIGTERM that reaches the launcher between its request and the server's answer
    (the step may be running already) is passed on once the step's id is known."""
    address = tmp_path / "s.sock"
    listener = socket.socket(socket.AF_UNIX, socket.SOCK_STREAM)
    listener.bind(str(address))
    listener.listen(1)
    listener.settimeout(60)
    process = launch({SERVER_ENV: str(address)}, "exit", "0")
    step = subprocess.Popen(["sleep", "60"])  # stands for the forked step
    try:
        conn, _ = listener.accept()
        _, fds, _, _ = socket.recv_fds(conn, 8, 3)
        for fd in fds:
            os.close(fd)
        process.send_signal(signal.SIGTERM)  # before the answer: the launcher has no step to pass it to
        wait_until(
            lambda _: process.poll() is not None or sigterm_pending(process.pid) or None,
            60,
            "the launcher to hold the SIGTERM or die of it",
        )
        assert process.poll() is None, "the launcher died of a SIGTERM meant for its step"
        conn.sendall(f"started {step.pid}\n".encode())
        assert step.wait(timeout=60) == -signal.SIGTERM
        conn.sendall(b"exit 7\n")
        process.communicate(timeout=60)
        assert process.returncode == 7
    finally:
        for started in (process, step):
            started.kill()
            started.wait()
        listener.close()


@pytest.mark.parametrize("killed", ["the launcher", "the server"])
def test_a_step_gets_sigterm_when_its_launcher_or_the_server_is_killed(server, tmp_path, killed):
    own = started_server() if killed == "the server" else None
    try:
        process = launch((own or server).environ(), "wait", str(tmp_path / "stopped"))
        step = probe_report(process)["pid"]
        assert process.stdout.readline().strip() == "waiting"
        (process if own is None else own.process).kill()
        assert wait_for_file(tmp_path / "stopped") == "SIGTERM"
        wait_until(lambda _: not Path(f"/proc/{step}").exists() or None, 60, "the step to end")
        process.communicate(timeout=60)
    finally:
        if own is not None:
            own.close()


@pytest.mark.parametrize("case", ["module not preloaded", "another directory", "no server"])
def test_what_the_server_cannot_serve_runs_in_the_launcher(server, tmp_path, case):
    env, cwd = server.environ(), contracts.PROJECT_DIR
    other = StepServer(["steps.serialize"], str(contracts.PROJECT_DIR))  # without the probe
    if case == "module not preloaded":
        other.start()
        env = other.environ()
    elif case == "another directory":
        cwd = tmp_path
    else:
        env = {SERVER_ENV: str(tmp_path / "no.sock")}
    try:
        process = launch(env, "exit", "4", cwd=cwd)
        report = probe_report(process)
        _, err = process.communicate(timeout=60)
    finally:
        other.close()
    assert process.returncode == 4
    assert report["pid"] == process.pid and report["name"] == "__main__"
    reason = {
        "module not preloaded": f"module {PROBE} not preloaded",
        "another directory": f"another directory, {tmp_path}",
        "no server": "no step server at",
    }[case]
    assert reason in err and "here" in err


def test_preload_off_starts_no_server(monkeypatch):
    monkeypatch.setenv(PRELOAD_ENV, "0")
    off = StepServer([PROBE], str(contracts.PROJECT_DIR))
    off.start()
    assert off.process is None and off.environ() == {}
    off.close()


def test_a_server_whose_driver_is_gone_exits():
    """Started by a process that is not the driver it names: it exits at once."""
    result = subprocess.run(
        [sys.executable, "-m", "pipeline.processes.step_server", "0", "1", PROBE],
        cwd=contracts.PROJECT_DIR,
        capture_output=True,
        timeout=60,
        check=False,
        env={**os.environ, "PYTHONPATH": str(contracts.PROJECT_DIR)},
    )
    assert result.returncode == 1
