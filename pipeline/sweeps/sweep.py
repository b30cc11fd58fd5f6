"""Sweeps: with ``-m``, one pipeline per combination of overrides, as nested runs of one sweep run.

    mlflow run . -P hydra_options="-m model=logistic_regression,random_forest model.C=0.1,1,10"
    python -m pipeline.sweeps.sweep model=logistic_regression,knn   (or python -m pipeline.main -m ...)

1. The sweep run (the run ``mlflow run`` made, or a new one) records the sweep's
   overrides (tag ``sweep.overrides``).
2. Jobs whose config cannot be composed (``model=random_forest model.C=0.1``:
   random forests have no ``C``) are recorded as FAILED job runs carrying Hydra's
   message; Hydra launches the others (``hydra/sweeper=pipeline``, which lets a
   bad job fail alone; ``hydra/launcher=joblib``: parallel processes, or any
   other Hydra launcher such as submitit's or ``hydra/launcher=ray``).
3. Each job is a nested run (tag ``pipeline.step=sweep_job``) that runs the four
   steps as its children with ``gate.enabled=false`` (it moves no alias) and
   ``registry.register`` from ``sweep.candidates``. A job that fails, fails alone.
4. The sweep run logs the table of jobs (``sweep/jobs.json``, a table in the
   MLflow UI, and printed; column ``excluded`` says why a job cannot win), picks
   the best job by ``sweep.metric`` among those the gate could promote
   (``pipeline.sweeps.winner``), and
   runs the pipeline once more for that job's overrides with the gate on: train
   and serialize are reused from the job (step cache), the model is registered
   if it was not yet, and ``evaluate`` decides whether it becomes champion. Only
   the best job's model goes through the gate; the other registered candidates
   are tagged ``sweep.outcome=candidate``.

Exit status: 0 when the best job's model went through the gate (promoted or
kept as challenger), 1 when no job produced a model the gate could promote or
the gate failed, 2 for malformed overrides, a config option that does not exist
(``model=logistic_regresion``) or an unknown ``sweep.metric``/``sweep.candidates``.
"""

from __future__ import annotations

import logging
import sys
from collections.abc import Sequence

from core import contracts
from core.config import compose_config, describe_error, experiment_name, multirun_flag, split_overrides
from core.metrics import HOLDOUT_METRICS
from pipeline import record, unchanged
from pipeline.processes.step import step_parser
from pipeline.sweeps import job as sweep_job
from pipeline.sweeps.winner import GateNeeds, best_job, exclusions, gate_needs, methods_offered

log = logging.getLogger(__name__)

SWEEP_STEP = "sweep"
JOBS_TABLE_ARTIFACT = "sweep/jobs.json"


class SweepError(RuntimeError):
    """The sweep could not produce a validated model to gate."""


def launch(arguments: Sequence[str]) -> None:
    """Run Hydra's multirun over ``arguments`` with ``sweep_job.hydra_job`` as the task function."""
    from hydra.core.global_hydra import GlobalHydra

    argv = sys.argv
    sys.argv = [argv[0], "--multirun", *arguments]
    try:
        sweep_job.hydra_job()
    except SystemExit as exit_:  # Hydra exits 1 when the sweep itself breaks
        if exit_.code:
            raise SweepError(f"Hydra's multirun failed (exit {exit_.code}); see the log above") from None
    finally:
        sys.argv = argv
        GlobalHydra.instance().clear()  # so that compose_config can initialize Hydra again


def jobs_table(sweep_run_id: str, expected: Sequence[Sequence[str]]):
    """One row per job of the sweep, in expansion order: overrides, status, metrics, version, error."""
    import mlflow
    import pandas as pd

    runs = mlflow.search_runs(
        experiment_ids=[mlflow.get_run(sweep_run_id).info.experiment_id],
        filter_string=(
            f"tags.`mlflow.parentRunId` = '{sweep_run_id}' and tags.`{contracts.STEP_TAG}` = '{sweep_job.JOB_STEP}'"
        ),
        output_format="list",
    )
    by_overrides = {run.data.tags.get("sweep.overrides", ""): run for run in runs}
    rows = []
    for number, overrides in enumerate(expected):
        key = " ".join(overrides)
        run = by_overrides.get(key)
        shown = key or "(defaults)"
        tags = run.data.tags if run else {}
        rows.append(
            {
                "job": number,
                "overrides": shown,
                "status": run.info.status if run else "NOT RUN",
                **{
                    name: (run.data.metrics.get(name, float("nan")) if run else float("nan"))
                    for name in HOLDOUT_METRICS
                },
                "validation": tags.get(contracts.OUTPUT_TAG_PREFIX + "validation_status", ""),
                "registered_version": tags.get(contracts.OUTPUT_TAG_PREFIX + "registered_model_version", ""),
                "methods": methods_offered(tags.get(contracts.OUTPUT_TAG_PREFIX + "pyfunc_model_uri", "")),
                "run_id": run.info.run_id if run else "",
                "error": tags.get(contracts.ERROR_TAG, "" if run else "the launcher did not run it"),
            }
        )
    return pd.DataFrame(rows)


