"""A one-machine Ray cluster for the tests: a head started in a temporary folder, stopped
with every process it started.

``ray start --head --block`` runs in a session of its own. Stopping it: SIGTERM (Ray
drains the node and stops the processes it started), then SIGKILL, by pid, for
whatever of that session is still there; Ray's workers change process group, not
session. ``ray stop`` is not used: it stops every Ray process of the user on the
machine, this test's or not. Where Ray is not installed or the head does not start,
the test is skipped with the reason (the end of the head's log).
"""

from __future__ import annotations

import importlib.util
import os
import shutil
import signal
import subprocess
import sys
import tempfile
import time
from collections.abc import Iterator, Mapping
from contextlib import contextmanager
from dataclasses import dataclass
from pathlib import Path

import psutil
import pytest

from tests.support.helpers import free_port, log_tail

START_WAIT = 120  # seconds for the head to say it started (about 10 s on an idle machine)
STOP_WAIT = 60  # seconds for it to stop after SIGTERM (it drains for up to 30 s)
STARTED = "Ray runtime started."


@dataclass
class RayHead:
    address: str  # host:port, as RAY_ADDRESS takes it
    log: Path
    session: int  # the session id of the head's processes


def session_processes(session: int) -> list[psutil.Process]:
    """The live processes of ``session`` (zombies, already ended, left out)."""
    found = []
    for process in psutil.process_iter(["status"]):
        try:
            if os.getsid(process.pid) == session and process.info["status"] != psutil.STATUS_ZOMBIE:
                found.append(process)
        except (ProcessLookupError, PermissionError, psutil.Error):
            continue
    return found


def stop(head: subprocess.Popen, session: int) -> None:
    """Stop the head, then kill what is left of its session."""
    if head.poll() is None:
        head.send_signal(signal.SIGTERM)
        try:
            head.wait(timeout=STOP_WAIT)
        except subprocess.TimeoutExpired:
            pass
    left = session_processes(session)
    for process in left:
        try:
            process.kill()
        except psutil.NoSuchProcess:
            continue
    psutil.wait_procs(left, timeout=STOP_WAIT)
    if head.poll() is None:
        head.wait(timeout=STOP_WAIT)


@contextmanager
def ray_head(folder: Path, env: Mapping[str, str], cpus: int = 2) -> Iterator[RayHead]:
    """A Ray head with ``cpus`` CPUs, started in ``folder`` with the environment ``env``;
    stopped on exit, with every process it started."""
    ray = Path(sys.executable).parent / "ray"
    if importlib.util.find_spec("ray") is None or not ray.exists():
        pytest.skip("Ray is not installed here (the ray extra, in requirements-dev.lock)")
    log = folder / "ray-head.log"
    # Short: Ray's sockets live under it, and a socket's path has at most 107 characters.
    temp = tempfile.mkdtemp(prefix="ray-")
    port = free_port()
    command = [
        str(ray),
        "start",
        "--head",
        "--block",
        f"--port={port}",
        f"--num-cpus={cpus}",
        "--include-dashboard=false",
        "--disable-usage-stats",
        f"--temp-dir={temp}",
        # A port Ray would otherwise take at a fixed number, which another Ray on the machine may hold.
        f"--dashboard-agent-listen-port={free_port()}",
    ]
    with open(log, "w") as out:
        process = subprocess.Popen(
            command,
            cwd=folder,
            env=dict(env),
            stdin=subprocess.DEVNULL,
            stdout=out,
            stderr=subprocess.STDOUT,
            start_new_session=True,
        )
    head = RayHead(f"127.0.0.1:{port}", log, process.pid)
    try:
        deadline = time.monotonic() + START_WAIT
        while STARTED not in log_tail(log, 100_000):
            if process.poll() is not None or time.monotonic() > deadline:
                why = f"exited with status {process.returncode}" if process.poll() is not None else "did not start"
                pytest.skip(f"the Ray head {why} within {START_WAIT} s; its log ends:\n{log_tail(log, 2000)}")
            time.sleep(0.5)
        yield head
    finally:
        stop(process, head.session)
        remaining = session_processes(head.session)
        shutil.rmtree(temp, ignore_errors=True)
        if remaining and sys.exc_info()[0] is None:  # else the test's own failure is the one to see
            pytest.fail(f"Ray processes outlived the test: {[p.pid for p in remaining]}")
