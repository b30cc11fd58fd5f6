"""The step server: one process per pipeline that imports the step modules once and
forks a copy of itself for each step (``pipeline.processes.launch`` is the step's side).

On a small table a step's process spends most of its time importing mlflow, its store,
scikit-learn and pandas; the driver starts this server at the first step that runs
(:class:`StepServer`): those imports are made once, and each step starts in milliseconds. It runs on Linux only, where forking a
process that has imported these libraries is safe (macOS's system libraries are not
fork-safe); ``PIPELINE_PRELOAD=0`` turns it off there too: each step then starts its
own interpreter.

Lifetimes: a forked step checks the driver itself (``PIPELINE_DRIVER``, its pid and
start time, ``pipeline.processes.step``), not the server, before it changes the registry. The
server ends when the driver does: at once by ``PR_SET_PDEATHSIG``, or within a
second when it finds it has another parent; a forked step dies with the server
(``PR_SET_PDEATHSIG`` again); a step whose ``pipeline.processes.launch`` process is killed gets
SIGTERM from the server.

The server refuses a request, and the step runs in its own process, from another
interpreter (``--env-manager uv``), from another directory, for a module it has not
loaded (one that failed to import is reported where it runs), or when a library left
a thread running (a fork would copy its locks). Only its user can reach it: the
socket is in a private temporary folder. Imports only the standard library until it
preloads.
"""

from __future__ import annotations

import contextlib
import gc
import json
import os
import signal
import socket
import struct
import sys

SERVER_ENV = "PIPELINE_STEP_SERVER"  # the socket's path, for pipeline.processes.launch
PRELOAD_ENV = "PIPELINE_PRELOAD"  # "0": no step server, each step starts its own interpreter
# Set for each step: the pipeline's driver, "<pid>@<start time>" (``pipeline.processes.step`` checks
# it is alive). Here, as this module imports nothing of the project.
DRIVER_ENV = "PIPELINE_DRIVER"
# "0": no parent-death signal (Linux's PR_SET_PDEATHSIG), as on other platforms.
PARENT_DEATH_SIGNAL_ENV = "PIPELINE_PARENT_DEATH_SIGNAL"
HEADER = struct.Struct("!Q")  # length of the JSON request that follows
# Imported by the server besides the step modules: what the steps import inside functions.
LIBRARIES = tuple(
    """
    mlflow.sklearn mlflow.pyfunc mlflow.store.tracking.sqlalchemy_store mlflow.store.model_registry.sqlalchemy_store
    mlflow.store.tracking.rest_store sklearn.metrics sklearn.calibration pyarrow.parquet matplotlib.pyplot
""".split()
)


def say(message: str) -> None:
    print(f"pipeline: {message}", file=sys.stderr, flush=True)


def parent_death_signal() -> bool:
    """Whether the kernel can be asked for a signal when the parent dies (Linux only)."""
    return sys.platform.startswith("linux") and os.environ.get(PARENT_DEATH_SIGNAL_ENV, "1") != "0"


def _die_with(parent: int) -> None:
    """Have the kernel send SIGTERM (default action: end at once) when ``parent`` dies,
    where it can (:func:`parent_death_signal`); end now if it has died already."""
    import ctypes

    if parent_death_signal():
        ctypes.CDLL(None).prctl(1, signal.SIGTERM, 0, 0, 0)  # PR_SET_PDEATHSIG
    if os.getppid() != parent:
        os._exit(1)


def preload(modules: list[str]) -> tuple[set[str], str]:
    """Import ``modules`` and :data:`LIBRARIES`: the modules loaded, and why none may be
    forked (empty when they may). A module that fails to import is run where it is asked for."""
    import importlib
    import threading

    loaded = set()
    for name in [*modules, *LIBRARIES]:
        try:
            importlib.import_module(name)
            loaded.add(name)
        except Exception as err:  # noqa: BLE001 - its own process will report it
            say(f"could not preload {name}: {type(err).__name__}: {err}")
    threads = [thread.name for thread in threading.enumerate() if thread is not threading.main_thread()]
    return loaded, f"threads running: {', '.join(threads)}" if threads else ""


