"""The ``main`` entry point: run train -> serialize -> package_pyfunc -> evaluate.

Reads: Hydra overrides (``-P hydra_options="..."`` or positional arguments) and
``--force`` (``all`` or step names, comma-separated). With ``-m`` (``--multirun``)
the overrides are a sweep, run by ``pipeline.sweeps.sweep``. The config is composed and
the data digest computed before any step starts, so a bad override or a missing
data file fails at once; the estimator is built before ``train`` runs.

The steps and how they connect are ``pipeline/graph.py``; ``pipeline/run.py``
runs them. Each step either reuses an earlier FINISHED run with the same cache key (see
``pipeline.cache``: no step process starts) or runs as a child MLflow run
(``mlflow.projects.run`` under the active parent run, with the parent's env
manager), receiving the previous steps' output URIs as parameters. The same
overrides go to every step.

Writes, on the parent run (named ``pipeline <overrides>``, in the experiment
``experiment.name``): ``config.yaml`` (resolved config), ``summary.json``
(each step's run id, duration, status, cache hit or miss and why; the
registered version; the validation and gate outcome), tags
``pipeline.step.<step>.cache``/``.reason``/``.run_id``, ``registered_model_version``,
``validation_status``, ``pipeline.outcome``/``.outcome_detail``/``.model``/``.trigger``
and the summary as its description (``pipeline.record``); on a newly registered
version, the ``lineage.*`` tags. Before any step, a change of the registry a killed
process left half made is undone (``core.registry.recover``) and runs left RUNNING
by a killed driver on this host are ended (``pipeline.record.end_abandoned_runs``),
each said in one line. A rerun in which every step is cached and that
``mlflow run`` did not make a run for starts none: it is counted on the last
pipeline run instead. Prints the summary; exits non-zero if a step failed (69,
before any run, if the tracking store cannot be reached or opened: ``core.tracking``).
"""

from __future__ import annotations

import logging
import os
import sys
from collections.abc import Sequence
from dataclasses import asdict

from core import contracts
from core.access import EXIT_DENIED, explain, explained, refusal_of, refused_step
from core.config import multirun_flag
from core.tracking import EXIT_UNAVAILABLE, StoreUnavailable, check_store
from pipeline import cache, record, unchanged
from pipeline.lineage import LOCK_TAG, git_state
from pipeline.processes.loading import loading, run_as_process
from pipeline.processes.step import die_with_parent, log_config, parse_step_args, step_parser
from pipeline.run import PipelineContext, run_pipeline
from pipeline.summary import PipelineSummary, named

log = logging.getLogger(__name__)

PROG = "pipeline"  # how its one-line refusals begin (core.access)


def needs(cfg) -> str:
    """What the account of a pipeline needs: docs/operations.md, Accounts."""
    return f"EDIT on experiment {cfg.experiment.name!r} and MANAGE on registered model {cfg.registry.model_name!r}"


def main(argv: Sequence[str] | None = None) -> None:
    argv = list(sys.argv[1:] if argv is None else argv)
    if multirun_flag(argv)[0]:  # -m/--multirun: one pipeline per combination
        from pipeline.sweeps import sweep  # only here: it imports scikit-learn's metrics

        sweep.main(argv)
        return
    with loading():  # mlflow, the config, the store: what this process keeps to its end
        import mlflow
        from mlflow.environment_variables import MLFLOW_RUN_ID
        from mlflow.exceptions import MlflowException

        from core.data import DataError, data_digest
        from core.tracking import ExperimentUnusable

        parser = step_parser(__doc__)
        parser.add_argument(
            "--force", default="", help="rerun these steps even when cached: 'all' or names, comma-separated"
        )
        args, cfg = parse_step_args(parser, argv)
        launched = os.environ.get(MLFLOW_RUN_ID.name)  # the run `mlflow run` made for this pipeline
        if launched:  # started by `mlflow run`: it dies with that command
            die_with_parent()
        try:
            force = cache.parse_force(args.force)
            if cfg.gate.enabled and not cfg.registry.register:
                raise ValueError(
                    "registry.register=false needs gate.enabled=false: the gate decides on registered versions"
                )
            trigger = record.trigger()
            digest = data_digest(cfg.data)
        except (ValueError, DataError) as err:
            parser.exit(2, f"{parser.prog}: error: {err}\n")
        contracts.configure_logging()
        try:
            check_store(contracts.configure_tracking())
        except StoreUnavailable as err:
            print(f"{parser.prog}: {err}", file=sys.stderr)
            sys.exit(EXIT_UNAVAILABLE)
        with explained(PROG, cfg.experiment.name, cfg.registry.model_name, "no run started", needs(cfg)):
            launched_run = mlflow.get_run(launched) if launched else None
            try:
                experiment_id = record.experiment_for(cfg.experiment.name, args.overrides, launched_run)
            except (ExperimentUnusable, record.WrongExperiment, MlflowException) as err:
                if refusal_of(err) is not None:
                    raise
                parser.exit(2, f"{parser.prog}: error: {getattr(err, 'message', err)}\n")
    # A refusal from here on: one line; a run started is ended FAILED by its `with`.
    with explained(PROG, cfg.experiment.name, cfg.registry.model_name, needs=needs(cfg)):
        run(parser.prog, cfg, args, force, launched_run, experiment_id, digest, trigger)


