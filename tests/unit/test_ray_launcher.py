"""hydra/launcher=ray before any cluster: its config, what its jobs take from the launching
environment, and the one-line refusals without Ray or without a cluster. A sweep on a
real Ray head is in tests/e2e/test_sweep_on_ray.py."""

from __future__ import annotations

import socket
import sys

import pytest
from hydra.errors import CompactHydraException

from core import contracts
from hydra_plugins.pipeline_ray_launcher import ray_launcher

# Names read from the module when used: Hydra's plugin scan executes the module again,
# which makes new classes.


def hydra_launcher(overrides: list[str]):
    from hydra import compose, initialize_config_dir

    from core.config import register_schema

    register_schema()
    with initialize_config_dir(config_dir=str(contracts.CONF_DIR), version_base="1.3"):
        return compose(contracts.CONFIG_NAME, overrides=overrides, return_hydra_config=True).hydra.launcher


def test_hydra_launcher_ray_is_the_joblib_launcher_on_the_ray_backend():
    launcher = hydra_launcher(["hydra/launcher=ray", "hydra.launcher.n_jobs=4"])
    assert launcher._target_ == "hydra_plugins.pipeline_ray_launcher.ray_launcher.RayJoblibLauncher"
    assert (launcher.backend, launcher.n_jobs, launcher.prefer) == ("ray", 4, "processes")
    # The joblib launcher's default stays the project's default.
    assert hydra_launcher([]).backend is None


def test_hydra_finds_the_launcher_as_a_plugin():
    from hydra.core.plugins import Plugins
    from hydra.plugins.launcher import Launcher

    names = {f"{cls.__module__}.{cls.__name__}" for cls in Plugins.instance().discover(Launcher)}
    assert "hydra_plugins.pipeline_ray_launcher.ray_launcher.RayJoblibLauncher" in names


def test_jobs_get_the_launching_environments_mlflow_settings_and_python():
    environ = {
        "MLFLOW_TRACKING_URI": "http://tracking:5000",
        "MLFLOW_TRACKING_USERNAME": "pipeline",
        "MLFLOW_HTTP_REQUEST_TIMEOUT": "30",
        "MLFLOW_RUN_ID": "the sweep run, for `mlflow run` here",
        "PIPELINE_SWEEP_DIR": "/shared/multirun",
        "PIPELINE_DRIVER": "4242",
        "PATH": "/usr/bin",
        "HOME": "/home/someone",
    }
    assert ray_launcher.job_environment(environ, "/shared/project/.venv/bin/python") == {
        "MLFLOW_TRACKING_URI": "http://tracking:5000",
        "MLFLOW_TRACKING_USERNAME": "pipeline",
        "MLFLOW_HTTP_REQUEST_TIMEOUT": "30",
        "PIPELINE_SWEEP_DIR": "/shared/multirun",
        # Ray expands ${PATH} to the node's own.
        "PATH": "/shared/project/.venv/bin:${PATH}",
    }


def test_without_ray_the_launcher_says_how_to_install_it(monkeypatch):
    monkeypatch.setitem(sys.modules, "ray", None)  # import ray: ModuleNotFoundError
    with pytest.raises(ray_launcher.RayUnavailable) as refused:
        ray_launcher.import_ray()
    message = str(refused.value)
    assert message.startswith("hydra/launcher=ray needs Ray, which is not installed here")
    assert message.endswith("uv pip install --require-hashes -r pyproject.toml --extra ray -c requirements-dev.lock")
    # Hydra prints a compact exception as its message alone, without a traceback.
    assert isinstance(refused.value, CompactHydraException) and "\n" not in message


def test_an_address_where_no_cluster_answers_is_refused_at_once():
    with socket.socket() as listening:
        listening.bind(("127.0.0.1", 0))
        listening.listen()
        port = listening.getsockname()[1]
        ray_launcher.check_address(f"127.0.0.1:{port}")  # something answers: left to ray.init
    with pytest.raises(
        ray_launcher.RayUnavailable, match=rf"^RAY_ADDRESS=127.0.0.1:{port}: no Ray cluster answers there \("
    ):
        ray_launcher.check_address(f"127.0.0.1:{port}")
    for address in (None, "", "auto", "local", "ray://head:10001"):
        ray_launcher.check_address(address)  # Ray's own forms: ray.init decides
