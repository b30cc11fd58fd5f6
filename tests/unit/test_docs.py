"""The commands README.md and docs/ show are commands that work: each `make` target and
variable exists in the Makefile, each `mlflow run` entry point and parameter in MLproject,
each `python -m` module can be imported, each MLflow subcommand and option exists, each
`curl` goes to a route the scoring server answers, and every Hydra override composes
(each combination of a sweep). What the commands then do is the other tests' business."""

from __future__ import annotations

import importlib.util
import re
import shlex
from functools import cache

import pytest
import yaml

from core import contracts
from core.config import compose_config, multirun_flag, split_overrides

DOCUMENTS = [contracts.PROJECT_DIR / "README.md", *sorted((contracts.PROJECT_DIR / "docs").glob("*.md"))]
SHELLS = ("bash", "sh", "shell", "console")
# Words that start a command here; anything else in a shell block (JSON continuing a curl,
# an export, createdb) is set-up the commands around it use.
COMMANDS = ("make", "mlflow", "python", ".venv/bin/python", ".venv/bin/mlflow", "uvicorn", "curl")
ROUTES = ("/invocations", "/ping", "/health", "/version", "/status", "/webhooks/mlflow")
# Modules run with `python -m` whose trailing key=value arguments are Hydra overrides.
TAKES_OVERRIDES = (
    "pipeline.main",
    "ops.retrain",
    "ops.drift",
    "ops.rollback",
    "ops.promote",
    "ops.reproduce",
    "core.tracking",
)


def shown_commands() -> list[tuple[str, str]]:
    """(where, command) for every command in a shell block or an inline code span."""
    found = []
    for document in DOCUMENTS:
        text, name = document.read_text(), document.name
        for language, body in re.findall(r"```(\w*)\n(.*?)```", text, re.S):
            if language not in SHELLS:
                continue
            for line in body.replace("\\\n", " ").splitlines():
                line = re.sub(r"\s+#\s.*$", "", line).strip()
                if line.split(" ", 1)[0] in COMMANDS:
                    found.append((name, line))
        for span in re.findall(r"`((?:make|python -m|mlflow run) [^`]+)`", text.replace("\n", " ")):
            found.append((f"{name} (inline)", span))
    return found


COMMANDS_SHOWN = shown_commands()


@cache
def makefile() -> str:
    return (contracts.PROJECT_DIR / "Makefile").read_text()


@cache
def mlproject() -> dict:
    return yaml.safe_load((contracts.PROJECT_DIR / "MLproject").read_text())["entry_points"]


def composes(options: str) -> None:
    """Every override in ``options`` (a ``hydra_options`` value) composes. In a sweep (``-m``),
    each override composes in some combination: a combination that cannot be composed
    (``model=random_forest model.C=0.1``) is a job that fails alone, by design."""
    from hydra_plugins.pipeline_sweeper.pipeline_sweeper import expand

    multirun, rest = multirun_flag(split_overrides([options]) if options.strip() else [])
    overrides = split_overrides(rest)
    if not multirun:
        compose_config(overrides)
        return
    composed = []
    for job in (job for batch in expand(overrides) for job in batch):
        try:
            compose_config(job)
        except Exception:  # noqa: BLE001 - a combination that fails alone
            continue
        composed.append(job)
    keys = {o.split("=", 1)[0] for o in overrides}
    assert composed and all(any(o.startswith(f"{key}=") for job in composed for o in job) for key in keys), options


def check_make(words: list[str]) -> None:
    target, assignments = words[1], [w for w in words[2:] if "=" in w]
    assert re.search(rf"^{re.escape(target)}:", makefile(), re.M), f"no target {target!r} in the Makefile"
    for assignment in assignments:
        variable, _, value = assignment.partition("=")
        assert f"$({variable})" in makefile() or f"$(or $({variable})" in makefile(), f"Makefile reads no {variable}"
        if variable == "HYDRA_OPTIONS":
            composes(value)