def serve(listener_fd: int, driver: int, modules: list[str]) -> None:
    """Accept step requests on ``listener_fd`` (bound and listening, passed by the driver)
    until the driver stops this process or dies."""
    import select

    _die_with(driver)
    signal.signal(signal.SIGINT, signal.SIG_IGN)  # a terminal's goes to the steps
    listener = socket.socket(fileno=listener_fd)
    # The collector paused while the server imports (each collection would walk all that is
    # loaded so far), then what is loaded frozen out of its sight: it lives as long as the
    # server, and a step's collections do not touch (and so copy) every page it holds.
    gc.disable()
    loaded, unsafe = preload(modules)
    gc.freeze()
    gc.enable()
    here, python = os.path.realpath(os.getcwd()), os.path.realpath(sys.executable)
    wake_read, wake_write = os.pipe()
    os.set_blocking(wake_write, False)
    signal.set_wakeup_fd(wake_write)
    signal.signal(signal.SIGCHLD, lambda *_: None)
    steps: dict[int, socket.socket] = {}  # forked step pid -> its client's connection
    while True:
        # A second at most: without a parent-death signal, the server notices the driver's end itself.
        readable, _, _ = select.select([listener, wake_read, *steps.values()], [], [], 1.0)
        if os.getppid() != driver:
            for pid in steps:
                with contextlib.suppress(ProcessLookupError):
                    os.kill(pid, signal.SIGTERM)
            os._exit(1)
        if wake_read in readable:
            os.read(wake_read, 512)
        while True:  # reap each step that ended, and report it if its client is there
            try:
                pid, status = os.waitpid(-1, os.WNOHANG)
            except ChildProcessError:
                break
            if pid == 0:
                break
            conn = steps.pop(pid, None)
            if conn is not None:
                ended = (
                    f"signal {os.WTERMSIG(status)}"
                    if os.WIFSIGNALED(status)
                    else f"exit {os.waitstatus_to_exitcode(status)}"
                )
                with contextlib.suppress(OSError):  # its client may be gone
                    conn.sendall(f"{ended}\n".encode())
                conn.close()
        for pid, conn in list(steps.items()):
            if conn in readable and not _alive(conn):  # its client is gone: stop the step
                os.kill(pid, signal.SIGTERM)
                steps.pop(pid).close()
        if listener in readable:
            conn, _ = listener.accept()
            try:
                pid = _fork_step(
                    conn, (listener, *steps.values()), loaded, unsafe, here, python, (wake_read, wake_write)
                )
            except OSError as err:  # a client gone before its answer: nothing was forked
                say(f"a request was dropped: {err}")
                conn.close()
                pid = None
            if pid:
                steps[pid] = conn


def _alive(conn: socket.socket) -> bool:
    try:
        return bool(conn.recv(1))
    except OSError:
        return False


def _receive(conn: socket.socket) -> tuple[dict, list[int]]:
    conn.settimeout(30)
    header, fds, _, _ = socket.recv_fds(conn, HEADER.size, 3)
    while len(header) < HEADER.size:
        header += conn.recv(HEADER.size - len(header))
    (size,) = HEADER.unpack(header)
    body = b""
    while len(body) < size:
        chunk = conn.recv(size - len(body))
        if not chunk:
            raise OSError("the request ended early")
        body += chunk
    conn.settimeout(None)
    return json.loads(body), fds


