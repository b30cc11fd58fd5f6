"""How a step's process starts: here, or forked from the pipeline's step server.

Each step's MLproject command is ``python -m pipeline.processes.launch steps.<name> [args]``.
Started on its own (``mlflow run . -e train``, a step by hand), that runs the step
module here, as ``python -m steps.<name> [args]`` would. Started by the driver, it
is offered a step server (environment variable :data:`SERVER_ENV`,
``pipeline.processes.step_server``): a process that has imported the step modules once and
forks a copy of itself for each step. The copy takes this process's arguments,
environment, working directory and standard streams and runs the step module as
``__main__``; this process waits and exits with the copy's status, so that for
``mlflow run`` the step is this process. It passes on SIGTERM and SIGHUP to the
step (one that arrives before the step's id is known is held until then); killed
outright, its connection closes and the server stops the step. A terminal's
SIGINT reaches the step directly.

When the server is gone or refuses (``pipeline.processes.step_server`` says when), nothing
has run, and the step runs here. Imports only the standard library: this
process's start is all a forked step adds to the step's own work.
"""

from __future__ import annotations

import json
import os
import signal
import socket
import sys

from pipeline.processes.step_server import HEADER, SERVER_ENV, say

# Held from the request until the step's id is known; then SIGTERM and SIGHUP are passed on.
HELD = (signal.SIGTERM, signal.SIGHUP, signal.SIGINT)


def main(argv: list[str] | None = None) -> None:
    argv = sys.argv[1:] if argv is None else argv
    if not argv or argv[0].startswith("-"):
        sys.exit("usage: python -m pipeline.processes.launch MODULE [ARGS ...]")
    module, args = argv[0], argv[1:]
    address = os.environ.get(SERVER_ENV)
    if address:
        # Held until the step's id is known, so that none arriving before is lost: the
        # step may already be running when the server's answer is read.
        signal.pthread_sigmask(signal.SIG_BLOCK, HELD)
        try:
            status = run_on_server(address, module, args)
        finally:
            signal.pthread_sigmask(signal.SIG_UNBLOCK, HELD)  # delivered now, if any
        if status is not None:
            exit_with(status)
    import runpy

    sys.argv = [module, *args]
    runpy.run_module(module, run_name="__main__", alter_sys=True)


def run_on_server(address: str, module: str, args: list[str]) -> str | None:
    """Run ``module`` in a process forked by the server: its status (``exit N`` or
    ``signal N``), or None when the server is gone or refuses (nothing has run)."""
    conn = socket.socket(socket.AF_UNIX, socket.SOCK_STREAM)
    try:
        conn.connect(address)
        request = json.dumps(
            {
                "module": module,
                "argv": args,
                "env": dict(os.environ),
                "cwd": os.getcwd(),
                "python": os.path.realpath(sys.executable),
            }
        ).encode()
        socket.send_fds(conn, [HEADER.pack(len(request))], [0, 1, 2])
        conn.sendall(request)
        answers = conn.makefile("r", encoding="utf-8")
        first = answers.readline().split(maxsplit=1)
    except OSError as err:
        say(f"no step server at {address} ({err}); running {module} here")
        return None
    if first[:1] != ["started"]:
        say(f"the step server did not run {module} ({' '.join(first[1:]).strip() or 'no answer'}); running it here")
        return None
    child = int(first[1])

    def forward(signum, _frame):
        try:
            os.kill(child, signum)
        except ProcessLookupError:
            pass

    signal.signal(signal.SIGTERM, forward)
    signal.signal(signal.SIGHUP, forward)
    signal.signal(signal.SIGINT, signal.SIG_IGN)  # a terminal's reaches the step itself
    signal.pthread_sigmask(signal.SIG_UNBLOCK, HELD)
    try:
        return answers.readline().strip() or "exit 1"  # nothing: the server ended first
    except OSError:
        return "exit 1"


def exit_with(status: str) -> None:
    kind, _, number = status.partition(" ")
    if kind == "signal":
        if int(number) not in (signal.SIGKILL, signal.SIGSTOP):  # their action cannot be set
            signal.signal(int(number), signal.SIG_DFL)
        os.kill(os.getpid(), int(number))
        sys.exit(128 + int(number))
    sys.exit(int(number))


if __name__ == "__main__":
    main()
