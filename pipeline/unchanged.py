"""A rerun in which nothing changed, found before any run starts and counted on the run it
repeats, so that a schedule's unchanged ticks leave one record that grows, not a run each.

- A pipeline is unchanged when each of its four steps is a cache hit (the same lookups
  ``pipeline.run`` makes, nothing run); it repeats the last pipeline run that ended with
  the same evaluate run.
- A sweep is unchanged when the last finished sweep with the same overrides had no job
  that failed when run (a config Hydra cannot compose fails the same way each time), the
  same jobs cannot be composed now, and every other job and the best job's gated rerun
  are all cache hits: it repeats that sweep run.

The repeated run gets one more point of metric ``unchanged_reruns`` (step = the count,
so its chart is the history of the checks), tag ``pipeline.last_unchanged`` and a line
at the end of its description. Only for reruns no ``mlflow run`` made a run for
(``ops.retrain``, ``python -m pipeline.main``) and without ``--force``.
"""

from __future__ import annotations

import time
from collections.abc import Sequence

from core import contracts
from core.config import compose_config, split_overrides
from pipeline.run import PipelineContext, run_pipeline
from pipeline.summary import PipelineSummary

UNCHANGED_METRIC = "unchanged_reruns"
LAST_UNCHANGED_TAG = "pipeline.last_unchanged"
EVALUATE_RUN_TAG = "pipeline.step.evaluate.run_id"
NOTE_MARK = "\n\n**Unchanged reruns since:**"


def cached_plan(ctx: PipelineContext, experiment_id: str, name: str = "pipeline") -> PipelineSummary:
    """The pipeline's steps as the cache finds them, up to the first miss; nothing runs."""
    plan = PipelineSummary(run_id="", name=name)
    run_pipeline(ctx, plan, cached_only_in=experiment_id)
    return plan


def repeated_pipeline(plan: PipelineSummary, experiment_id: str):
    """The last pipeline run an all-cached ``plan`` repeats (same evaluate run), or None."""
    import mlflow

    if not plan.unchanged:
        return None
    found = mlflow.search_runs(
        experiment_ids=[experiment_id],
        filter_string=f"tags.`{EVALUATE_RUN_TAG}` = '{plan.steps[-1].run_id}'",
        order_by=["attributes.start_time DESC"],
        max_results=1,
        output_format="list",
    )
    return found[0] if found else None


def repeated_sweep(arguments: Sequence[str], uncomposable: set[str], good: Sequence[Sequence[str]], experiment_id: str):
    """The last sweep run this sweep repeats unchanged, or None. ``uncomposable`` holds the
    overrides (joined) of the jobs Hydra cannot compose now, ``good`` the other jobs'."""
    import mlflow

    from pipeline.sweeps import job as sweep_job

    # Matched here, not in the filter: overrides may hold quotes, which a filter string cannot.
    finished = mlflow.search_runs(
        experiment_ids=[experiment_id],
        filter_string=f"tags.`{contracts.STEP_TAG}` = 'sweep' and attributes.status = 'FINISHED'",
        order_by=["attributes.start_time DESC"],
        max_results=200,
        output_format="list",
    )
    last = next((run for run in finished if run.data.tags.get("sweep.overrides") == " ".join(arguments)), None)
    if last is None or not last.data.tags.get("sweep.best_overrides"):
        return None
    jobs = mlflow.search_runs(
        experiment_ids=[experiment_id],
        filter_string=f"tags.`mlflow.parentRunId` = '{last.info.run_id}' and tags.`{contracts.STEP_TAG}` = "
        f"'{sweep_job.JOB_STEP}'",
        output_format="list",
    )
    failed = {job.data.tags.get("sweep.overrides", "") for job in jobs if job.info.status != "FINISHED"}
    if failed != uncomposable:  # a job failed when run (it may not now), or what composes changed
        return None
    for overrides in good:
        cfg = compose_config(overrides)
        job_cfg, step_overrides = sweep_job.job_config(cfg, sweep_job.job_overrides(overrides))
        ctx = PipelineContext.create(job_cfg, step_overrides, frozenset(), None)
        if not cached_plan(ctx, experiment_id).unchanged:
            return None
    best = last.data.tags["sweep.best_overrides"]
    best_overrides = [] if best == "(defaults)" else split_overrides([best])
    gated = cached_plan(
        PipelineContext.create(compose_config(best_overrides), best_overrides, frozenset(), None), experiment_id
    )
    return last if gated.unchanged else None


def count_on(run, trigger: str):
    """Count an unchanged rerun on ``run`` (metric, tag, a line of its description); return it again."""
    from mlflow import MlflowClient
    from mlflow.utils.mlflow_tags import MLFLOW_RUN_NOTE

    count = int(run.data.metrics.get(UNCHANGED_METRIC, 0)) + 1
    now = time.time()
    stamp = time.strftime("%Y-%m-%d %H:%M:%S UTC", time.gmtime(now))
    note = run.data.tags.get(MLFLOW_RUN_NOTE, "").split(NOTE_MARK)[0]
    client = MlflowClient()
    client.log_metric(run.info.run_id, UNCHANGED_METRIC, count, timestamp=int(now * 1000), step=count)
    client.set_tag(run.info.run_id, LAST_UNCHANGED_TAG, f"{stamp} ({trigger})")
    client.set_tag(
        run.info.run_id,
        MLFLOW_RUN_NOTE,
        f"{note}{NOTE_MARK} {count}, the last at {stamp} ({trigger}); every step cached, no new run.",
    )
    return client.get_run(run.info.run_id)


def counted_message(run) -> str:
    return (
        f"  no new run: unchanged rerun {int(run.data.metrics[UNCHANGED_METRIC])} counted on run "
        f"{run.info.run_id} ({run.info.run_name}; metric {UNCHANGED_METRIC})"
    )
