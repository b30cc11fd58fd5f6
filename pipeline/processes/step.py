"""How a step process runs: its arguments (MLproject parameters and Hydra
overrides), its MLflow run, its life tied to the pipeline's, and the outputs it
hands to the next step.

The driver (``pipeline.run``) starts each step with ``mlflow run``; the step
publishes each output as run tag ``pipeline.output.<name>`` (:func:`record_outputs`)
and the driver reads them back (:func:`read_outputs`).

Only a live pipeline changes the registry: a step checks that its driver (named in
its environment by pid and start time, :data:`DRIVER_ENV`) is alive and its pipeline
run RUNNING before it records a decision and before each alias write
(:func:`check_pipeline_alive`), on every platform; killing a pipeline, even with
``kill -9``, leaves no orphaned step that promotes a version. On Linux a step also
dies with the process that started it (:func:`die_with_parent`), so that an orphan
stops at once rather than at its next check.
"""

from __future__ import annotations

import argparse
import contextlib
import ctypes
import logging
import os
import signal
from collections.abc import Iterator, Mapping, Sequence

from omegaconf import DictConfig, OmegaConf

from core.access import explain
from core.composed import HANDED_DOWN_ENV, config_for, hand_down
from core.config import describe_error, is_override_error, split_overrides
from core.contracts import CONFIG_ARTIFACT, ERROR_TAG, OUTPUT_TAG_PREFIX, OVERRIDES_TAG, STEP_TAG
from core.errors import StepError, stored, without_data
from core.secrets import redact
from pipeline.processes.step_server import DRIVER_ENV, parent_death_signal

log = logging.getLogger(__name__)


