"""The one declaration of each dependency (pyproject.toml), its locks and conda.yaml:
they agree, a disagreement is found and named, and the environment is the lock's."""

from __future__ import annotations

import hashlib
import shutil
import subprocess
import sys
from importlib.metadata import distributions

import pytest
import yaml
from packaging.markers import Marker

from core import contracts, dependencies
from core.dependencies import DependencyError
from pipeline.lineage import MODEL_PACKAGES, pinned_requirements

FILES = ("pyproject.toml", "requirements.lock", "requirements-dev.lock", "conda.yaml")
# Installed into .venv by the Makefile itself, not from a lock (uv pip sync keeps them).
TOOLING = {"pip", "setuptools", "uv"}


@pytest.fixture
def project(tmp_path):
    """A copy of the declarations, the locks and conda.yaml, to be edited."""
    for name in FILES:
        shutil.copy(contracts.PROJECT_DIR / name, tmp_path / name)
    return tmp_path


def problems_in(folder):
    return dependencies.problems(
        folder / "pyproject.toml", folder / "requirements.lock", folder / "requirements-dev.lock", folder / "conda.yaml"
    )


def replace(path, old, new):
    text = path.read_text()
    assert old in text, f"{old!r} not in {path.name}"
    path.write_text(text.replace(old, new, 1))


def test_the_locks_and_conda_yaml_agree_with_the_declarations():
    assert dependencies.problems() == []


def test_the_check_needs_only_the_standard_library():
    """`make setup` runs it before anything is installed (-S: no site-packages)."""
    result = subprocess.run(
        [sys.executable, "-S", "-m", "core.dependencies", "check"],
        cwd=contracts.PROJECT_DIR,
        capture_output=True,
        text=True,
        check=False,
    )
    assert result.returncode == 0, result.stderr


def test_a_changed_pin_is_found(project):
    replace(project / "pyproject.toml", '"mlflow==3.17.2"', '"mlflow==3.18.0"')
    assert problems_in(project) == [
        "requirements.lock: mlflow is declared ==3.18.0 in pyproject.toml, locked as 3.17.2",
        "requirements-dev.lock: mlflow is declared ==3.18.0 in pyproject.toml, locked as 3.17.2",
    ]


def test_a_new_declaration_is_found(project):
    replace(project / "pyproject.toml", '"ruff==', '"black==26.1.0",\n    "ruff==')
    assert problems_in(project) == [
        "requirements-dev.lock: black is declared ==26.1.0 in pyproject.toml, locked as nothing"
    ]


def test_a_removed_declaration_is_found(project):
    replace(project / "pyproject.toml", '    "tqdm==4.70.1",\n', "")
    assert problems_in(project) == [
        "requirements.lock: tqdm is locked as a declaration of pyproject.toml, which no longer has it",
        "requirements-dev.lock: tqdm is locked as a declaration of pyproject.toml, which no longer has it",
    ]


def test_a_runtime_package_declared_as_dev_too_is_found(project):
    replace(project / "pyproject.toml", '"ruff==', '"tqdm==4.70.1",\n    "ruff==')
    assert problems_in(project)[0] == "pyproject.toml: declared both as runtime and as dev: tqdm"


def test_an_extra_is_locked_for_the_tests_only(project):
    """ray: the ray extra of pyproject.toml, in requirements-dev.lock (the tests run it) for
    the platforms it has builds for (its marker), not in requirements.lock (make run, conda.yaml)."""
    (entry,) = dependencies.locked(project / "requirements-dev.lock")["ray"]
    assert entry.version == "2.60.0" and entry.marker == "platform_machine == 'arm64' or sys_platform != 'darwin'"
    assert "ray" not in dependencies.locked(project / "requirements.lock")
    replace(project / "pyproject.toml", '"ray==2.60.0;', '"ray==2.61.0;')
    assert problems_in(project) == [
        "requirements-dev.lock: ray is declared ==2.61.0 in pyproject.toml, locked as 2.60.0"
    ]


def test_an_extra_declared_as_runtime_too_is_found(project):
    replace(project / "pyproject.toml", 'ray = ["ray==', 'ray = ["tqdm==4.70.1", "ray==')
    assert problems_in(project)[0] == "pyproject.toml: declared both as runtime and as an extra: tqdm"


def test_a_lock_entry_without_hashes_is_found(project):
    lock = project / "requirements.lock"
    lines = lock.read_text().splitlines()
    start = lines.index(next(line for line in lines if line.startswith("tqdm==")))
    end = start + 1
    while lines[end].lstrip().startswith("--hash"):
        end += 1
    lock.write_text("\n".join([*lines[:start], "tqdm==4.70.1", *lines[end:]]) + "\n")
    assert "requirements.lock: no hashes for tqdm" in problems_in(project)


def test_the_dev_lock_must_keep_the_runtime_versions(project):
    """alembic: pulled in by mlflow, declared nowhere."""
    version = dependencies.locked(project / "requirements-dev.lock")["alembic"][0].version
    replace(project / "requirements-dev.lock", f"\nalembic=={version} ", "\nalembic==0.0.1 ")
    assert problems_in(project) == ["requirements-dev.lock: alembic differs from requirements.lock"]


def test_conda_yaml_is_the_runtime_lock(project):
    conda = yaml.safe_load((contracts.PROJECT_DIR / "conda.yaml").read_text())
    pip = next(entry["pip"] for entry in conda["dependencies"] if isinstance(entry, dict))
    locked = dependencies.locked(contracts.PROJECT_DIR / "requirements.lock")
    assert sorted(pin.split("==")[0] for pin in pip) == sorted(
        name for name, entries in locked.items() for _ in entries
    )
    assert "mlflow==3.17.2" in pip and "psutil==7.2.2" in pip
    assert not any(pin.startswith("sklearn==") for pin in pip)  # the PyPI placeholder

    replace(project / "conda.yaml", '"tqdm==4.70.1"', '"tqdm==4.70.0"')
    assert problems_in(project) == ["conda.yaml is not the one requirements.lock gives (make lock)"]


def test_a_declaration_must_be_pinned_exactly(project):
    replace(project / "pyproject.toml", '"mlflow==3.17.2"', '"mlflow>=3.17"')
    with pytest.raises(DependencyError, match=r"\[project\] dependencies: 'mlflow>=3.17' is not pinned"):
        problems_in(project)


def test_the_environment_is_the_dev_lock():
    """`make test` installed exactly requirements-dev.lock: every distribution here is in it,
    at its version, and every entry that applies to this platform is installed."""
    locked = dependencies.locked(contracts.PROJECT_DIR / "requirements-dev.lock")
    wanted = {
        name: entry.version
        for name, entries in locked.items()
        for entry in entries
        if not entry.marker or Marker(entry.marker).evaluate()
    }
    installed = {dependencies.normalize(d.metadata["Name"]): d.version for d in distributions()}
    assert {name: v for name, v in installed.items() if name not in TOOLING} == wanted


def test_the_models_requirements_are_the_locks_pins():
    locked = dependencies.locked(contracts.PROJECT_DIR / "requirements.lock")
    for requirement in pinned_requirements(MODEL_PACKAGES):
        name, version = requirement.split("==")
        assert [entry.version for entry in locked[name]] == [version], requirement


def test_lock_sha256_is_the_files_digest(tmp_path):
    lock = contracts.PROJECT_DIR / "requirements.lock"
    assert dependencies.lock_sha256() == hashlib.sha256(lock.read_bytes()).hexdigest()
    assert dependencies.lock_sha256(tmp_path / "none.lock") == "missing"