def check_mlflow(words: list[str]) -> None:
    from click import Context
    from mlflow.cli import cli

    command, args = cli.get_command(Context(cli), words[1]), words[2:]
    assert command is not None, f"mlflow has no command {words[1]!r}"
    if hasattr(command, "get_command") and args and not args[0].startswith("-"):
        command, args = command.get_command(Context(command), args[0]), args[1:]
        assert command is not None, f"mlflow {words[1]} has no command {words[2]!r}"
    options = {opt for param in command.params for opt in param.opts}
    for arg in args:
        if arg.startswith("-"):
            assert arg.split("=", 1)[0] in options, f"mlflow {words[1]} has no option {arg}"
    if words[1] == "run":
        entry = args[args.index("-e") + 1] if "-e" in args else "main"
        assert entry in mlproject(), f"MLproject has no entry point {entry!r}"
        for index, arg in enumerate(args):
            if arg == "-P":
                key, _, value = args[index + 1].partition("=")
                assert key in mlproject()[entry]["parameters"], f"entry point {entry} has no parameter {key!r}"
                if key == "hydra_options":
                    composes(value)


def check_python(words: list[str]) -> None:
    module, args = words[2], words[3:]
    if "<" in module:  # a placeholder: python -m steps.<name>
        module = module.replace("<name>", "train")
    assert importlib.util.find_spec(module) is not None, f"no module {module}"
    if module in TAKES_OVERRIDES:
        overrides = [a for a in args if "=" in a and not a.startswith("-")]
        if overrides:
            composes(" ".join(shlex.quote(o) for o in overrides) if "-m" not in args else "-m " + " ".join(overrides))


def check_curl(command: str) -> None:
    (path,) = re.findall(r"(?:https?://)?(?:127\.0\.0\.1|localhost):\d+(/[^\s'\"?]*)", command)
    assert path in ROUTES, f"the scoring server has no route {path}"


def check_uvicorn(words: list[str]) -> None:
    target = next(w for w in words[1:] if ":" in w and not w.startswith("-"))
    module, _, attribute = target.partition(":")
    assert hasattr(importlib.import_module(module), attribute), f"{module} has no {attribute}"


@pytest.mark.parametrize("where, command", COMMANDS_SHOWN, ids=[f"{w}: {c[:60]}" for w, c in COMMANDS_SHOWN])
def test_a_command_the_docs_show_names_what_exists(where, command):
    if command.startswith("curl"):  # its JSON body may go on over the next lines
        check_curl(command)
        return
    words = shlex.split(command)
    head = words[0].removeprefix(".venv/bin/")
    if head == "python":
        assert words[1] == "-m", command
        check_python(words)
    else:
        {"make": check_make, "mlflow": check_mlflow, "uvicorn": check_uvicorn}[head]([head, *words[1:]])


def test_the_docs_show_commands_of_each_kind():
    heads = {command.split()[0].removeprefix(".venv/bin/") for _, command in COMMANDS_SHOWN}
    assert {"make", "mlflow", "python", "curl"} <= heads
    assert len(COMMANDS_SHOWN) > 100


def test_a_wrong_command_is_caught():
    for wrong in (
        ["make", "deploy"],
        ["make", "run", "HYDRA_OPTIONS=model.nonexistent=1"],
        ["mlflow", "run", ".", "-e", "publish"],
        ["python", "-m", "ops.redeploy"],
        ["python", "-m", "pipeline.main", "-m", "model=knn", "model.C=0.1,1"],
    ):
        check = {"make": check_make, "mlflow": check_mlflow, "python": check_python}[wrong[0]]
        with pytest.raises(Exception):  # noqa: B017 - an AssertionError or Hydra's own
            check(wrong)
    with pytest.raises(AssertionError, match="no route /predict"):
        check_curl("curl -s http://127.0.0.1:5001/predict -d '{")
