"""One job of a sweep (``pipeline.sweeps.sweep``): the pipeline for one combination of
overrides, run in a Hydra launcher's worker as a nested run of the sweep run, and
the FAILED job run recorded for a combination Hydra cannot compose.

A job runs the four steps as its children with ``gate.enabled=false`` (it moves no
alias) and ``registry.register`` from ``sweep.candidates``. Anything a job raises
fails that job alone. The sweep hands each job its run id and ``--force`` through
Hydra's ``hydra.job.env_set`` (:data:`SWEEP_RUN_ENV`, :data:`SWEEP_FORCE_ENV`).
"""

from __future__ import annotations

import logging
import os
from collections.abc import Sequence

import hydra
from hydra.errors import HydraException
from omegaconf import DictConfig, OmegaConf

from core import contracts
from core.config import Candidates, check_ranges, describe_error, register_schema
from core.errors import stored
from core.metrics import HOLDOUT_METRICS
from pipeline import record
from pipeline.processes.step import log_config, record_outputs
from pipeline.summary import named

log = logging.getLogger(__name__)

JOB_STEP = "sweep_job"
# How the sweep tells its jobs which run they belong to and which steps to rerun:
# environment variables Hydra sets in each job (hydra.job.env_set), not user config.
SWEEP_RUN_ENV = "PIPELINE_SWEEP_RUN_ID"
SWEEP_FORCE_ENV = "PIPELINE_SWEEP_FORCE"


def job_overrides(overrides: Sequence[str]) -> list[str]:
    """A job's own overrides, as Hydra gives them to its task (``hydra.overrides.task``),
    without Hydra's own (``hydra/launcher=...``, ``hydra.launcher.n_jobs=...``) and the
    sweep's (``sweep.metric=...``, and the ones the sweep adds for its jobs)."""
    return [o for o in overrides if not o.lstrip("+~").startswith(("hydra.", "hydra/", "sweep."))]


register_schema()  # conf/config.yaml's defaults start with it


@hydra.main(config_path=str(contracts.CONF_DIR), config_name=contracts.CONFIG_NAME, version_base="1.3")
def hydra_job(cfg: DictConfig) -> dict:
    """Hydra's task function: run one job, never raise (a failing job fails alone)."""
    from hydra.core.hydra_config import HydraConfig

    return checked_job(cfg, job_overrides(HydraConfig.get().overrides.task))


def checked_job(cfg: DictConfig, overrides: Sequence[str]) -> dict:
    """:func:`run_job`, unless the config fails the project's checks (Hydra composed it
    without them): the sweep has already recorded that job as not composable."""
    try:
        check_ranges(cfg)
    except HydraException as err:
        return {"run_id": "", "status": "FAILED", "error": describe_error(err)}
    return run_job(cfg, overrides)


def job_config(cfg: DictConfig, overrides: Sequence[str]) -> tuple[DictConfig, list[str]]:
    """A job's config and the overrides its steps see: its own plus no gate, and
    registration as ``sweep.candidates`` says."""
    register = cfg.sweep.candidates == Candidates.register
    step_overrides = [*overrides, "gate.enabled=false", f"registry.register={str(register).lower()}"]
    return OmegaConf.merge(cfg, {"gate": {"enabled": False}, "registry": {"register": register}}), step_overrides


