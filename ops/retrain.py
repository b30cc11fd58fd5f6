"""The command for schedulers: retrain if anything changed, or only on drift, under a lock.

    python -m ops.retrain [--wait SECONDS] [--force STEPS] [-m] [overrides ...]
    python -m ops.retrain --when drift [--input FILE] [overrides ...]
    make retrain HYDRA_OPTIONS="data=file data.path=/srv/iris/batch.csv"
    make retrain HYDRA_OPTIONS="-m model=logistic_regression,random_forest"   (a sweep)
    make retrain WHEN=drift HYDRA_OPTIONS="data=file data.path=/srv/iris/batch.csv"

1. Checks that the tracking store answers (an ``http(s)://`` server within
   ``--connect-timeout`` seconds, a SQLite file that can be opened; ``core.tracking``); creates a new SQLite store once, under the init
   lock, so that pipelines started together do not race to create its tables
   (its artifacts go to ``mlruns/`` beside the database).
2. Takes the pipeline lock for this tracking store (see ``core.locks``: a file
   lock on this host, or on ``PIPELINE_LOCK_URL`` for every host), waiting at most
   ``--wait`` seconds, so two overlapping runs never both train and promote.
3. Runs the ``main`` entry point in this process (the parent run is created
   here; steps that are not cached run as ``mlflow run`` child runs, with the
   local env manager), so an unchanged run costs one Python start, one import
   of mlflow and a few queries; it makes no run, and is counted on the last
   pipeline run instead (``pipeline.record``). Runs are tagged
   ``pipeline.trigger=schedule`` (``--trigger manual`` when a person runs it).

With ``--when drift``, step 3 runs only when the newest batch (``--input``, else the
configured ``data.path``) has drifted from the champion's training data, or the champion's
gated metric dropped on its labelled rows, beyond ``drift.retrain`` (``ops.drift``,
``core.drift_trigger``); the check is recorded on the champion's drift run, and one line
says why it retrains or not. No champion, or one without a reference profile: it retrains.

Exit status: 0 the pipeline finished (promoted, kept the champion, or nothing
changed; its summary says which), or no drift to retrain for; 1 the pipeline failed, or a
batch that cannot be compared (one line); 2 bad arguments;
69 the tracking store (or the lock server) is unreachable or cannot be opened; 75 another
run holds the lock; 77 the tracking server refused the account (one line naming the
permission it lacks, ``core.access``).
"""

from __future__ import annotations

import argparse
import logging
import os
import sys
from collections.abc import Sequence
from pathlib import Path

from core import contracts
from core.access import EXIT_DENIED, explain
from core.config import compose_config, describe_error, is_override_error, multirun_flag, split_overrides
from core.locks import LockBusy, LockUnavailable, store_lock
from core.locks.postgres import without_password
from core.tracking import EXIT_UNAVAILABLE, StoreUnavailable, check_store
from pipeline.processes.loading import run_as_process

log = logging.getLogger(__name__)

EXIT_FAILED = 1
EXIT_LOCKED = 75  # sysexits EX_TEMPFAIL: try again later


def ensure_sqlite_store(tracking_uri: str) -> None:
    """Create a new SQLite store once, under a lock beside it.

    Several processes creating the same new store at once fail with "table ...
    already exists"; the first one through the lock creates it, the rest find it.
    """
    db = contracts.sqlite_path(tracking_uri)
    if db is None or db.exists():
        return
    from mlflow.store.tracking.sqlalchemy_store import SqlAlchemyStore

    db.parent.mkdir(parents=True, exist_ok=True)
    with store_lock("init", 300, tracking_uri):
        # A new store's Default experiment keeps its artifacts in mlruns/ beside the database.
        SqlAlchemyStore(tracking_uri, default_artifact_root=contracts.sqlite_artifact_root(db))


def run_pipeline(overrides: Sequence[str], force: str) -> int:
    """The ``main`` entry point in this process; its exit status."""
    from pipeline import main as pipeline

    try:
        pipeline.main(["--force", force, *overrides])
    except SystemExit as exit_:
        return exit_.code if isinstance(exit_.code, int) else EXIT_FAILED
    return 0


