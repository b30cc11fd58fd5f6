"""What the MLflow UI shows of a pipeline: its experiment, the run's name, description and
the tags a person filters by (unchanged reruns: ``pipeline.unchanged``).

- The experiment is ``experiment.name`` (created if missing). ``mlflow run`` picks the
  experiment of the run it makes before the project starts (``--experiment-name``,
  ``MLFLOW_EXPERIMENT_NAME``, else ``Default``); ``make run`` passes the configured one,
  and a run elsewhere is kept where ``mlflow run`` put it, with a warning, unless the
  overrides name another experiment: then it is refused.
- Tags: ``pipeline.outcome`` (one word), ``pipeline.outcome_detail`` (the sentence),
  ``pipeline.model`` (the estimator's class), ``pipeline.trigger`` (manual, schedule,
  sweep: ``PIPELINE_TRIGGER``, which ``ops.retrain`` sets to ``schedule``), and
  ``pipeline.driver`` (``<host>/<pid>@<start time>`` of the process that drives it).
- A pipeline run left RUNNING by a driver that was killed is ended KILLED, with the reason
  as tag ``pipeline.error``, by the next pipeline on the same host and experiment, its step
  runs still RUNNING with it (:func:`end_abandoned_runs`). Runs of drivers on other hosts
  are left alone: whether those are alive cannot be told from here.
"""

from __future__ import annotations

import logging
import os
from collections.abc import Sequence

from omegaconf import DictConfig

from core import contracts
from core.config import EXPERIMENT_KEY
from pipeline.summary import PipelineSummary, model_class

log = logging.getLogger(__name__)

DRIVER_TAG = "pipeline.driver"


class WrongExperiment(ValueError):
    """``mlflow run`` made the run in another experiment than the overrides name."""


def trigger() -> str:
    """What started this pipeline: ``PIPELINE_TRIGGER``, else ``manual``."""
    value = os.environ.get(contracts.TRIGGER_ENV) or "manual"
    if value not in contracts.TRIGGERS:
        raise ValueError(f"{contracts.TRIGGER_ENV}={value!r}: expected one of {', '.join(contracts.TRIGGERS)}")
    return value


def experiment_for(wanted: str, overrides: Sequence[str], launched_run) -> str:
    """The id of the experiment the pipeline's runs go to; ``wanted`` is the configured one.
    ``launched_run`` is the run ``mlflow run`` made for it (None: no such run; ``wanted``
    is used, created if missing)."""
    import mlflow

    from core.tracking import use_experiment

    if launched_run is None:
        return use_experiment(wanted)
    experiment_id = launched_run.info.experiment_id
    actual = mlflow.get_experiment(experiment_id).name
    if actual != wanted:
        message = (
            f"mlflow run made this run in experiment {actual!r}, the config names {wanted!r}; "
            f"start it with `mlflow run . --experiment-name {wanted!r}` (make run does)"
        )
        if any(o.lstrip("+").partition("=")[0] == EXPERIMENT_KEY for o in overrides):
            raise WrongExperiment(message)
        log.warning("%s; its runs stay in %r", message, actual)
    return experiment_id


def start_tags(cfg: DictConfig, name: str, trigger_: str) -> dict[str, str]:
    """The tags a pipeline run (or sweep, or job) gets when it starts."""
    from mlflow.utils.mlflow_tags import MLFLOW_RUN_NAME

    return {
        MLFLOW_RUN_NAME: name,
        contracts.TRIGGER_TAG: trigger_,
        contracts.MODEL_CLASS_TAG: model_class(cfg.model),
        DRIVER_TAG: driver(),
    }


def host() -> str:
    """This host as far as its processes can be seen: its name, and on Linux its pid namespace
    (two containers may share a name, not their processes)."""
    import socket

    try:
        return f"{socket.gethostname()}:{os.stat('/proc/self/ns/pid').st_ino}"
    except OSError:
        return socket.gethostname()


def driver() -> str:
    """This process as a pipeline's driver: ``<host>/<pid>@<start time>``."""
    from pipeline.processes.step import process_identity

    return f"{host()}/{process_identity()}"


def end_abandoned_runs(experiment_id: str) -> list[str]:
    """End the pipeline runs of ``experiment_id`` left RUNNING by a driver on this host that
    is no longer alive, and their RUNNING step runs: status KILLED, the reason as tag
    ``pipeline.error``. Returns the ids of the pipeline runs ended."""
    from mlflow import MlflowClient
    from mlflow.utils.mlflow_tags import MLFLOW_PARENT_RUN_ID

    from pipeline.processes.step import process_alive

    client, here = MlflowClient(), host()
    ended = []
    running = client.search_runs([experiment_id], "attributes.status = 'RUNNING'", max_results=500)
    for run in running:
        tag = run.data.tags.get(DRIVER_TAG, "")
        if not tag.startswith(f"{here}/"):  # no driver recorded, or one on another host
            continue
        identity = tag.removeprefix(f"{here}/")
        if process_alive(identity):
            continue
        reason = f"ended by a later pipeline: its driver (pid {identity.partition('@')[0]} on {here}) was gone"
        children = client.search_runs(
            [experiment_id], f"attributes.status = 'RUNNING' and tags.`{MLFLOW_PARENT_RUN_ID}` = '{run.info.run_id}'"
        )
        for abandoned in [*children, run]:
            client.set_tag(abandoned.info.run_id, contracts.ERROR_TAG, reason)
            client.set_terminated(abandoned.info.run_id, status="KILLED")
        log.warning("pipeline run %s (%s) was left RUNNING: %s; now KILLED", run.info.run_id, run.info.run_name, reason)
        ended.append(run.info.run_id)
    return ended


def end_tags(
    summary: PipelineSummary, experiment_id: str, model_name: str, trigger_: str, detail: str | None = None
) -> dict[str, str]:
    """The outcome tags and the description (``mlflow.note.content``) of a finished pipeline run."""
    from mlflow.utils.mlflow_tags import MLFLOW_RUN_NOTE

    detail = detail or summary.outcome
    note = summary.markdown(experiment_id, model_name, trigger_, headline=detail)
    return {
        contracts.OUTCOME_TAG: summary.outcome_word,
        contracts.OUTCOME_DETAIL_TAG: detail[:4000],
        MLFLOW_RUN_NOTE: note,
    }
