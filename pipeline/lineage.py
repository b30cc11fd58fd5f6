"""Facts about the code and environment a run used: git state, the dependency lock's
digest and package versions. The step cache keys on them; registered versions carry them."""

from __future__ import annotations

import subprocess
from collections.abc import Iterable
from importlib.metadata import PackageNotFoundError, version
from pathlib import Path

from core.contracts import PROJECT_DIR

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

