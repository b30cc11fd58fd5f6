"""Running the step graph once: each step reused from the cache or run as a child
MLflow run of the active run, outputs handed on as parameters, the summary filled in.

Used by the ``main`` entry point (``pipeline/main.py``) and by each sweep job and the
sweep's gated rerun (``pipeline/sweeps/sweep.py``); it imports neither.
"""

from __future__ import annotations

import logging
import time
from collections.abc import Mapping, Sequence
from dataclasses import dataclass

from omegaconf import DictConfig

from core import contracts
from core.config import build_estimator
from core.dependencies import lock_sha256
from core.gate import GATE_RUN_TAG
from core.registry import alias_version, parse_registered_uri
from pipeline import cache, graph
from pipeline.lineage import package_versions, tag_lineage, tag_version
from pipeline.processes.step import handed_to_step, read_outputs
from pipeline.processes.step_server import StepServer
from pipeline.summary import PipelineSummary, StepResult, step_run_name

log = logging.getLogger(__name__)


def env_manager_of(run) -> str:
    """The env manager ``mlflow run`` used for ``run``; ``local`` when it left no tag.

    MLflow tags a project run ``mlflow.project.env`` for conda, virtualenv, uv and
    docker, and sets no tag for ``--env-manager local``.
    """
    from mlflow.utils.mlflow_tags import MLFLOW_PROJECT_ENV

    return "local" if run is None else run.data.tags.get(MLFLOW_PROJECT_ENV, "local")


@dataclass
class PipelineContext:
    cfg: DictConfig
    overrides: Sequence[str]
    force: frozenset[str]
    env_manager: str
    data_digest: str
    packages: Mapping[str, str]
    lock_sha256: str  # of requirements.lock (pipeline.lineage)

    @classmethod
    def create(
        cls, cfg: DictConfig, overrides: Sequence[str], force: frozenset[str], env_run, data_digest: str | None = None
    ) -> "PipelineContext":
        """The context for one pipeline: steps run under ``env_run``'s env manager (None: the
        pipeline was not started by ``mlflow run``, ``local``); the data
        digest is computed here unless given (main computes it before any run starts)."""
        from core.data import data_digest as compute_digest

        return cls(
            cfg=cfg,
            overrides=list(overrides),
            force=force,
            env_manager=env_manager_of(env_run),
            data_digest=data_digest if data_digest is not None else compute_digest(cfg.data),
            packages=package_versions(),
            lock_sha256=lock_sha256(),
        )


def run_pipeline(ctx: PipelineContext, summary: PipelineSummary, cached_only_in: str | None = None) -> None:
    """Run or reuse the four steps as child runs of the active run, filling ``summary``.

    Stops at the first failing step; ``summary.succeeded`` then is false. With
    ``cached_only_in`` (an experiment id), there is no active run and nothing runs: the
    steps are looked up in that experiment's cache up to the first miss, which ends the
    summary (``summary.unchanged`` says whether all four were cached). Steps that run
    are forked from a step server started at the first of them (``pipeline.processes.launch``).
    """
    server = StepServer([cache.step_module(step) for step in graph.NAMES], str(contracts.PROJECT_DIR))
    try:
        _run_steps(ctx, summary, cached_only_in, server)
    finally:
        server.close()