def step_parser(description: str) -> argparse.ArgumentParser:
    """An argument parser whose trailing positional arguments are Hydra overrides."""
    parser = argparse.ArgumentParser(description=description, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument(
        "overrides",
        nargs="*",
        help="Hydra overrides, e.g. model.C=0.5 data.test_size=0.3 (one argument may hold several)",
    )
    return parser


def parse_step_args(
    parser: argparse.ArgumentParser, argv: Sequence[str] | None = None
) -> tuple[argparse.Namespace, DictConfig]:
    """Parse a step's arguments and compose its config (or take the one its driver handed
    down), exiting 2 on a bad override."""
    args = parser.parse_args(argv)
    try:
        args.overrides = split_overrides(args.overrides)
        cfg = config_for(args.overrides)
    except Exception as err:
        if not is_override_error(err):
            raise
        parser.exit(2, f"{parser.prog}: error: invalid Hydra override: {describe_error(err)}\n")
    return args, cfg


def log_config(cfg: DictConfig, overrides: Sequence[str], step: str) -> None:
    """Log the resolved config as an artifact and the overrides and step name as tags, secrets
    masked (``core.secrets``)."""
    import mlflow

    mlflow.log_text(redact(OmegaConf.to_yaml(cfg, resolve=True)), CONFIG_ARTIFACT)
    mlflow.set_tags({OVERRIDES_TAG: redact(" ".join(overrides)), STEP_TAG: step})


HAND_DOWN_LIMIT = 32 * 1024  # characters of config handed to a step in its environment
PR_SET_PDEATHSIG = 1  # linux/prctl.h


class ParentDied(BaseException):
    """The process that started this one has ended. A ``BaseException``, like
    ``KeyboardInterrupt``, so that no ``except Exception`` in a step mistakes it for
    a failed check and acts on it."""


# Code a stop must not cut in half: a call into the tracking store. Raised inside SQLAlchemy
# while SQLite inserts rows, ParentDied left the write lock to a connection it could not
# close, and the step could then not even end its run ("database is locked").
STORE_MODULES = ("sqlalchemy.", "sqlite3.", "mlflow.store.")
HOLD_SECONDS = 0.02  # how often a held stop looks again whether the store call has returned
_held_signal: int | None = None


def _in_store_call(frame) -> bool:
    while frame is not None:
        if frame.f_globals.get("__name__", "").startswith(STORE_MODULES):
            return True
        frame = frame.f_back
    return False


def _parent_died(signum, frame) -> None:
    """SIGTERM's handler: raise :class:`ParentDied` where the step is, or, inside a store
    call, hold it (SIGALRM looks again every :data:`HOLD_SECONDS`) until the call returns."""
    global _held_signal
    if signum == signal.SIGALRM:
        if _held_signal is None:
            return
        signum = _held_signal
    if _in_store_call(frame):
        _held_signal = signum
        signal.signal(signal.SIGALRM, _parent_died)
        signal.setitimer(signal.ITIMER_REAL, HOLD_SECONDS)
        return
    _held_signal = None
    raise ParentDied(f"the process that started this one has ended (signal {signal.Signals(signum).name})")


def die_with_parent() -> None:
    """Turn SIGTERM into :class:`ParentDied`, so that the MLflow run ends FAILED with a
    reason (once any store call under way has returned), and, on Linux, have the kernel
    send SIGTERM when the parent dies (``PR_SET_PDEATHSIG``; not with
    ``PIPELINE_PARENT_DEATH_SIGNAL=0``). ``mlflow run`` starts an entry point with
    ``bash -c``, which execs it: the parent is the process that called ``mlflow run``,
    or, for a step forked by the step server (``pipeline.processes.step_server``), the server.
    Raises :class:`ParentDied` at once if the driver has already ended."""
    signal.signal(signal.SIGTERM, _parent_died)
    if parent_death_signal():
        parent = os.getppid()
        libc = ctypes.CDLL(None, use_errno=True)
        if libc.prctl(PR_SET_PDEATHSIG, signal.SIGTERM, 0, 0, 0) != 0:
            log.warning("could not ask to die with the parent process: errno %d", ctypes.get_errno())
        if os.getppid() != parent:  # it died before prctl took effect
            raise ParentDied("the process that started this one ended before it began")
    driver = os.environ.get(DRIVER_ENV)
    if driver and not process_alive(driver):
        raise ParentDied(f"the pipeline's driver (pid {driver.partition('@')[0]}) ended before this step began")


def process_identity(pid: int | None = None) -> str:
    """``<pid>@<start time>`` of process ``pid`` (this one by default): names it uniquely,
    even after its pid is reused."""
    import psutil

    pid = os.getpid() if pid is None else pid
    return f"{pid}@{psutil.Process(pid).create_time():.3f}"


def process_alive(identity: str) -> bool:
    """Whether the process named by ``identity`` (:func:`process_identity`) is running:
    same pid, same start time, not a zombie."""
    import psutil

    pid, _, started = identity.partition("@")
    try:
        process = psutil.Process(int(pid))
        # Two seconds: the start time is read against the wall clock, which NTP may step.
        return abs(process.create_time() - float(started)) < 2.0 and process.status() != psutil.STATUS_ZOMBIE
    except (psutil.NoSuchProcess, ValueError):
        return False


@contextlib.contextmanager
def handed_to_step(
    cfg: DictConfig, overrides: Sequence[str], server: Mapping[str, str] | None = None
) -> Iterator[None]:
    """What the driver hands the step it starts, in its environment (``mlflow.projects.run``
    passes on ``os.environ``): this process's pid and start time, which the step checks
    before it changes the registry (forked by the step server or not), the config
    composed from ``overrides``, which the
    step then need not compose again (``core.composed.config_for``), and ``server``, the
    step server's address. Removed afterwards, so
    that nothing else in this process inherits them. A config larger than
    :data:`HAND_DOWN_LIMIT` (thousands of listed features) is not handed down: Linux
    refuses an environment string over 128 KiB, and the step composes it itself."""
    handed = {DRIVER_ENV: process_identity(), HANDED_DOWN_ENV: hand_down(cfg, overrides), **(server or {})}
    if len(handed[HANDED_DOWN_ENV]) > HAND_DOWN_LIMIT:
        handed[HANDED_DOWN_ENV] = ""
    previous = {name: os.environ.get(name) for name in handed}
    os.environ.update(handed)
    try:
        yield
    finally:
        for name, value in previous.items():
            if value is None:
                os.environ.pop(name, None)
            else:
                os.environ[name] = value


def check_pipeline_alive() -> None:
    """Raise :class:`ParentDied` unless the pipeline that started this step is alive: its
    driver (:data:`DRIVER_ENV`) is running and its MLflow run (tag ``mlflow.parentRunId``)
    is still RUNNING. A step started on its own (no driver) has nothing to check."""
    import mlflow
    from mlflow.utils.mlflow_tags import MLFLOW_PARENT_RUN_ID

    driver = os.environ.get(DRIVER_ENV)
    if driver and not process_alive(driver):
        raise ParentDied(f"the pipeline's driver (pid {driver.partition('@')[0]}) has ended; this step was orphaned")
    active = mlflow.active_run()
    parent_id = active and mlflow.get_run(active.info.run_id).data.tags.get(MLFLOW_PARENT_RUN_ID)
    if driver and parent_id:
        status = mlflow.get_run(parent_id).info.status
        if status != "RUNNING":
            raise ParentDied(f"the pipeline's run {parent_id} is {status}, no longer RUNNING")


@contextlib.contextmanager
def signals_deferred() -> Iterator[None]:
    """Hold SIGTERM and SIGINT until the block ends, so that a change of several registry
    writes (tags, then aliases) is made whole or not at all. SIGALRM too: it brings back
    a SIGTERM held during a store call (:func:`_parent_died`).

    Held by handlers, not by the thread's signal mask: a signal sent to the process goes
    to any thread that does not block it (MLflow starts threads of its own), and Python
    then runs its handler in the main thread at once. At the end of the block each held
    signal is raised again, in this thread, for the handler it had before.
    """
    held: list[int] = []
    deferred = (signal.SIGTERM, signal.SIGINT, signal.SIGALRM)
    previous = {signum: signal.signal(signum, lambda signum, frame: held.append(signum)) for signum in deferred}
    try:
        yield
    finally:
        for signum, handler in previous.items():
            signal.signal(signum, handler)
        for signum in dict.fromkeys(held):
            signal.raise_signal(signum)


def run_in_mlflow_run(body, cfg: DictConfig | None = None) -> None:
    """Run ``body()`` inside ``mlflow.start_run()`` (which resumes the run ``mlflow run`` made).

    The process dies with its parent (:func:`die_with_parent`). A failure ends the
    process with exit status 1 and the run FAILED, its message recorded as tag
    ``pipeline.error`` for ``main``'s summary. A :class:`StepError`,
    or an ``MlflowException`` refusing an input (a URI that does not exist, a bad
    parameter, a joblib file whose digest differs: ``INVALID_STATE``), is logged as
    one line; any other error with its traceback. A refusal of the tracking server (a missing
    permission, credentials it does not take) is ``core.access``'s one line, naming the
    experiment and registered model of ``cfg``.
    """
    import mlflow
    from mlflow.exceptions import MlflowException
    from mlflow.protos.databricks_pb2 import INVALID_PARAMETER_VALUE, INVALID_STATE, RESOURCE_DOES_NOT_EXIST, ErrorCode

    refusals = {ErrorCode.Name(code) for code in (INVALID_PARAMETER_VALUE, INVALID_STATE, RESOURCE_DOES_NOT_EXIST)}
    with mlflow.start_run():
        try:
            die_with_parent()
            body()
        except ParentDied as err:
            log.error("stopped: %s", err)
            mlflow.set_tag(ERROR_TAG, f"stopped: {err}")
            raise SystemExit(1) from err
        except Exception as err:
            names = (cfg.experiment.name, cfg.registry.model_name) if cfg is not None else (None, None)
            refused = explain(err, *names)
            message = refused or without_data(getattr(err, "message", None) or str(err))
            if (
                refused
                or isinstance(err, StepError)
                or (isinstance(err, MlflowException) and err.error_code in refusals)
            ):
                log.error("%s", message)
            else:
                log.exception("%s: %s", type(err).__name__, message)
                message = f"{type(err).__name__}: {message}"
            mlflow.set_tag(ERROR_TAG, stored(message, 4000))
            raise SystemExit(1) from err


def record_outputs(outputs: Mapping[str, str]) -> None:
    """Publish a step's outputs on its active run for the next step to read."""
    import mlflow

    mlflow.set_tags({OUTPUT_TAG_PREFIX + key: value for key, value in outputs.items()})
    for key, value in outputs.items():
        log.info("output %s = %s", key, value)


def read_outputs(run_id: str) -> dict[str, str]:
    """The outputs a finished step run published with :func:`record_outputs`."""
    from mlflow import MlflowClient

    return outputs_of(MlflowClient().get_run(run_id))


def outputs_of(run) -> dict[str, str]:
    """The outputs published on ``run`` (an MLflow ``Run``, as a search returns it)."""
    return {
        key.removeprefix(OUTPUT_TAG_PREFIX): value
        for key, value in run.data.tags.items()
        if key.startswith(OUTPUT_TAG_PREFIX)
    }