def _fork_step(conn, sockets, loaded, unsafe, here, python, wake) -> int | None:
    """Fork a process for the request on ``conn``; its pid, or None when refused. The
    step closes the server's ``sockets`` and ``wake`` pipe, which are not its own."""
    try:
        request, fds = _receive(conn)
    except (OSError, ValueError) as err:
        say(f"a request could not be read: {err}")
        conn.close()
        return None
    refusal = unsafe or (
        f"module {request['module']} not preloaded"
        if request["module"] not in loaded
        else f"another interpreter, {request['python']}"
        if request["python"] != python
        else f"another directory, {request['cwd']}"
        if os.path.realpath(request["cwd"]) != here
        else ""
        if len(fds) == 3
        else "no standard streams"
    )
    if refusal:
        conn.sendall(f"refused {refusal}\n".encode())
        conn.close()
        for fd in fds:
            os.close(fd)
        return None
    pid = os.fork()
    if pid:
        for fd in fds:
            os.close(fd)
        return pid
    code = 1
    try:
        signal.set_wakeup_fd(-1)
        for other in sockets:
            other.close()
        for fd in wake:
            os.close(fd)
        for signum, handler in ((signal.SIGCHLD, signal.SIG_DFL), (signal.SIGINT, signal.default_int_handler)):
            signal.signal(signum, handler)
        _die_with(os.getppid())
        for target, fd in enumerate(fds):  # the caller's stdin, stdout, stderr
            os.dup2(fd, target)
            if fd > 2:
                os.close(fd)
        os.environ.clear()
        os.environ.update(request["env"])  # PIPELINE_DRIVER included: the step checks the driver itself
        os.chdir(request["cwd"])
        conn.sendall(f"started {os.getpid()}\n".encode())
        conn.close()
        code = _run_module(request["module"], request["argv"])
    finally:
        for stream in (sys.stdout, sys.stderr):
            with contextlib.suppress(Exception):
                stream.flush()
        os._exit(code)


def _run_module(module: str, args: list[str]) -> int:
    """Run ``module`` as ``__main__`` (a step ends the process itself); its exit status."""
    import runpy
    import traceback

    if "numpy" in sys.modules:  # each step its own random state, as in a new interpreter
        sys.modules["numpy"].random.seed()
    sys.argv = [module, *args]
    sys.modules.pop(module, None)  # preloaded under its name; run afresh as __main__, as `python -m` does
    try:
        runpy.run_module(module, run_name="__main__", alter_sys=True)
    except SystemExit as exit_:
        if exit_.code is None or isinstance(exit_.code, int):
            return exit_.code or 0
        print(exit_.code, file=sys.stderr)
        return 1
    except BaseException:  # noqa: BLE001 - reported as Python would
        traceback.print_exc()
        return 1
    return 0


class StepServer:
    """The driver's step server: started by :meth:`start` (at the first step that runs),
    offered to the steps by :meth:`environ`, stopped by :meth:`close`."""

    def __init__(self, modules: list[str], cwd: str):
        self.modules, self.cwd = modules, cwd
        self.process = None
        self.folder: str | None = None

    def start(self) -> None:
        import subprocess
        import tempfile

        default = "1" if sys.platform.startswith("linux") else "0"  # fork-safe there only
        if self.process is not None or os.environ.get(PRELOAD_ENV, default) == "0":
            return
        self.folder = tempfile.mkdtemp(prefix="pipeline-steps-")
        listener = socket.socket(socket.AF_UNIX, socket.SOCK_STREAM)
        try:
            listener.bind(os.path.join(self.folder, "steps.sock"))
            listener.listen(64)
            self.process = subprocess.Popen(
                [
                    sys.executable,
                    "-m",
                    "pipeline.processes.step_server",
                    str(listener.fileno()),
                    str(os.getpid()),
                    ",".join(self.modules),
                ],
                pass_fds=[listener.fileno()],
                cwd=self.cwd,
                stdin=subprocess.DEVNULL,
            )
        except OSError as err:  # e.g. a socket path too long for TMPDIR: the steps start as usual
            say(f"no step server ({err}); each step starts its own interpreter")
        finally:
            listener.close()

    def environ(self) -> dict[str, str]:
        return {SERVER_ENV: os.path.join(self.folder, "steps.sock")} if self.process else {}

    def close(self) -> None:
        import shutil
        import subprocess

        if self.process is not None:
            self.process.terminate()
            try:
                self.process.wait(10)
            except subprocess.TimeoutExpired:
                self.process.kill()
                self.process.wait()
            self.process = None
        if self.folder:
            shutil.rmtree(self.folder, ignore_errors=True)
            self.folder = None


if __name__ == "__main__":
    serve(int(sys.argv[1]), int(sys.argv[2]), sys.argv[3].split(","))