def newest_batch(parser: argparse.ArgumentParser, args, cfg) -> Path | None:
    """With ``--when drift``, the batch to check: ``--input``, else the configured data file."""
    if args.when != "drift":
        if args.input is not None:
            parser.exit(2, "retrain: error: --input is read only with --when drift\n")
        return None
    if cfg is None:
        parser.exit(2, "retrain: error: --when drift checks one batch against one champion: no -m\n")
    from core.data import source_path

    batch = args.input or source_path(cfg.data)
    if batch is None:
        parser.exit(
            2, "retrain: error: --when drift needs the newest batch: --input FILE, or data=file data.path=FILE\n"
        )
    return batch


def retrain_for_drift(cfg, batch: Path) -> bool:
    """Whether the drift of ``batch`` is reason to retrain; says why in one line. A batch that
    cannot be compared exits 1, naming what is wrong."""
    from mlflow.exceptions import MlflowException

    from core.errors import StepError
    from ops.drift import drift_trigger, one_line

    contracts.configure_tracking()
    try:
        go, line = drift_trigger(cfg, batch)
    except Exception as err:  # a refusal of the tracking server may come from an artifact download too
        refused = explain(err, model=cfg.registry.model_name)
        if refused is None and not isinstance(err, (StepError, MlflowException, OSError)):
            raise
        print(f"retrain: {refused or 'error: ' + one_line(err)}", file=sys.stderr)
        sys.exit(EXIT_DENIED if refused else EXIT_FAILED)
    print(f"retrain: {line}")
    return go


def build_parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--wait", type=float, default=0.0, help="seconds to wait for the lock (default 0)")
    parser.add_argument("--force", default="", help="rerun cached steps: 'all' or names, comma-separated")
    parser.add_argument(
        "--connect-timeout",
        type=float,
        default=None,
        help="seconds (default 10, or MLFLOW_HTTP_REQUEST_TIMEOUT where shorter)",
    )
    parser.add_argument(
        "--trigger",
        choices=("schedule", "manual"),
        default="schedule",
        help="recorded as tag pipeline.trigger on the runs (default schedule)",
    )
    parser.add_argument(
        "--when",
        choices=("changed", "drift"),
        default="changed",
        help="changed: run the pipeline, whose cache reruns what changed (default); "
        "drift: only when the newest batch drifted from the champion's training data (ops.drift)",
    )
    parser.add_argument(
        "--input", type=Path, default=None, help="with --when drift: the newest batch (default data.path)"
    )
    parser.add_argument("overrides", nargs="*", help="Hydra overrides for the pipeline")
    return parser


def main(argv: Sequence[str] | None = None) -> None:
    parser = build_parser()
    multirun, rest = multirun_flag(sys.argv[1:] if argv is None else argv)
    args = parser.parse_args(rest)
    try:
        overrides = split_overrides(args.overrides)
        if multirun:  # checked for syntax only: a combination that cannot be composed fails alone
            from hydra_plugins.pipeline_sweeper.pipeline_sweeper import expand

            expand(overrides)
        else:
            cfg = compose_config(overrides)
    except Exception as err:
        if not is_override_error(err):
            raise
        parser.exit(2, f"retrain: error: invalid Hydra override: {describe_error(err)}\n")
    batch = newest_batch(parser, args, None if multirun else cfg)
    if multirun:
        overrides = ["-m", *overrides]
    contracts.configure_logging()
    os.environ[contracts.TRIGGER_ENV] = args.trigger
    tracking_uri = contracts.tracking_uri()
    os.environ["MLFLOW_TRACKING_URI"] = tracking_uri
    # Steps are started with `python` and `mlflow` from PATH: this interpreter's.
    os.environ["PATH"] = f"{Path(sys.executable).parent}{os.pathsep}{os.environ.get('PATH', '')}"

    try:
        check_store(tracking_uri, args.connect_timeout)
        ensure_sqlite_store(tracking_uri)
        with store_lock("pipeline", args.wait, tracking_uri):
            if batch is not None and not retrain_for_drift(cfg, batch):
                return
            log.info("lock taken; running the pipeline against %s", without_password(tracking_uri))
            status = run_pipeline(overrides, args.force)
    except (StoreUnavailable, LockUnavailable) as err:
        print(f"retrain: {err}", file=sys.stderr)
        sys.exit(EXIT_UNAVAILABLE)
    except LockBusy as err:
        print(f"retrain: {err}; exiting with {EXIT_LOCKED}", file=sys.stderr)
        sys.exit(EXIT_LOCKED)
    if status not in (0, EXIT_DENIED):  # a refusal has said so in its one line
        print(f"retrain: the pipeline failed (exit {status})", file=sys.stderr)
    if status != 0:
        sys.exit(status)


if __name__ == "__main__":
    run_as_process(main)
