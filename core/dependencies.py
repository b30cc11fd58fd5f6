"""The project's dependencies: declared once in ``pyproject.toml``, locked with hashes.

- ``pyproject.toml``: ``[project] dependencies`` (what the pipeline, the model and the
  server need), ``[project.optional-dependencies]`` (extras a user adds: ``ray``) and
  ``[dependency-groups] dev`` (the test and lint tools), each pinned ``==``.
- ``requirements.lock``: every distribution the runtime declarations pull in, pinned, with
  the hashes of its files, for every platform from Python 3.11 on (``uv pip compile
  --universal``: markers where a platform needs something else). ``make run`` installs
  exactly this.
- ``requirements-dev.lock``: the same for runtime, extras and dev together, resolved with
  the runtime lock as constraints, so that the tests run the versions ``make run`` installs.
- ``conda.yaml``: written from ``requirements.lock`` (:func:`conda_env`), for ``mlflow run``
  with the conda, uv or virtualenv env manager.

``make lock`` writes the locks and ``conda.yaml``; :func:`problems` says where they and the
declarations disagree, offline (``make lock-check`` also resolves again from PyPI). The
SHA-256 of ``requirements.lock`` (:func:`lock_sha256`) is part of every step's cache key
and of each registered version's lineage.

Standard library only: ``python -m core.dependencies check`` runs before anything is
installed, ``python -m core.dependencies conda`` prints the generated ``conda.yaml``, and
``python -m core.dependencies pins LOCK`` the lock's pins without hashes (``make lock-check``).
"""

from __future__ import annotations

import hashlib
import re
import sys
import tomllib
from dataclasses import dataclass
from pathlib import Path

PROJECT_DIR = Path(__file__).resolve().parent.parent
PYPROJECT = PROJECT_DIR / "pyproject.toml"
RUNTIME_LOCK = PROJECT_DIR / "requirements.lock"
DEV_LOCK = PROJECT_DIR / "requirements-dev.lock"
CONDA_ENV = PROJECT_DIR / "conda.yaml"
DEV_GROUP = "dev"
EXTRAS = "extras"  # every list of [project.optional-dependencies], for declared()
CONDA_PYTHON = "3.11.7"  # mlflow's virtualenv env manager needs the exact patch version

# "name[extra,...]==version" as declared, with the platforms it is for ("; marker") where
# it has no build for some; nothing looser is accepted.
_PIN = re.compile(r"^\s*([A-Za-z0-9][A-Za-z0-9._-]*)(\[[^\]]*\])?\s*==\s*([^\s;]+)\s*(;\s*\S.*)?$")
# A lock entry's first line: "name==version [; marker] [\]".
_LOCKED = re.compile(r"^([A-Za-z0-9][A-Za-z0-9._-]*)==([^\s;\\]+)\s*(?:;\s*([^\\]*?))?\s*\\?$")


class DependencyError(ValueError):
    """A declaration or a lock that cannot be read as this module expects."""


def normalize(name: str) -> str:
    """A distribution name as PyPI compares them (PEP 503): ``Hydra_Core`` -> ``hydra-core``."""
    return re.sub(r"[-_.]+", "-", name).lower()


@dataclass(frozen=True)
class Locked:
    version: str
    marker: str  # "" when it applies everywhere
    hashed: bool


def declared(group: str | None = None, pyproject: Path = PYPROJECT) -> dict[str, str]:
    """{normalized name: version} of ``[project] dependencies`` (``group=None``), of every
    extra (``group=EXTRAS``) or of the dependency group ``group``. Raises
    :class:`DependencyError` for anything not pinned ``==``."""
    data = tomllib.loads(pyproject.read_text())
    if group is None:
        entries, where = data.get("project", {}).get("dependencies", []), "[project] dependencies"
    elif group == EXTRAS:
        optional = data.get("project", {}).get("optional-dependencies", {})
        entries, where = [entry for extra in optional.values() for entry in extra], "[project.optional-dependencies]"
    else:
        entries, where = data.get("dependency-groups", {}).get(group, []), f"[dependency-groups] {group}"
    pins = {}
    for entry in entries:
        found = _PIN.match(entry) if isinstance(entry, str) else None
        if found is None:
            raise DependencyError(f"{pyproject.name}: {where}: {entry!r} is not pinned as name==version")
        pins[normalize(found.group(1))] = found.group(3)
    return pins


def locked(lock: Path) -> dict[str, list[Locked]]:
    """{normalized name: its entries} in a lock written by ``uv pip compile``; a name has
    several entries when the version depends on the platform or Python (each with a marker)."""
    entries: dict[str, list[Locked]] = {}
    lines = lock.read_text().splitlines()
    for number, line in enumerate(lines):
        if not line or line[0] in "# \t-":
            continue
        found = _LOCKED.match(line)
        if found is None:
            raise DependencyError(f"{lock.name}, line {number + 1}: {line!r} is not name==version")
        following = lines[number + 1] if number + 1 < len(lines) else ""
        hashed = line.endswith("\\") and following.strip().startswith("--hash=sha256:")
        entries.setdefault(normalize(found.group(1)), []).append(
            Locked(found.group(2), (found.group(3) or "").strip(), hashed)
        )
    return entries


