"""Waiting for things that start in the background (servers, step runs), on a machine
that may be slow or busy: every wait has one overall deadline, attempts whose own
timeout grows, every transient error retried until that deadline, and on failure a
message that says what was last seen (and the server's log)."""

from __future__ import annotations

import socket
import subprocess
import time
from collections.abc import Callable
from pathlib import Path
from typing import TypeVar

import pytest
import requests

T = TypeVar("T")

FIRST_ATTEMPT_TIMEOUT = 1.0  # seconds; doubled after each failed attempt
MAX_ATTEMPT_TIMEOUT = 15.0
POLL_INTERVAL = 0.25


def free_port() -> int:
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        return sock.getsockname()[1]


def log_tail(log: Path, chars: int = 3000) -> str:
    try:
        return log.read_text(errors="replace")[-chars:]
    except OSError as err:
        return f"(no log: {err})"


def wait_until(
    attempt: Callable[[float], T | None],
    timeout: float,
    what: str,
    transient: tuple[type[BaseException], ...] = (),
    alive: Callable[[], str | None] = lambda: None,
    log: Path | None = None,
) -> T:
    """Call ``attempt(attempt_timeout)`` until it returns something other than None.

    ``attempt_timeout`` starts at one second and doubles (up to 15 s) after each
    attempt, never beyond the overall deadline. Errors of the ``transient`` types
    are retried; ``alive()`` returns why waiting is pointless (a process exited),
    or None. Fails the test naming ``what``, the last error seen and the end of ``log``.
    """
    deadline = time.monotonic() + timeout
    attempt_timeout = FIRST_ATTEMPT_TIMEOUT
    last = "nothing yet"
    while True:
        dead = alive()
        if dead:
            pytest.fail(f"{what}: {dead}")
        remaining = deadline - time.monotonic()
        if remaining <= 0:
            break
        try:
            result = attempt(min(attempt_timeout, remaining))
            if result is not None:
                return result
            last = "not ready"
        except transient as err:
            last = f"{type(err).__name__}: {err}"
        attempt_timeout = min(attempt_timeout * 2, MAX_ATTEMPT_TIMEOUT)
        time.sleep(min(POLL_INTERVAL, max(0.0, deadline - time.monotonic())))
    pytest.fail(f"{what}: not within {timeout:g} s (last: {last})" + (f"\n{log_tail(log)}" if log else ""))


def wait_for_http(process: subprocess.Popen, url: str, log: Path, timeout: float) -> None:
    """Wait until ``url`` answers 200; fail the test with the server's log if it exits or stalls.

    A server that accepts the connection but is slow to answer (its workers still
    importing on a busy machine) is waited for, not failed on its first read timeout.
    """

    def attempt(attempt_timeout: float):
        response = requests.get(url, timeout=attempt_timeout)
        return True if response.status_code == 200 else None

    def alive():
        if process.poll() is None:
            return None
        return f"the server exited with status {process.returncode}; its log:\n{log_tail(log)}"

    try:
        wait_until(attempt, timeout, f"{url}", transient=(requests.RequestException,), alive=alive)
    except pytest.fail.Exception as err:
        stop(process)
        if "its log" in str(err):
            raise
        pytest.fail(f"{err}; the server's log:\n{log_tail(log)}")


def stop(process: subprocess.Popen, grace: float = 30) -> None:
    """Terminate ``process``; kill it if it has not exited after ``grace`` seconds."""
    if process.poll() is not None:
        return
    process.terminate()
    try:
        process.wait(timeout=grace)
    except subprocess.TimeoutExpired:
        process.kill()
        process.wait()