def _run_steps(ctx: PipelineContext, summary: PipelineSummary, cached_only_in: str | None, server: StepServer) -> None:
    import mlflow

    experiment_id = cached_only_in or mlflow.active_run().info.experiment_id
    outputs: dict[str, str] = {graph.DATA_DIGEST: ctx.data_digest}
    keys: dict[str, str] = {}
    for step in graph.NAMES:
        params = graph.params_for(step, outputs)
        key = cache.step_key(
            step,
            params,
            ctx.cfg,
            keys,
            ctx.packages,
            ctx.data_digest if step == "train" else None,
            lock=ctx.lock_sha256,
        )
        found = cache.lookup(
            key,
            experiment_id,
            forced=step in ctx.force,
            still_valid=_decision_still_holds(ctx.cfg) if step == "evaluate" else None,
        )
        result = StepResult(
            step=step, cache="hit" if found.hit else "miss", reason=found.reason, name=step_run_name(step, outputs)
        )
        summary.steps.append(result)
        log.info("step %s: cache %s (%s)", step, result.cache, result.reason)
        if cached_only_in and not found.hit:
            return
        started = time.monotonic()
        if found.hit:
            result.run_id, result.status = found.hit_run_id, "CACHED"
        else:
            try:
                result.run_id = _run_step(step, params, ctx, experiment_id, result.shown, server)
            except StepNotStarted as err:
                result.error = str(err)
            result.status = "FINISHED" if result.run_id and _finished(result.run_id) else "FAILED"
        result.seconds = time.monotonic() - started
        if result.run_id:
            result.outputs = dict(found.outputs) if found.hit else read_outputs(result.run_id)
            outputs.update(result.outputs)
        if step == "evaluate" and result.status == "FAILED" and "registered_model_uri" in outputs:
            decided = _decision_of_failed_evaluate(ctx.cfg, outputs["registered_model_uri"], result)
            outputs.update(decided)
        summary.registered_model_version = outputs.get("registered_model_version")
        summary.validation_status = outputs.get("validation_status", summary.validation_status)
        if result.status == "FAILED":
            result.error = result.error or _step_error(result.run_id)
            _record_step(result)
            return
        if cached_only_in:
            keys[step] = key.key
            continue
        registered = "registered_model_uri" in outputs
        if step == "package_pyfunc" and result.status == "FINISHED" and registered:
            # Lineage before the cache key: a reused version always carries it.
            tag_lineage(outputs["registered_model_uri"], ctx, summary)
        if step == "evaluate" and result.status == "FINISHED" and registered:
            tag_version(outputs["registered_model_uri"], {"lineage.evaluate_run_id": result.run_id})
        if result.status == "FINISHED":
            cache.record(result.run_id, key)
        _record_step(result)
        keys[step] = key.key
    summary.gate_outcome = outputs.get("gate_outcome")
    summary.columns_left_out = outputs.get("columns_left_out")
    summary.broken_champion_version = outputs.get("broken_champion_version")
    # Read the alias now rather than trusting a cached evaluate: a rollback may have moved it.
    from mlflow import MlflowClient
    from mlflow.exceptions import MlflowException

    try:
        champion = alias_version(MlflowClient(), ctx.cfg.registry.model_name, ctx.cfg.registry.champion_alias)
    except MlflowException as err:  # for the summary only: the gate has decided already
        log.warning("could not read the champion for the summary: %s", err.message)
        summary.champion_version = "unknown (the registry could not be read)"
    else:
        summary.champion_version = str(champion.version) if champion else None


def _decision_still_holds(cfg: DictConfig):
    """For a cached evaluate: why its gate decision no longer holds (the champion
    it left in place has moved since, e.g. another pipeline or a rollback), or None."""
    from mlflow import MlflowClient

    def check(outputs: Mapping[str, str]) -> str | None:
        if outputs.get("gate_outcome") not in ("promoted", "challenger"):
            return None  # not gated: nothing about the champion to hold
        current = alias_version(MlflowClient(), cfg.registry.model_name, cfg.registry.champion_alias)
        now, then = (str(current.version) if current else ""), outputs.get("champion_version", "")
        if now == then:
            return None
        return f"the champion is version {now or 'none'} now, {then or 'none'} when the cached decision was made"

    return check


