"""How a pipeline process loads: its imports out of the garbage collector's way
(:func:`loading`), and what it loaded frozen when it is the whole process
(:func:`run_as_process`). For the driver (``pipeline.main``, ``ops.retrain``) and each
step's ``__main__``."""

from __future__ import annotations

import contextlib
from collections.abc import Callable

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


def run_as_process(main: Callable[[], None]) -> None:
    """Run ``main`` as the whole process (its ``__main__``), which then exits as Python does.
    What :func:`loading` loads in it is frozen out of the collector's sight: it is kept to
    the process's end. Not for a test that calls a main function in its own process."""
    global _whole_process
    _whole_process = True
    main()