def lock_sha256(lock: Path | None = None) -> str:
    """SHA-256 of the lock's bytes (``requirements.lock`` unless given); ``"missing"`` when
    there is no lock file."""
    try:
        return hashlib.sha256((lock or RUNTIME_LOCK).read_bytes()).hexdigest()
    except FileNotFoundError:
        return "missing"


def pins(lock: Path) -> list[str]:
    """Every entry of ``lock`` as ``name==version`` with its marker, without hashes."""
    return [
        f"{name}=={entry.version}" + (f" ; {entry.marker}" if entry.marker else "")
        for name, entries in sorted(locked(lock).items())
        for entry in entries
    ]


def conda_env(lock: Path = RUNTIME_LOCK) -> str:
    """``conda.yaml`` as ``make lock`` writes it: Python and every runtime pin of ``lock``."""
    lines = [
        "# Written by `make lock` from requirements.lock (core/dependencies.py); do not edit.",
        "# Environment for `mlflow run .` with the conda, uv or virtualenv env manager: every",
        "# runtime distribution pinned as in the lock, all under pip: (uv and virtualenv drop",
        "# conda-only packages). pip checks no hashes here; `make setup` does.",
        "name: iris-dynamic-dispatch",
        "channels:",
        "  - conda-forge",
        "dependencies:",
        f"  - python={CONDA_PYTHON}",
        "  - pip",
        "  - pip:",
        *(f'      - "{pin}"' for pin in pins(lock)),
    ]
    return "\n".join(lines) + "\n"


def problems(
    pyproject: Path = PYPROJECT, runtime_lock: Path = RUNTIME_LOCK, dev_lock: Path = DEV_LOCK, conda: Path = CONDA_ENV
) -> list[str]:
    """Where the locks and ``conda.yaml`` disagree with the declarations; empty when they agree.

    Offline: it compares pins, and does not resolve again (``make lock-check`` does)."""
    runtime = declared(None, pyproject)
    extras = declared(EXTRAS, pyproject)
    dev = declared(DEV_GROUP, pyproject)
    found = []
    for (kind, names), (other, others) in (
        (("runtime", runtime), ("an extra", extras)),
        (("runtime", runtime), (DEV_GROUP, dev)),
        (("an extra", extras), (DEV_GROUP, dev)),
    ):
        both = set(names) & set(others)
        if both:
            found.append(f"{pyproject.name}: declared both as {kind} and as {other}: {', '.join(sorted(both))}")
    for lock, pins in ((runtime_lock, runtime), (dev_lock, {**runtime, **extras, **dev})):
        if not lock.exists():
            found.append(f"{lock.name} is missing (make lock)")
            continue
        entries = locked(lock)
        for name, version in sorted(pins.items()):
            versions = sorted({entry.version for entry in entries.get(name, [])})
            if versions != [version]:
                found.append(
                    f"{lock.name}: {name} is declared =={version} in {pyproject.name}, "
                    f"locked as {', '.join(versions) or 'nothing'}"
                )
        direct = _direct(lock, pyproject.name)
        for name in sorted(direct - set(pins)):
            found.append(f"{lock.name}: {name} is locked as a declaration of {pyproject.name}, which no longer has it")
        unhashed = sorted(name for name, items in entries.items() if not all(entry.hashed for entry in items))
        if unhashed:
            found.append(f"{lock.name}: no hashes for {', '.join(unhashed)}")
    if runtime_lock.exists() and dev_lock.exists():
        runtime_entries, dev_entries = locked(runtime_lock), locked(dev_lock)
        for name, items in sorted(runtime_entries.items()):
            if sorted(map(repr, dev_entries.get(name, []))) != sorted(map(repr, items)):
                found.append(f"{dev_lock.name}: {name} differs from {runtime_lock.name}")
        if not found and conda.exists() and conda.read_text() != conda_env(runtime_lock):
            found.append(f"{conda.name} is not the one {runtime_lock.name} gives (make lock)")
    return found


def _direct(lock: Path, pyproject_name: str) -> set[str]:
    """The names the lock says it took from the declarations (``# via ... (pyproject.toml...)``)."""
    direct, current = set(), None
    for line in lock.read_text().splitlines():
        found = _LOCKED.match(line)
        if found:
            current = normalize(found.group(1))
        elif current and f"({pyproject_name}" in line and line.lstrip().startswith("#"):
            direct.add(current)
    return direct


def main(argv: list[str]) -> int:
    command = argv[0] if argv else ""
    if command == "check":
        found = problems()
        for problem in found:
            print(f"dependencies: {problem}", file=sys.stderr)
        if found:
            print("dependencies: the locks do not match pyproject.toml; run `make lock`", file=sys.stderr)
        return 1 if found else 0
    if command == "conda":
        sys.stdout.write(conda_env())
        return 0
    if command == "pins" and len(argv) == 2:
        sys.stdout.write("".join(f"{pin}\n" for pin in pins(Path(argv[1]))))
        return 0
    print("usage: python -m core.dependencies check | conda | pins LOCK", file=sys.stderr)
    return 2


if __name__ == "__main__":
    sys.exit(main(sys.argv[1:]))
