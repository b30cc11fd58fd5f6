"""``hydra/launcher=ray`` (``conf/hydra/launcher/ray.yaml``): Hydra's joblib launcher on a Ray
cluster, through Ray's joblib backend.

Hydra's joblib launcher (hydra-joblib-launcher 1.2.0, its last release) runs its jobs
with joblib's ``loky`` backend whatever ``hydra.launcher.backend`` says: its ``launch``
sets ``backend="loky"`` before it calls joblib. This launcher is that one with the
backend honoured: it connects to the cluster, registers Ray's joblib backend
(``ray.util.joblib.register_ray``) and has joblib run the joblib launcher's own job
function (Hydra composes the job's config and calls the task) in Ray's workers. Its
settings are the joblib launcher's (``hydra.launcher.n_jobs``, ...); ``n_jobs: -1``
means one job per CPU of the cluster.

The cluster is ``RAY_ADDRESS`` (Ray's own variable); without it, ``ray.init`` joins a
cluster already running on this machine or starts one for the sweep. A ``host:port``
address where nothing answers is refused at once (``ray.init`` would wait without
end). The jobs import
the project from this checkout, which must be at the same path on every node (a shared
filesystem, as for Slurm), and see the launching environment's MLflow settings, its
``PIPELINE_SWEEP_DIR`` and its Python first on ``PATH`` (:func:`job_environment`): a node's
own environment is the one Ray was started in.

Ray is an optional dependency (the ``ray`` extra in ``pyproject.toml``), imported when
a sweep launches. Without it, or without a cluster, :class:`RayUnavailable` says so in
one line (Hydra prints it without a traceback) and the sweep fails before any job.
"""

import logging
import os
import socket
import sys
from pathlib import Path
from typing import Any, Dict, Mapping, Optional, Sequence

from hydra.core.singleton import Singleton
from hydra.core.utils import JobReturn, configure_log, filter_overrides, setup_globals
from hydra.errors import CompactHydraException
from hydra_plugins.hydra_joblib_launcher.joblib_launcher import JoblibLauncher

log = logging.getLogger(__name__)

# The checkout this plugin is part of: the jobs' code (pipeline.sweeps.job) and this plugin.
CHECKOUT = Path(__file__).resolve().parents[2]
# Named by the sweep for `mlflow run` in the launching process only (the job clears it there).
NOT_FOR_JOBS = frozenset({"MLFLOW_RUN_ID"})
INSTALL_HINT = ".venv/bin/uv pip install --require-hashes -r pyproject.toml --extra ray -c requirements-dev.lock"
CONNECT_TIMEOUT_S = 10.0  # for a cluster's address to accept a connection


class RayUnavailable(CompactHydraException):
    """``hydra/launcher=ray`` was chosen where Ray is not installed or no cluster answers."""


def job_environment(environ: Mapping[str, str], executable: str) -> Dict[str, str]:
    """The variables a job gets from the launching environment ``environ``: MLflow's
    (``MLFLOW_*``: the tracking store and how to reach it), ``PIPELINE_SWEEP_DIR`` (where
    Hydra keeps the jobs' records), and ``PATH`` with the folder of ``executable`` first,
    so that the steps' ``python`` and ``mlflow`` are the launching venv's. Ray expands
    ``${PATH}`` to the node's own."""
    chosen = {
        name: value
        for name, value in environ.items()
        if (name.startswith("MLFLOW_") and name not in NOT_FOR_JOBS) or name == "PIPELINE_SWEEP_DIR"
    }
    return {**chosen, "PATH": f"{Path(executable).parent}{os.pathsep}${{PATH}}"}


def import_ray() -> Any:
    """The ``ray`` module, its joblib backend registered; :class:`RayUnavailable` without Ray."""
    try:
        import ray
        from ray.util.joblib import register_ray
    except ImportError as err:
        raise RayUnavailable(
            f"hydra/launcher=ray needs Ray, which is not installed here ({err}): {INSTALL_HINT}"
        ) from None
    register_ray()
    return ray


def check_address(address: Optional[str], timeout: float = CONNECT_TIMEOUT_S) -> None:
    """Refuse a ``host:port`` cluster ``address`` (``RAY_ADDRESS``) where nothing accepts a
    connection within ``timeout`` seconds. Other forms (unset, ``auto``, ``ray://...``)
    are left to ``ray.init``."""
    host, _, port = (address or "").rpartition(":")
    if not host or "/" in host or not port.isdigit():
        return
    try:
        socket.create_connection((host.strip("[]"), int(port)), timeout=timeout).close()
    except OSError as err:
        raise RayUnavailable(f"RAY_ADDRESS={address}: no Ray cluster answers there ({err})") from None


class RayJoblibLauncher(JoblibLauncher):
    """Hydra's joblib launcher with joblib's ``ray`` backend: each job in a Ray worker."""

    def launch(self, job_overrides: Sequence[Sequence[str]], initial_job_idx: int) -> Sequence[JobReturn]:
        assert self.config is not None and self.task_function is not None and self.hydra_context is not None
        ray = import_ray()
        check_address(os.environ.get("RAY_ADDRESS"))
        # The joblib launcher's own job function and reading of its settings (hydra-joblib-launcher
        # is pinned; its launch() is this one without Ray, with loky forced).
        from hydra_plugins.hydra_joblib_launcher._core import execute_job, process_joblib_cfg
        from joblib import Parallel, delayed

        setup_globals()
        configure_log(self.config.hydra.hydra_logging, self.config.hydra.verbose)
        Path(str(self.config.hydra.sweep.dir)).mkdir(parents=True, exist_ok=True)
        settings = dict(self.joblib)  # backend: ray (conf/hydra/launcher/ray.yaml)
        process_joblib_cfg(settings)
        ray.init(
            runtime_env={"env_vars": job_environment(os.environ, sys.executable)},
            job_config=ray.job_config.JobConfig(code_search_path=[str(CHECKOUT)]),
        )
        try:
            log.info(
                "Ray cluster %s (%s CPUs) is launching %d jobs",
                ray.get_runtime_context().gcs_address,
                int(ray.cluster_resources().get("CPU", 0)),
                len(job_overrides),
            )
            for idx, overrides in enumerate(job_overrides):
                log.info("\t#%d : %s", initial_job_idx + idx, " ".join(filter_overrides(overrides)))
            state = Singleton.get_state()
            runs = Parallel(**settings)(
                delayed(execute_job)(
                    initial_job_idx + idx, overrides, self.hydra_context, self.config, self.task_function, state
                )
                for idx, overrides in enumerate(job_overrides)
            )
        finally:
            ray.shutdown()
        return runs