def check_settings(jobs: Sequence[Sequence[str]]) -> None:
    """Compose the sweep's own settings (``sweep.*``) as each job gives them: an unknown
    ``sweep.metric`` or ``sweep.candidates`` is a mistake in the command (exit 2), not
    a job that fails alone. The schema (``core.config``) knows the allowed values."""
    from hydra.errors import HydraException

    for settings in {tuple(o for o in job if o.startswith("sweep.")) for job in jobs}:
        try:
            compose_config(settings)
        except HydraException as err:
            raise SweepError(describe_error(err)) from None


def run_sweep(arguments: Sequence[str], force: str = "") -> int:
    """Run the whole sweep under the active (or a new) MLflow run; return the exit status."""
    import mlflow
    from hydra.errors import MissingConfigException
    from mlflow import MlflowClient
    from mlflow.environment_variables import MLFLOW_RUN_ID

    from hydra_plugins.pipeline_sweeper.pipeline_sweeper import compose_errors, expand
    from pipeline import cache
    from pipeline.run import PipelineContext, run_pipeline
    from pipeline.summary import PipelineSummary, model_class

    launched = mlflow.get_run(MLFLOW_RUN_ID.get()) if MLFLOW_RUN_ID.get() else None  # made by `mlflow run`
    jobs = [job for batch in expand(arguments) for job in batch]
    expected = [sweep_job.job_overrides(job) for job in jobs]
    check_settings(jobs)
    errors = compose_errors(arguments, compose_config)
    missing = [err for _, err in errors if isinstance(err, MissingConfigException)]
    if missing:  # a misspelt config option is a typo in the command, not a bad combination
        raise SweepError(" ".join(str(missing[0]).split()))
    bad = {" ".join(sweep_job.job_overrides(job)) for job, _ in errors}
    good = [job for job in jobs if " ".join(sweep_job.job_overrides(job)) not in bad]
    # The sweep's own settings (sweep.metric, ...) and the gated metrics, as the jobs' configs have them.
    first = compose_config(good[0]) if good else None
    metric = first.sweep.metric.value if first is not None else None

    experiment_id = record.experiment_for(experiment_name(arguments), arguments, launched)
    trigger = record.trigger()
    if launched is None and not force:  # a scheduled sweep in which nothing changed makes no run
        repeated = unchanged.repeated_sweep(arguments, bad, good, experiment_id)
        if repeated is not None:
            print(unchanged.counted_message(unchanged.count_on(repeated, trigger)).strip(), flush=True)
            return 0
    sweep_name = f"sweep {len(expected)} job{'s' if len(expected) != 1 else ''}"
    with mlflow.start_run(experiment_id=None if launched else experiment_id) as sweep_run:
        run_id = sweep_run.info.run_id
        mlflow.set_tags(
            {
                contracts.STEP_TAG: SWEEP_STEP,
                "sweep.overrides": " ".join(arguments),
                "sweep.jobs": str(len(expected)),
                **record.start_tags(first if first is not None else compose_config([]), sweep_name, trigger),
            }
        )
        for job, err in errors:
            sweep_job.record_uncomposable(sweep_run, sweep_job.job_overrides(job), err)
        if good:
            try:
                launch(
                    [
                        *arguments,
                        f"+hydra.job.env_set.{sweep_job.SWEEP_RUN_ENV}={run_id}",
                        f"+hydra.job.env_set.{sweep_job.SWEEP_FORCE_ENV}='{force}'",
                    ]
                )
            except SweepError as err:
                log.error("%s", err)
                mlflow.set_tags(
                    {
                        contracts.ERROR_TAG: str(err),
                        contracts.OUTCOME_TAG: "failed",
                        contracts.OUTCOME_DETAIL_TAG: f"sweep failed: {err}",
                    }
                )
                mlflow.end_run("FAILED")
                return 1
        table = jobs_table(run_id, expected)
        # What the gate will ask of the winner whatever its metrics (the first job's gate config).
        needs = GateNeeds() if first is None else gate_needs(MlflowClient(), first, list(table["registered_version"]))
        table["excluded"] = exclusions(table, needs, metric)
        mlflow.log_table(table, JOBS_TABLE_ARTIFACT)
        with _display_options():
            print(
                f"sweep run {run_id}: {len(table)} job{'s' if len(table) != 1 else ''}\n"
                f"{table.drop(columns=['run_id']).to_string(index=False)}"
            )
        failed = int((table["status"] != "FINISHED").sum())
        mlflow.log_metrics({"jobs": len(table), "jobs_failed": failed})

        best = best_job(table, metric, needs) if metric else None
        if best is None:
            outcome = "no job the gate could promote: " + "; ".join(
                f"job {row.job}: {row.excluded}" for row in table.itertuples() if row.excluded
            )
            mlflow.set_tags({contracts.OUTCOME_TAG: "failed", contracts.OUTCOME_DETAIL_TAG: outcome[:4000]})
            log.error("sweep: %s; nothing was gated", outcome)
            mlflow.end_run("FAILED")
            return 1
        best_overrides = expected[int(best["job"])]
        mlflow.set_tags(
            {
                "sweep.best_job": str(best["job"]),
                "sweep.best_run_id": best["run_id"],
                "sweep.best_overrides": best["overrides"],
                "sweep.metric": metric,
            }
        )
        mlflow.log_metric(f"best_{metric}", float(best[metric]))
        log.info("sweep: best job %s (%s = %s): %s", best["job"], metric, best[metric], best["overrides"])

        # The best job's pipeline again, gate on: train and serialize come from its cache.
        cfg = compose_config(best_overrides)
        summary = PipelineSummary(run_id=run_id, name=sweep_name)
        run_pipeline(
            PipelineContext.create(
                cfg,
                best_overrides,
                frozenset(s for s in cache.parse_force(force) if s == "evaluate"),
                mlflow.get_run(run_id),
            ),
            summary,
        )
        client = MlflowClient()
        for row in table.itertuples():
            if row.registered_version and row.registered_version != summary.registered_model_version:
                client.set_model_version_tag(
                    cfg.registry.model_name, row.registered_version, "sweep.outcome", "candidate"
                )
        if summary.registered_model_version:
            client.set_model_version_tag(
                cfg.registry.model_name, summary.registered_model_version, "sweep.outcome", "best"
            )
            client.set_model_version_tag(
                cfg.registry.model_name, summary.registered_model_version, "sweep.run_id", run_id
            )
        mlflow.set_tags(
            {
                "registered_model_version": summary.registered_model_version or "",
                contracts.VALIDATION_STATUS_TAG: summary.validation_status,
                # The estimator that went through the gate.
                contracts.MODEL_CLASS_TAG: model_class(cfg.model),
                **record.end_tags(
                    summary,
                    experiment_id,
                    cfg.registry.model_name,
                    trigger,
                    detail=f"best of {len(table)} jobs ({failed} failed): {summary.outcome}",
                ),
            }
        )
        print(summary.render(), flush=True)
        if not summary.succeeded:
            mlflow.end_run("FAILED")
            return 1
    return 0


