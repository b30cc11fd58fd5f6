"""How a pipeline process starts and ends: its imports out of the garbage collector's way
(:func:`loading`), and its exit without Python's teardown (:func:`run_as_process`). For
the driver (``pipeline.main``, ``ops.retrain``) and each step's ``__main__``."""

from __future__ import annotations

import contextlib
import logging
import os
import sys
from collections.abc import Callable
from typing import NoReturn


def _has_child_processes() -> bool:
    """Whether this process has child processes left (Linux ``/proc``); True when it
    cannot tell, so that the caller takes the normal exit."""
    from pathlib import Path

    try:
        return any((task / "children").read_text().strip() for task in Path("/proc/self/task").iterdir())
    except OSError:
        return True


# Set by run_as_process: this process is one of the pipeline's own, whose memory its
# main may freeze (loading). Not in a test that calls a main function in its own process.
_whole_process = False


@contextlib.contextmanager
def collector_paused():
    """Python's garbage collector off inside, as it was on leaving. For work that makes many
    objects at once in a process that holds many (mlflow, its store): each collection
    would walk all of them."""
    import gc

    collecting = gc.isenabled()
    gc.disable()
    try:
        yield
    finally:
        if collecting:
            gc.enable()


@contextlib.contextmanager
def loading():
    """Around a process's imports and first use of the store: the collector is paused, and
    in a process run by :func:`run_as_process`, what is in memory on leaving (mlflow, its
    store, the config: kept to the process's end) is frozen out of its sight
    (``gc.freeze``). Each collection during the imports walks all that is loaded so far:
    about a fifth of ``import mlflow``, a third of a cached rerun. Cyclic garbage made
    while loading (about 10,000 objects on a first run) is frozen with the rest and kept
    to the end, once: collecting it first would walk all that was loaded again."""
    import gc

    with collector_paused():
        try:
            yield
        finally:
            if _whole_process:
                gc.freeze()


def run_as_process(main: Callable[[], None]) -> NoReturn:
    """Run ``main`` as the whole process, then leave at once with its exit status.

    Python's own exit tears down every module it imported, which for mlflow,
    scikit-learn, pandas and scipy takes about a second, longer than many a step's
    work, and the driver waits for it four times per pipeline. By the time
    ``main`` returns, its MLflow run has ended and its files are closed. Here the
    exit handlers run as at a normal exit, the standard streams are flushed, and
    ``os._exit`` skips only the teardown of the modules. A process that still has
    child processes (the worker processes of a sweep's joblib launcher, which a
    normal exit stops and which would otherwise keep its output pipes open)
    exits normally. Only for a process's ``__main__``: in a test it would end the
    test session.
    """
    import atexit
    import traceback

    global _whole_process
    _whole_process = True
    code = 0
    try:
        main()
    except SystemExit as exit_:
        if exit_.code is None or isinstance(exit_.code, int):
            code = exit_.code or 0
        else:  # sys.exit("message"), as argparse's parser.exit does
            print(exit_.code, file=sys.stderr)
            code = 1
    except BaseException:  # noqa: BLE001 - reported as Python would, then the same exit status
        traceback.print_exc()
        code = 1
    if _has_child_processes():
        sys.exit(code)  # the normal exit, which stops them
    if "mlflow" in sys.modules:
        with contextlib.suppress(Exception):
            sys.modules["mlflow"].flush_async_logging()
    atexit._run_exitfuncs()  # what a normal exit runs before the teardown; it reports its own errors
    logging.shutdown()
    for stream in (sys.stdout, sys.stderr):
        with contextlib.suppress(Exception):
            stream.flush()
    os._exit(code)
