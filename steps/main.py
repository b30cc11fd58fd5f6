"""The ``main`` entry point: run train -> serialize -> package_pyfunc -> evaluate.

Reads: Hydra overrides (``-P hydra_options="..."`` or positional arguments).
The config is composed, and the estimator built, before any step starts, so a
bad override fails at once with Hydra's message.

Each step runs as a child MLflow run (``mlflow.projects.run`` under the active
parent run, with the parent's env manager) and receives the previous steps'
output URIs as parameters. The same overrides go to every step.

Writes, on the parent run: ``config.yaml`` (resolved config), ``summary.json``
(each step's run id, duration and status, the registered version, the
validation outcome) and tags ``registered_model_version`` and
``validation_status``; prints the same summary.
"""

from __future__ import annotations

import json
import logging
import sys
import time
from collections.abc import Callable, Sequence
from dataclasses import asdict, dataclass, field

from steps import common

log = logging.getLogger(__name__)

StepParams = Callable[[dict[str, str]], dict[str, str]]

# Each step, and how its MLproject parameters come from the outputs gathered so far.
PIPELINE: tuple[tuple[str, StepParams], ...] = (
    ("train", lambda out: {}),
    ("serialize", lambda out: {"model_uri": out["model_uri"]}),
    (
        "package_pyfunc",
        lambda out: {
            "joblib_uri": out["joblib_uri"],
            "joblib_sha256": out["joblib_sha256"],
            "example_uri": out["holdout_uri"],
        },
    ),
    (
        "evaluate",
        lambda out: {
            "model_uri": out["registered_model_uri"],
            "reference_model_uri": out["model_uri"],
            "holdout_uri": out["holdout_uri"],
        },
    ),
)


@dataclass
class StepResult:
    step: str
    run_id: str | None
    seconds: float
    status: str
    outputs: dict[str, str] = field(default_factory=dict)


@dataclass
class PipelineSummary:
    run_id: str
    steps: list[StepResult] = field(default_factory=list)
    registered_model_version: str | None = None
    validation_status: str = "not run"

    @property
    def succeeded(self) -> bool:
        return len(self.steps) == len(PIPELINE) and all(s.status == "FINISHED" for s in self.steps)

    def render(self) -> str:
        lines = [f"pipeline run {self.run_id}"]
        for step in self.steps:
            lines.append(
                f"  {step.step:<15} {step.status:<9} {step.seconds:6.1f}s  run {step.run_id or '-'}"
            )
        lines.append(f"  registered version: {self.registered_model_version or '-'}")
        lines.append(f"  validation: {self.validation_status}")
        return "\n".join(lines)


def env_manager_of(run) -> str:
    """The env manager ``mlflow run`` used for ``run``; ``local`` when it left no tag.

    MLflow tags a project run ``mlflow.project.env`` for conda, virtualenv, uv and
    docker, and sets no tag for ``--env-manager local``.
    """
    from mlflow.utils.mlflow_tags import MLFLOW_PROJECT_ENV

    return run.data.tags.get(MLFLOW_PROJECT_ENV, "local")


def run_pipeline(hydra_options: str, env_manager: str, summary: PipelineSummary) -> None:
    """Run the four steps as child runs of the active run, filling ``summary`` as they finish.

    Stops at the first failing step; ``summary.succeeded`` then is false.
    """
    import mlflow
    from mlflow.exceptions import ExecutionException

    experiment_id = mlflow.active_run().info.experiment_id
    outputs: dict[str, str] = {}
    for step, params_from in PIPELINE:
        parameters = {**params_from(outputs), "hydra_options": hydra_options}
        log.info("starting step %s with %s", step, parameters)
        started = time.monotonic()
        result = StepResult(step=step, run_id=None, seconds=0.0, status="FAILED")
        summary.steps.append(result)
        try:
            submitted = mlflow.projects.run(
                uri=str(common.PROJECT_DIR),
                entry_point=step,
                parameters=parameters,
                env_manager=env_manager,
                experiment_id=experiment_id,
                synchronous=True,
            )
            result.run_id = submitted.run_id
            result.status = "FINISHED"
        except ExecutionException as err:
            result.run_id = _last_child_run_id(step)
            log.error("step %s failed (run %s): %s", step, result.run_id, err)
            return
        finally:
            result.seconds = time.monotonic() - started
            if result.run_id:
                result.outputs = common.read_outputs(result.run_id)
                outputs.update(result.outputs)
                summary.registered_model_version = outputs.get(
                    "registered_model_version", summary.registered_model_version
                )
                summary.validation_status = outputs.get(
                    "validation_status", summary.validation_status
                )


def _last_child_run_id(step: str) -> str | None:
    """The newest child run of the active run for ``step`` (used when it failed)."""
    import mlflow
    from mlflow.utils.mlflow_tags import MLFLOW_PARENT_RUN_ID, MLFLOW_PROJECT_ENTRY_POINT

    parent = mlflow.active_run().info
    runs = mlflow.search_runs(
        experiment_ids=[parent.experiment_id],
        filter_string=(
            f"tags.`{MLFLOW_PARENT_RUN_ID}` = '{parent.run_id}' "
            f"and tags.`{MLFLOW_PROJECT_ENTRY_POINT}` = '{step}'"
        ),
        order_by=["attributes.start_time DESC"],
        max_results=1,
        output_format="list",
    )
    return runs[0].info.run_id if runs else None


def main(argv: Sequence[str] | None = None) -> None:
    import mlflow
    from hydra.utils import instantiate

    parser = common.step_parser(__doc__)
    args, cfg = common.parse_step_args(parser, argv)
    common.configure_logging()
    common.configure_tracking()
    try:
        instantiate(cfg.model)
    except Exception as err:  # surface a bad _target_ or argument before any step runs
        parser.exit(2, f"{parser.prog}: error: cannot build model from config: {err}\n")

    hydra_options = " ".join(args.overrides)
    with mlflow.start_run() as parent:
        common.log_config(cfg, args.overrides, step="main")
        summary = PipelineSummary(run_id=parent.info.run_id)
        env_manager = env_manager_of(mlflow.get_run(parent.info.run_id))
        try:
            run_pipeline(hydra_options, env_manager, summary)
        finally:
            mlflow.log_dict(
                {**asdict(summary), "succeeded": summary.succeeded}, "summary.json"
            )
            mlflow.set_tags(
                {
                    "registered_model_version": summary.registered_model_version or "",
                    common.VALIDATION_STATUS_TAG: summary.validation_status,
                }
            )
            print(summary.render(), flush=True)
            if not summary.succeeded:
                log.error("pipeline failed; see the step runs above")
                sys.exit(1)


if __name__ == "__main__":
    main()