def _display_options():
    import pandas as pd

    return pd.option_context("display.width", 200, "display.max_colwidth", 60)


def main(argv: Sequence[str] | None = None) -> None:
    from hydra.errors import HydraException

    parser = step_parser(__doc__)
    parser.add_argument("--force", default="", help="rerun cached steps: 'all' or names, comma-separated")
    # -m/--multirun is accepted (a sweep always is one) and removed before parsing.
    args = parser.parse_args(multirun_flag(sys.argv[1:] if argv is None else argv)[1])
    contracts.configure_logging()
    try:
        overrides = split_overrides(args.overrides)
        from pipeline import cache

        cache.parse_force(args.force)
        from hydra_plugins.pipeline_sweeper.pipeline_sweeper import expand

        expand(overrides)
        experiment_name(overrides)  # one experiment for the whole sweep
        record.trigger()
    except (HydraException, ValueError) as err:
        parser.exit(2, f"{parser.prog}: error: invalid sweep: {err}\n")
    contracts.configure_tracking()
    from core.tracking import ExperimentUnusable

    try:
        status = run_sweep(overrides, args.force)
    except (SweepError, record.WrongExperiment, ExperimentUnusable) as err:  # refused before any run started
        parser.exit(2, f"{parser.prog}: error: {err}\n")
    sys.exit(status)


if __name__ == "__main__":
    main()
