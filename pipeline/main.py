"""The ``main`` entry point: run train -> serialize -> package_pyfunc -> evaluate.

Reads: Hydra overrides (``-P hydra_options="..."`` or positional arguments) and
``--force`` (``all`` or step names, comma-separated). With ``-m`` (``--multirun``)
the overrides are a sweep, run by ``pipeline.sweep``. The config is composed and
the data digest computed before any step starts, so a bad override or a missing
data file fails at once; the estimator is built before ``train`` runs.

The steps and how they connect are ``pipeline/graph.py``; ``pipeline/run.py``
runs them. Each step either reuses an earlier FINISHED run with the same cache key (see
``pipeline.cache``: no step process starts) or runs as a child MLflow run
(``mlflow.projects.run`` under the active parent run, with the parent's env
manager), receiving the previous steps' output URIs as parameters. The same
overrides go to every step.

Writes, on the parent run: ``config.yaml`` (resolved config), ``summary.json``
(each step's run id, duration, status, cache hit or miss and why; the
registered version; the validation and gate outcome), tags
``pipeline.step.<step>.cache``/``.reason``/``.run_id``, ``registered_model_version``,
``validation_status`` and ``pipeline.outcome``; on a newly registered version,
the ``lineage.*`` tags. Prints the summary; exits non-zero if a step failed (69, before any run, if the tracking
store cannot be reached or opened: ``core.tracking``).
"""

from __future__ import annotations

import logging
import os
import sys
from collections.abc import Sequence
from dataclasses import asdict

from core import contracts
from core.config import multirun_flag
from core.tracking import EXIT_UNAVAILABLE, StoreUnavailable, check_store
from pipeline import cache
from pipeline.lineage import git_state
from pipeline.run import PipelineContext, PipelineSummary, run_pipeline
from pipeline.step import die_with_parent, log_config, parse_step_args, run_as_process, step_parser

log = logging.getLogger(__name__)


def main(argv: Sequence[str] | None = None) -> None:
    import mlflow
    from mlflow.environment_variables import MLFLOW_RUN_ID

    from core.data import DataError, data_digest

    parser = step_parser(__doc__)
    parser.add_argument(
        "--force",
        default="",
        help="rerun these steps even when cached: 'all' or names, comma-separated",
    )
    argv = list(sys.argv[1:] if argv is None else argv)
    if multirun_flag(argv)[0]:  # -m/--multirun: one pipeline per combination
        from pipeline import sweep  # only here: it imports scikit-learn's metrics

        sweep.main(argv)
        return
    args, cfg = parse_step_args(parser, argv)
    if os.environ.get(MLFLOW_RUN_ID.name):  # started by `mlflow run`: it dies with that command
        die_with_parent()
    try:
        force = cache.parse_force(args.force)
        if cfg.gate.enabled and not cfg.registry.register:
            raise ValueError("registry.register=false needs gate.enabled=false: the gate decides on registered versions")
        digest = data_digest(cfg.data)
    except (ValueError, DataError) as err:
        parser.exit(2, f"{parser.prog}: error: {err}\n")
    contracts.configure_logging()
    try:
        check_store(contracts.configure_tracking())
    except StoreUnavailable as err:
        print(f"{parser.prog}: {err}", file=sys.stderr)
        sys.exit(EXIT_UNAVAILABLE)

    with mlflow.start_run() as parent:
        log_config(cfg, args.overrides, step="main")
        commit, dirty = git_state()
        mlflow.set_tags(
            {
                "lineage.git_commit": commit,
                "lineage.git_dirty": str(dirty).lower(),
                contracts.DATA_DIGEST_TAG: digest,
            }
        )
        ctx = PipelineContext.create(cfg, args.overrides, force, mlflow.get_run(parent.info.run_id), digest)
        summary = PipelineSummary(run_id=parent.info.run_id)
        try:
            run_pipeline(ctx, summary)
        finally:
            mlflow.log_dict(
                {**asdict(summary), "succeeded": summary.succeeded, "outcome": summary.outcome},
                "summary.json",
            )
            mlflow.set_tags(
                {
                    "registered_model_version": summary.registered_model_version or "",
                    contracts.VALIDATION_STATUS_TAG: summary.validation_status,
                    "pipeline.outcome": summary.outcome,
                }
            )
            print(summary.render(), flush=True)
        if not summary.succeeded:
            log.error("pipeline failed: %s", summary.outcome)
            sys.exit(1)


if __name__ == "__main__":
    run_as_process(main)
