"""Facts about the code and environment a run used: git state, the dependency lock's
digest and package versions. The step cache keys on them; registered versions carry them."""

from __future__ import annotations

import json
import subprocess
from collections.abc import Iterable, Mapping
from importlib.metadata import PackageNotFoundError, version
from pathlib import Path

from omegaconf import OmegaConf

from core.contracts import PROJECT_DIR
from core.secrets import redact

# The SHA-256 of requirements.lock, on pipeline runs, step runs and registered versions.
LOCK_TAG = "lineage.lock_sha256"

# Packages whose version changes what a step produces.
PIPELINE_PACKAGES = (
    "mlflow",
    "scikit-learn",
    "joblib",
    "pandas",
    "numpy",
    "scipy",
    "pyarrow",
    "hydra-core",
    "omegaconf",
)


# What a logged model needs at load time; pinned (pinned_requirements) so that
# `mlflow models serve --env-manager uv` rebuilds the same environment. Each is declared
# in pyproject.toml; in an environment from `make setup` the versions are the lock's.
MODEL_PACKAGES = ("mlflow", "scikit-learn", "joblib", "numpy", "pandas", "scipy")


def package_versions(packages: Iterable[str] = PIPELINE_PACKAGES) -> dict[str, str]:
    """Installed version of each package (``"not installed"`` when absent)."""
    versions = {}
    for package in packages:
        try:
            versions[package] = version(package)
        except PackageNotFoundError:
            versions[package] = "not installed"
    return versions


def pinned_requirements(packages: Iterable[str]) -> list[str]:
    """``name==version`` for each package as installed here, for a model's requirements
    (what the model was built with; tests/unit/test_dependencies.py checks they are the lock's)."""
    return [f"{package}=={version}" for package, version in package_versions(packages).items()]


def git_state(root: Path = PROJECT_DIR) -> tuple[str, bool]:
    """(commit, dirty) of the checkout at ``root``; ``("unknown", True)`` outside git."""
    try:
        commit = subprocess.run(
            ["git", "rev-parse", "HEAD"], cwd=root, capture_output=True, text=True, check=True
        ).stdout.strip()
        status = subprocess.run(
            ["git", "status", "--porcelain", "--untracked-files=no"],
            cwd=root,
            capture_output=True,
            text=True,
            check=True,
        ).stdout
    except (OSError, subprocess.CalledProcessError):
        return "unknown", True
    return commit, bool(status.strip())


def tag_lineage(model_uri: str, ctx, summary) -> None:
    """Write where a newly registered version came from on the version itself (``ctx``: the
    ``pipeline.run.PipelineContext``, ``summary``: the ``PipelineSummary`` so far)."""
    commit, dirty = git_state()
    runs = {f"lineage.{s.step}_run_id": s.run_id or "" for s in summary.steps}
    tags = {
        "lineage.git_commit": commit,
        "lineage.git_dirty": str(dirty).lower(),
        "lineage.data_digest": ctx.data_digest,
        "lineage.overrides": redact(" ".join(ctx.overrides)),
        "lineage.config": redact(OmegaConf.to_yaml(ctx.cfg, resolve=True)),
        "lineage.pipeline_run_id": summary.run_id,
        "lineage.packages": json.dumps(dict(ctx.packages), sort_keys=True),
        LOCK_TAG: ctx.lock_sha256,
        **runs,
    }
    tag_version(model_uri, tags)


def tag_version(model_uri: str, tags: Mapping[str, str]) -> None:
    """Set ``tags`` on the registered version ``models:/<name>/<version>``."""
    from mlflow import MlflowClient

    from core.registry import parse_registered_uri

    name, model_version = parse_registered_uri(model_uri)
    client = MlflowClient()
    for key, value in tags.items():
        client.set_model_version_tag(name, model_version, key, value)
