"""The tests' own waits hold on a slow machine and fail with what they saw."""

from __future__ import annotations

import subprocess

import pytest

from tests.support.helpers import wait_for_http, wait_until


@pytest.fixture
def running_process():
    process = subprocess.Popen(["sleep", "120"])
    yield process
    process.kill()
    process.wait()


def test_a_server_slow_to_answer_is_waited_for(health_server, running_process, tmp_path):
    # Accepts at once but answers after 1.5 s, twice: a read timeout, not a refused connection.
    base, state = health_server
    url = f"{base}/health"
    state["delays"] = [1.5, 1.5]
    wait_for_http(running_process, url, tmp_path / "server.log", timeout=60)
    assert state["requests"] >= 2  # the first attempt timed out reading, and was retried


def test_a_server_that_never_becomes_healthy_fails_with_its_log(health_server, running_process, tmp_path):
    base, state = health_server
    url = f"{base}/health"
    state["status"] = 503
    (tmp_path / "server.log").write_text("worker 1 booting\n")
    with pytest.raises(pytest.fail.Exception) as err:
        wait_for_http(running_process, url, tmp_path / "server.log", timeout=2)
    assert "not within 2 s (last: not ready)" in str(err.value)
    assert "worker 1 booting" in str(err.value)
    assert running_process.poll() is not None  # stopped, not left running


def test_a_server_that_exits_fails_at_once_with_its_log(tmp_path):
    log = tmp_path / "server.log"
    with open(log, "w") as handle:
        process = subprocess.Popen(["sh", "-c", "echo address already in use; exit 3"], stdout=handle)
    process.wait()
    # Waiting out the deadline would fail with "not within 60 s" instead of the process's exit.
    with pytest.raises(pytest.fail.Exception, match="exited with status 3; its log:\naddress already in use"):
        wait_for_http(process, "http://127.0.0.1:9/health", log, timeout=60)


def test_transient_errors_are_retried_until_the_deadline():
    calls = []

    def attempt(timeout):
        calls.append(timeout)
        if len(calls) < 3:
            raise ConnectionError("database is locked")
        return "ready"

    assert wait_until(attempt, 60, "store", transient=(ConnectionError,)) == "ready"
    assert calls[:3] == [1.0, 2.0, 4.0]  # each attempt may take longer than the last


def test_other_errors_are_not_swallowed():
    def attempt(timeout):
        raise KeyError("a bug")

    with pytest.raises(KeyError):
        wait_until(attempt, 60, "store", transient=(ConnectionError,))
