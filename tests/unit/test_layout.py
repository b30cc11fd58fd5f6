"""The layout the folder names promise: what each package may import, and no cycle.

steps -> pipeline -> core -> model, read from the import statements (function-local
ones included), so a new import that breaks the direction fails here.
"""

from __future__ import annotations

import ast
from pathlib import Path

import pytest

from core import contracts

# What each package may import from the project, besides itself.
ALLOWED = {
    "model": set(),  # self-contained: a logged model loads without the project
    "core": {"model"},
    "pipeline": {"core", "model", "hydra_plugins"},
    "steps": {"core", "model", "pipeline"},
    "serving": {"core", "model"},
    "ops": {"core", "model", "pipeline", "hydra_plugins"},
    "hydra_plugins": set(),
}
PACKAGES = set(ALLOWED) | {"bench", "tests"}


def project_imports(path: Path) -> set[str]:
    """The project modules ``path`` imports (dotted names), anywhere in the file."""
    found = set()
    for node in ast.walk(ast.parse(path.read_text(), filename=str(path))):
        if isinstance(node, ast.Import):
            found.update(alias.name for alias in node.names)
        elif isinstance(node, ast.ImportFrom) and node.level == 0 and node.module:
            found.add(node.module)
            found.update(f"{node.module}.{alias.name}" for alias in node.names)
    return {name for name in found if name.split(".")[0] in PACKAGES}


def module_name(path: Path) -> str:
    parts = path.relative_to(contracts.PROJECT_DIR).with_suffix("").parts
    return ".".join(parts[:-1] if parts[-1] == "__init__" else parts)


def sources(package: str) -> list[Path]:
    return sorted((contracts.PROJECT_DIR / package).rglob("*.py"))


@pytest.mark.parametrize("package", sorted(ALLOWED))
def test_each_package_imports_only_what_it_may(package):
    wrong = {
        f"{path.relative_to(contracts.PROJECT_DIR)} imports {name}"
        for path in sources(package)
        for name in project_imports(path)
        if name.split(".")[0] not in ALLOWED[package] | {package}
    }
    assert not wrong, sorted(wrong)


def test_steps_holds_the_four_steps_and_nothing_else():
    from pipeline import graph

    modules = {path.stem for path in sources("steps")} - {"__init__"}
    assert modules == set(graph.NAMES)


def test_no_import_cycle_between_project_modules():
    modules = {module_name(path): path for package in ALLOWED for path in sources(package)}
    edges = {
        name: {target for target in project_imports(path) if target in modules and target != name}
        for name, path in modules.items()
    }
    state: dict[str, str] = {}

    def visit(name: str, trail: list[str]) -> None:
        state[name] = "open"
        for target in sorted(edges[name]):
            if state.get(target) == "open":
                cycle = trail[trail.index(target) :] + [target] if target in trail else [name, target]
                pytest.fail(f"import cycle: {' -> '.join(cycle)}")
            if target not in state:
                visit(target, [*trail, target])
        state[name] = "done"

    for name in sorted(modules):
        if name not in state:
            visit(name, [name])


def test_no_module_is_much_over_300_lines():
    long = {
        str(path.relative_to(contracts.PROJECT_DIR)): n
        for package in ALLOWED
        for path in sources(package)
        if (n := len(path.read_text().splitlines())) > 320
    }
    assert not long, long
