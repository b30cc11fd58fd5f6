"""A Spark standalone cluster for one test: a master and one worker (1 core, 1 GB), both
started from the pyspark package's own ``bin/spark-class`` on loopback ports found free,
each in a process group of its own that also holds what it starts (the worker's
executors and their Python workers). The cluster is stopped, group by group, however
the test ends, and the stop fails the test if any process of a group outlives it.

Skips the test, with the reason, where Java is missing or the master or the worker exits
before the worker is registered; fails it when they run but do not get there in time.
"""

from __future__ import annotations

import contextlib
import os
import shutil
import signal
import subprocess
import sys
import time
from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path

import pytest
import requests

from core import contracts
from tests.support.factories import venv_env
from tests.support.helpers import free_port, log_tail

RUN_TIMEOUT = 300.0  # seconds for one driver command; about 15 on a quiet machine
START_TIMEOUT = 60.0  # seconds until the worker is registered; about 8 on a quiet machine
STOP_GRACE = 20.0  # seconds between SIGTERM and SIGKILL of a process group
HOST = "127.0.0.1"
# Every JVM here (master, worker, driver, executor, and the launcher JVM that spark-class
# starts first to build each one's command) lives for seconds and does little: the client
# compiler only and the serial collector start it with less CPU than the server defaults
# (C2 and G1's threads), on a machine the other tests keep busy.
JAVA_OPTIONS = "-XX:TieredStopAtLevel=1 -XX:+UseSerialGC"
# A driver's settings: those JVM options for it and its executors, and no web UI (nothing reads it).
DRIVER_CONF = {
    "spark.driver.extraJavaOptions": JAVA_OPTIONS,
    "spark.executor.extraJavaOptions": JAVA_OPTIONS,
    "spark.ui.enabled": "false",
}


@dataclass(frozen=True)
class Cluster:
    url: str  # spark://127.0.0.1:<port>, the master URL drivers are given
    web: str  # http://127.0.0.1:<port> of the master's web UI; /json is its state
    work_dir: Path  # the worker's --work-dir: <app id>/<executor id>/stderr per executor

    def state(self, timeout: float = 5.0) -> dict:
        """The master's state: ``aliveworkers``, ``activeapps``, ``completedapps``, ..."""
        return requests.get(f"{self.web}/json", timeout=timeout).json()


def spark_home() -> Path:
    import pyspark

    return Path(pyspark.__file__).parent


def java_missing() -> str | None:
    """Why no JVM can start here, or None."""
    java_home = os.environ.get("JAVA_HOME")
    if java_home and (Path(java_home) / "bin" / "java").exists():
        return None
    return None if shutil.which("java") else "no java on PATH and no JAVA_HOME: Spark needs Java 17"


def daemon_env() -> dict[str, str]:
    """The master's and worker's environment: Java and loopback, nothing of this project.
    No venv on PATH, no PYSPARK_PYTHON, no tracking store: what the executors need (the
    driver's Python, the model, the code) comes with each job."""
    venv_bin = str(Path(sys.executable).parent)
    env = {key: os.environ[key] for key in ("HOME", "JAVA_HOME", "LANG", "TMPDIR") if key in os.environ}
    env["PATH"] = os.pathsep.join(p for p in os.environ.get("PATH", "").split(os.pathsep) if p != venv_bin)
    java = {"SPARK_DAEMON_JAVA_OPTS": JAVA_OPTIONS, "SPARK_LAUNCHER_OPTS": JAVA_OPTIONS}
    return env | {"SPARK_HOME": str(spark_home()), "SPARK_LOCAL_IP": HOST} | java


def driver_env(conf: dict[str, str] | None = None, **extra: str) -> dict[str, str]:
    """A driver's environment: on loopback, its Python workers this venv's interpreter, its
    settings :data:`DRIVER_CONF` and ``conf`` (``PYSPARK_SUBMIT_ARGS``)."""
    submit = " ".join(f"--conf {key}={value!r}" for key, value in (DRIVER_CONF | (conf or {})).items())
    return venv_env(
        SPARK_HOME=str(spark_home()),
        SPARK_LOCAL_IP=HOST,
        PYSPARK_PYTHON=sys.executable,
        PYSPARK_SUBMIT_ARGS=f"{submit} pyspark-shell",
        SPARK_LAUNCHER_OPTS=JAVA_OPTIONS,
        **extra,
    )