def run(prog, cfg, args, force, launched_run, experiment_id, digest, trigger) -> None:
    """The pipeline once the store and its experiment are known: the parent run and its steps."""
    import mlflow

    settle_registry(prog, cfg.registry.model_name)
    record.end_abandoned_runs(experiment_id)
    name = named("pipeline", args.overrides)
    ctx = PipelineContext.create(cfg, args.overrides, force, launched_run, digest)
    if launched_run is None and not force and _unchanged(ctx, experiment_id, trigger, name):
        return

    with mlflow.start_run(experiment_id=None if launched_run else experiment_id) as parent:
        log_config(cfg, args.overrides, step="main")
        commit, dirty = git_state()
        mlflow.set_tags(
            {
                "lineage.git_commit": commit,
                "lineage.git_dirty": str(dirty).lower(),
                LOCK_TAG: ctx.lock_sha256,
                contracts.DATA_DIGEST_TAG: digest,
                **record.start_tags(cfg, name, trigger),
            }
        )
        summary = PipelineSummary(run_id=parent.info.run_id, name=name)
        try:
            run_pipeline(ctx, summary)
        finally:
            mlflow.log_dict(
                {**asdict(summary), "succeeded": summary.succeeded, "outcome": summary.outcome}, "summary.json"
            )
            mlflow.set_tags(
                {
                    "registered_model_version": summary.registered_model_version or "",
                    contracts.VALIDATION_STATUS_TAG: summary.validation_status,
                    **record.end_tags(summary, parent.info.experiment_id, cfg.registry.model_name, trigger),
                }
            )
            print(summary.render(), flush=True)
        if not summary.succeeded:
            log.error("pipeline failed: %s", summary.outcome)
            denied = refused_step(summary.steps)
            if denied:
                print(f"{PROG}: {denied}; {PROG} needs {needs(cfg)}", file=sys.stderr, flush=True)
            sys.exit(EXIT_DENIED if denied else 1)


def settle_registry(prog: str, model_name: str) -> None:
    """Undo a change of the registry that a killed process left half made (``core.locks.settle``),
    saying so in one line, before anything reads the champion. A decision under way keeps the gate
    lock: the pipeline then goes on, and its evaluate settles under that lock. A lock server that
    cannot be reached ends the pipeline here (exit 69), before anything trains."""
    from mlflow import MlflowClient
    from mlflow.exceptions import MlflowException

    from core.locks import LockBusy, LockUnavailable, settle
    from core.registry import RegistryChangeError

    try:
        undone = settle(MlflowClient(), model_name)
    except LockUnavailable as err:
        print(f"{prog}: {err}", file=sys.stderr)
        sys.exit(EXIT_UNAVAILABLE)
    except (LockBusy, RegistryChangeError, MlflowException) as err:  # evaluate settles, or says why not
        reason = explain(err, model=model_name) or getattr(err, "message", err)
        log.warning("registry not checked for an interrupted change: %s", reason)
        return
    if undone:
        print(f"{prog}: {undone}", file=sys.stderr, flush=True)


def _unchanged(ctx: PipelineContext, experiment_id: str, trigger: str, name: str) -> bool:
    """Whether every step is cached; then no run is made and the rerun is counted on the
    last pipeline run it repeats instead (``pipeline.unchanged``)."""
    plan = unchanged.cached_plan(ctx, experiment_id, name)
    repeated = unchanged.repeated_pipeline(plan, experiment_id)
    if repeated is None:
        return False
    counted = unchanged.count_on(repeated, trigger)
    plan.run_id, plan.name = counted.info.run_id, counted.info.run_name
    print(f"{plan.render()}\n{unchanged.counted_message(counted)}", flush=True)
    return True


if __name__ == "__main__":
    run_as_process(main)