def run_job(cfg: DictConfig, overrides: Sequence[str]) -> dict:
    """The pipeline for one job's overrides as a nested run of the sweep run; its result."""
    import mlflow

    from pipeline import cache
    from pipeline.run import PipelineContext, run_pipeline
    from pipeline.summary import PipelineSummary

    # Inherited from `mlflow run` in a launcher's worker, where it names the sweep run.
    os.environ.pop("MLFLOW_RUN_ID", None)
    contracts.configure_logging()
    contracts.configure_tracking()
    sweep_run = mlflow.get_run(os.environ[SWEEP_RUN_ENV])
    job_cfg, step_overrides = job_config(cfg, overrides)
    # Ended explicitly, not by a `with` block: run in the sweep's own process (Hydra's
    # basic launcher), ending it there would end the sweep run too.
    job_run = mlflow.start_run(
        experiment_id=sweep_run.info.experiment_id,
        run_name=named("job", overrides),
        parent_run_id=sweep_run.info.run_id,
        nested=True,
    )
    status, message = "FAILED", "the job stopped before its pipeline finished"
    try:
        log_config(job_cfg, step_overrides, step=JOB_STEP)
        mlflow.set_tags(
            {
                "sweep.overrides": " ".join(overrides),
                "sweep.run_id": sweep_run.info.run_id,
                **record.start_tags(cfg, named("job", overrides), "sweep"),
            }
        )
        summary = PipelineSummary(run_id=job_run.info.run_id, name=named("job", overrides))
        error = ""
        try:
            ctx = PipelineContext.create(
                job_cfg, step_overrides, cache.parse_force(os.environ.get(SWEEP_FORCE_ENV, "")), sweep_run
            )
            run_pipeline(ctx, summary)
        except Exception as err:  # anything a job raises fails that job alone
            error = f"{type(err).__name__}: {err}"
            log.exception("job %s failed", " ".join(overrides))
        outputs = {key: value for step in summary.steps for key, value in step.outputs.items()}
        evaluate_run = next((s.run_id for s in summary.steps if s.step == "evaluate" and s.run_id), None)
        if evaluate_run:
            scores = mlflow.get_run(evaluate_run).data.metrics
            mlflow.log_metrics({name: scores[name] for name in HOLDOUT_METRICS if name in scores})
        if outputs:
            record_outputs(outputs)
        status = "FINISHED" if summary.succeeded and not error else "FAILED"
        message = error or ("" if status == "FINISHED" else summary.outcome)
        mlflow.set_tags(
            {
                contracts.ERROR_TAG: stored(message, 4000),
                **record.end_tags(
                    summary,
                    sweep_run.info.experiment_id,
                    cfg.registry.model_name,
                    "sweep",
                    detail=error or summary.outcome,
                ),
            }
        )
        if error:
            mlflow.set_tag(contracts.OUTCOME_TAG, "failed")
        print(summary.render(), flush=True)
    finally:
        mlflow.end_run(status)
    return {"run_id": job_run.info.run_id, "status": status, "error": message}


def uncomposable_message(overrides: Sequence[str], err: Exception) -> str:
    """Hydra's message for a job it cannot compose, on one line, with its "+key=value"
    hint replaced: adding the key would only fail later, at fit time."""
    first_line = str(err).strip().splitlines()[0]
    if first_line.startswith("Could not override"):
        return f"cannot compose the config: {first_line} That key does not exist with {' '.join(overrides)}."
    return f"cannot compose the config: {' '.join(str(err).split())}"


def record_uncomposable(sweep_run, overrides: Sequence[str], err: Exception) -> None:
    """A FAILED job run for a combination Hydra cannot compose, carrying Hydra's message."""
    from mlflow import MlflowClient
    from mlflow.utils.mlflow_tags import MLFLOW_PARENT_RUN_ID, MLFLOW_RUN_NAME

    client = MlflowClient()
    message = uncomposable_message(overrides, err)
    run = client.create_run(
        sweep_run.info.experiment_id,
        tags={
            MLFLOW_PARENT_RUN_ID: sweep_run.info.run_id,
            MLFLOW_RUN_NAME: named("job", overrides),
            contracts.TRIGGER_TAG: "sweep",
            contracts.STEP_TAG: JOB_STEP,
            "sweep.overrides": " ".join(overrides),
            "sweep.run_id": sweep_run.info.run_id,
            contracts.ERROR_TAG: stored(message, 4000),
            contracts.OUTCOME_TAG: "failed",
            contracts.OUTCOME_DETAIL_TAG: "not run: its config cannot be composed",
        },
    )
    client.set_terminated(run.info.run_id, "FAILED")
    log.error("job %s: %s", " ".join(overrides), message)