def _start(args: list[str], log: Path) -> subprocess.Popen:
    with open(log, "w") as out:
        return subprocess.Popen(
            [str(spark_home() / "bin" / "spark-class"), *args],
            env=daemon_env(),
            stdout=out,
            stderr=subprocess.STDOUT,
            start_new_session=True,  # its own process group, with every process it starts
        )


def _group_alive(pgid: int) -> bool:
    try:
        os.killpg(pgid, 0)
    except ProcessLookupError:
        return False
    except PermissionError:  # a process of the group exists, but is not ours to signal
        return True
    return True


def stop_group(process: subprocess.Popen, grace: float = STOP_GRACE) -> None:
    """SIGTERM ``process``'s group, SIGKILL after ``grace`` s; AssertionError if any process survives."""
    for sig in (signal.SIGTERM, signal.SIGKILL):
        with contextlib.suppress(ProcessLookupError):
            os.killpg(process.pid, sig)
        deadline = time.monotonic() + grace
        while time.monotonic() < deadline:
            with contextlib.suppress(subprocess.TimeoutExpired):
                process.wait(timeout=0.2)
            if process.poll() is not None and not _group_alive(process.pid):
                return
    raise AssertionError(f"process group {process.pid} ({process.args[1]}) survived SIGKILL")


def _wait_registered(cluster: Cluster, processes: dict[str, tuple[subprocess.Popen, Path]]) -> None:
    deadline = time.monotonic() + START_TIMEOUT
    last = "nothing yet"
    while time.monotonic() < deadline:
        for name, (process, log) in processes.items():
            if process.poll() is not None:
                lines = log_tail(log).strip().splitlines() or ["(empty log)"]
                pytest.skip(f"the Spark {name} exited with status {process.returncode} before starting: {lines[-1]}")
        try:
            state = cluster.state(timeout=2.0)
            if state.get("aliveworkers", 0) >= 1:
                return
            last = f"aliveworkers={state.get('aliveworkers')}"
        except (requests.RequestException, ValueError) as err:
            last = f"{type(err).__name__}: {err}"
        time.sleep(0.25)
    logs = "\n".join(f"--- {name}:\n{log_tail(log, 1500)}" for name, (_, log) in processes.items())
    pytest.fail(f"no worker registered with {cluster.url} within {START_TIMEOUT:g} s (last: {last})\n{logs}")


@contextlib.contextmanager
def standalone_cluster(root: Path) -> Iterator[Cluster]:
    """A master and one registered worker, their logs and the worker's work dir under ``root``."""
    reason = java_missing()
    if reason:
        pytest.skip(reason)
    port, web_port, worker_web_port = free_port(), free_port(), free_port()
    cluster = Cluster(f"spark://{HOST}:{port}", f"http://{HOST}:{web_port}", root / "work")
    cluster.work_dir.mkdir(parents=True)
    started: dict[str, tuple[subprocess.Popen, Path]] = {}
    try:
        master = ["org.apache.spark.deploy.master.Master", "--host", HOST, "--port", str(port)]
        started["master"] = (_start([*master, "--webui-port", str(web_port)], root / "master.log"), root / "master.log")
        worker = ["org.apache.spark.deploy.worker.Worker", cluster.url, "--host", HOST, "--cores", "1"]
        worker += ["--memory", "1g", "--work-dir", str(cluster.work_dir), "--webui-port", str(worker_web_port)]
        started["worker"] = (_start(worker, root / "worker.log"), root / "worker.log")
        _wait_registered(cluster, started)
        yield cluster
    finally:
        for process, _ in reversed(started.values()):
            stop_group(process)


def run_driver(
    command: list[str], timeout: float = RUN_TIMEOUT, conf: dict[str, str] | None = None
) -> subprocess.CompletedProcess:
    """``python -m <command>`` from the project folder, as a driver on loopback (its Python
    workers this venv's interpreter; Spark settings ``conf`` besides :data:`DRIVER_CONF`),
    in a process group of its own: its JVM goes with it."""
    process = subprocess.Popen(
        [sys.executable, "-m", *command],
        cwd=contracts.PROJECT_DIR,
        env=driver_env(conf),
        stdout=subprocess.PIPE,
        stderr=subprocess.PIPE,
        text=True,
        start_new_session=True,
    )
    try:
        stdout, stderr = process.communicate(timeout=timeout)
    except subprocess.TimeoutExpired:
        stop_group(process)
        pytest.fail(f"python -m {' '.join(command)} did not end within {timeout:g} s")
    stop_group(process)  # the JVM it started, should it still be exiting
    return subprocess.CompletedProcess(process.args, process.returncode, stdout, stderr)