def _decision_of_failed_evaluate(cfg: DictConfig, model_uri: str, result: StepResult) -> dict[str, str]:
    """After an evaluate that failed or was killed: undo a registry change it left half made
    (``core.locks.settle``); then, if its decision was recorded whole (the version's tag
    ``gate.run_id`` names its run), the outcome the registry holds, so that the summary and
    the exit status say what the registry says; the step counts as finished. Else {}."""
    from mlflow import MlflowClient

    from core.locks import LockBusy, LockUnavailable, settle

    client = MlflowClient()
    name, version = parse_registered_uri(model_uri)
    try:
        undone = settle(client, name)
    except (LockBusy, LockUnavailable) as err:
        log.error("could not check the registry after evaluate failed: %s", err)
        return {}
    if undone:
        log.warning("%s", undone)
    tags = client.get_model_version(name, version).tags
    if not result.run_id or tags.get(GATE_RUN_TAG) != result.run_id:
        return {}
    champion = alias_version(client, name, cfg.registry.champion_alias)
    decided = {
        "validation_status": tags.get(contracts.VALIDATION_STATUS_TAG, "passed"),
        "gate_outcome": tags.get("gate.outcome", ""),
        "champion_version": str(champion.version) if champion else "",
    }
    log.warning(
        "evaluate (run %s) failed after its decision was recorded: version %s %s; the registry holds it",
        result.run_id,
        version,
        decided["gate_outcome"],
    )
    result.status, result.reason = (
        "FINISHED",
        f"{result.reason}; ended after its decision was recorded ({result.error or 'killed'})",
    )
    result.error = ""
    return decided


class StepNotStarted(RuntimeError):
    """A step was refused before its process started (e.g. its config cannot be built)."""


def _run_step(
    step: str, params: dict[str, str], ctx: PipelineContext, experiment_id: str, run_name: str, server: StepServer
):
    """Run one step as a child run named ``run_name``; return its run id (None if MLflow could not start it)."""
    import mlflow
    from mlflow.exceptions import ExecutionException

    if ctx.env_manager == "local":  # steps in this interpreter: a server of it can fork them
        server.start()  # its imports overlap the estimator's check below
    if step == "train":
        try:
            _check_model_config(ctx.cfg)
        except Exception as err:  # any error building the estimator is a config error
            log.error("cannot build the estimator from config 'model': %s", err)
            raise StepNotStarted(f"cannot build the estimator from config 'model': {err}") from err
    try:
        with handed_to_step(ctx.cfg, ctx.overrides, server.environ()):
            submitted = mlflow.projects.run(
                uri=str(contracts.PROJECT_DIR),
                entry_point=step,
                parameters={**params, graph.HYDRA_OPTIONS: " ".join(ctx.overrides)},
                env_manager=ctx.env_manager,
                experiment_id=experiment_id,
                run_name=run_name,
                synchronous=True,
            )
        return submitted.run_id
    except ExecutionException as err:
        run_id = _last_child_run_id(step)
        log.error("step %s failed (run %s): %s", step, run_id, err)
        return run_id


def _check_model_config(cfg: DictConfig) -> None:
    """Build the estimator once, so a bad _target_ or argument fails before training."""
    build_estimator(cfg.model)


def _step_error(run_id: str | None) -> str:
    """The error a failed step recorded (tag ``pipeline.error``), if any."""
    import mlflow

    if not run_id:
        return "the step did not start"
    return mlflow.get_run(run_id).data.tags.get(contracts.ERROR_TAG, "killed or crashed; see its log")


def _finished(run_id: str) -> bool:
    import mlflow

    return mlflow.get_run(run_id).info.status == "FINISHED"


def _record_step(result: StepResult) -> None:
    import mlflow

    prefix = f"pipeline.step.{result.step}."
    mlflow.set_tags(
        {
            prefix + "cache": result.cache,
            prefix + "reason": result.reason,
            prefix + "run_id": result.run_id or "",
            prefix + "status": result.status,
            prefix + "error": result.error,
        }
    )


def _last_child_run_id(step: str) -> str | None:
    """The newest child run of the active run for ``step`` (used when it failed)."""
    import mlflow
    from mlflow.utils.mlflow_tags import MLFLOW_PARENT_RUN_ID, MLFLOW_PROJECT_ENTRY_POINT

    parent = mlflow.active_run().info
    runs = mlflow.search_runs(
        experiment_ids=[parent.experiment_id],
        filter_string=(
            f"tags.`{MLFLOW_PARENT_RUN_ID}` = '{parent.run_id}' and tags.`{MLFLOW_PROJECT_ENTRY_POINT}` = '{step}'"
        ),
        order_by=["attributes.start_time DESC"],
        max_results=1,
        output_format="list",
    )
    return runs[0].info.run_id if runs else None
