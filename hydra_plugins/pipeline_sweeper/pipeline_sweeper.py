"""``hydra/sweeper=pipeline``: Hydra's basic sweeper, except that one bad job does not stop the sweep.

Hydra's ``BasicSweeper`` composes every job's config before launching any and
raises on the first that fails (``model=random_forest model.C=0.1``: random
forests have no ``C``), and raises after the launch if any job failed. This
sweeper launches the jobs that compose, logs each one that does not with
Hydra's own message, and reports failed jobs without raising. It expands
overrides exactly as ``BasicSweeper`` does (``BasicSweeper.split_arguments``)
and works with any launcher (joblib, submitit, Ray, ...).

Who started the sweep learns which jobs could not be composed from
:func:`compose_errors`, which applies the same expansion and composition.
"""

import logging
from dataclasses import dataclass
from pathlib import Path
from typing import Any, Callable, Dict, List, Optional, Sequence, Tuple

from hydra._internal.core_plugins.basic_sweeper import BasicSweeper
from hydra.core.config_store import ConfigStore
from hydra.core.override_parser.overrides_parser import OverridesParser
from hydra.core.utils import JobStatus
from hydra.errors import HydraException
from omegaconf import OmegaConf

log = logging.getLogger(__name__)


@dataclass
class PipelineSweeperConf:
    _target_: str = "hydra_plugins.pipeline_sweeper.pipeline_sweeper.PipelineSweeper"
    max_batch_size: Optional[int] = None
    params: Optional[Dict[str, str]] = None


ConfigStore.instance().store(
    group="hydra/sweeper", name="pipeline", node=PipelineSweeperConf, provider="pipeline_sweeper"
)


def expand(arguments: Sequence[str], max_batch_size: Optional[int] = None) -> List[List[List[str]]]:
    """Batches of jobs, each job a list of overrides, as ``BasicSweeper`` expands ``arguments``."""
    overrides = OverridesParser.create().parse_overrides(list(arguments))
    return BasicSweeper.split_arguments(overrides, max_batch_size)


# Plain annotations (no "from __future__ import annotations"): Hydra loads plugin
# modules without registering them in sys.modules, where dataclasses would look.
def compose_errors(
    arguments: Sequence[str], compose: Callable[[List[str]], Any]
) -> List[Tuple[List[str], HydraException]]:
    """The jobs of the sweep ``arguments`` that ``compose`` refuses, each with Hydra's error."""
    errors = []
    for batch in expand(arguments):
        for job in batch:
            try:
                compose(list(job))
            except HydraException as err:
                errors.append((list(job), err))
    return errors


class PipelineSweeper(BasicSweeper):
    def sweep(self, arguments: List[str]) -> Any:
        assert self.config is not None and self.launcher is not None and self.hydra_context is not None
        params_conf = self._parse_config()
        params_conf.extend(arguments)
        parser = OverridesParser.create(config_loader=self.hydra_context.config_loader)
        self.overrides = self.split_arguments(parser.parse_overrides(params_conf), self.max_batch_size)

        sweep_dir = Path(self.config.hydra.sweep.dir)
        sweep_dir.mkdir(parents=True, exist_ok=True)
        OmegaConf.save(self.config, sweep_dir / "multirun.yaml")

        returns = []
        initial_job_idx = 0
        while not self.is_done():
            batch = [job for job in self.get_job_batch() if self._composes(job)]
            if not batch:
                continue
            results = self.launcher.launch(batch, initial_job_idx=initial_job_idx)
            for job, result in zip(batch, results, strict=False):
                if result.status == JobStatus.FAILED:  # reported, not raised: the others stand
                    log.error("job %s failed; its log is in %s", " ".join(job), result.working_dir)
            initial_job_idx += len(batch)
            returns.append(results)
        return returns

    def _composes(self, job: Sequence[str]) -> bool:
        try:
            self.hydra_context.config_loader.load_sweep_config(self.config, list(job))
        except HydraException as err:
            log.error("job %s cannot be composed, skipped: %s", " ".join(job), err)
            return False
        return True
