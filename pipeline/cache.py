"""Content-addressed step cache.

A step's key is the SHA-256 of its components:

- ``params``: the MLproject parameters it is given (canonical JSON);
- ``config``: the resolved config sections it reads (``pipeline.graph``);
- ``code``: the bytes of the project files it runs, uncommitted edits included
  (the module its ``MLproject`` command starts and every project module that
  one imports, directly or not, found by reading their imports), and its entry
  point's definition in ``MLproject``;
- ``inputs``: the keys of the upstream steps whose outputs it consumes;
- ``data``: the data digest (``train`` only);
- ``packages``: the installed versions of the packages the pipeline depends on;
- ``lock``: the SHA-256 of ``requirements.lock`` (itself, not digested again): a
  changed lock misses every step, even where the packages above kept their versions.

After a step run finishes, ``main`` tags it with the key (``pipeline.cache_key``)
and each component digest (``pipeline.cache.<component>``). A later step with
the same key reuses the newest FINISHED run with that key: failed or killed
runs carry no key, or are not FINISHED, and are never hits. On a miss, the
reason names the components that differ from the step's previous finished run.
"""

from __future__ import annotations

import ast
import functools
import re
from collections.abc import Mapping
from dataclasses import dataclass, field
from pathlib import Path

from omegaconf import DictConfig, OmegaConf

from core import contracts
from core.digests import files_digest, json_digest
from core.registry import parse_registered_uri
from pipeline import graph
from pipeline.processes.loading import collector_paused
from pipeline.processes.step import outputs_of

CODE_ROOT = contracts.PROJECT_DIR
CACHE_KEY_TAG = "pipeline.cache_key"
COMPONENT_TAG_PREFIX = "pipeline.cache."


@dataclass(frozen=True)
class StepKey:
    step: str
    components: Mapping[str, str]

    @property
    def key(self) -> str:
        return json_digest({"step": self.step, **self.components})


@dataclass(frozen=True)
class Lookup:
    hit_run_id: str | None
    reason: str
    outputs: Mapping[str, str] = field(default_factory=dict)  # the hit's (pipeline.processes.step.outputs_of)

    @property
    def hit(self) -> bool:
        return self.hit_run_id is not None


def step_key(
    step: str,
    params: Mapping[str, str],
    cfg: DictConfig,
    upstream_keys: Mapping[str, str],
    packages: Mapping[str, str],
    data_digest: str | None = None,
    lock: str = "",
) -> StepKey:
    """The cache key of ``step`` for these parameters, config, code, inputs, packages and
    dependency lock (``lock``: its SHA-256, :func:`core.dependencies.lock_sha256`)."""
    config = {
        section: OmegaConf.to_container(OmegaConf.select(cfg, section), resolve=True)
        if OmegaConf.is_config(OmegaConf.select(cfg, section))
        else OmegaConf.select(cfg, section)
        for section in graph.BY_NAME[step].config
    }
    # The data digest that main passes to train is the "data" component, not a param.
    given = [name for name, keys in graph.BY_NAME[step].params.items() if keys == (graph.DATA_DIGEST,)]
    own_params = {name: value for name, value in params.items() if name not in given}
    components = {
        "params": json_digest(own_params),
        "config": json_digest(config),
        "code": json_digest(
            {
                "files": files_digest(
                    sorted(
                        {
                            *step_code_files(step),
                            *(f for module in target_modules(config) for f in imported_files(module)),
                        }
                    ),
                    root=CODE_ROOT,
                ),
                "entry_point": entry_point_definition(step),
            }
        ),
        "inputs": json_digest({name: upstream_keys[name] for name in graph.upstream(step)}),
        "packages": json_digest(dict(packages)),
        "lock": lock,
    }
    if step == "train":
        components["data"] = data_digest or ""
    return StepKey(step, components)


def entry_point_definition(step: str) -> dict:
    """The step's entry point in MLproject: its parameters and command."""
    return _parsed(CODE_ROOT / "MLproject", "yaml")["entry_points"][step]


def _parsed(path: Path, kind: str):
    """``path`` parsed (``yaml``, or ``python``: the imports it holds, :func:`_imports`),
    once per version of the file in this process: every step's key reads MLproject and
    the modules the steps share."""
    stat = path.stat()
    return _parse(path, kind, stat.st_mtime_ns, stat.st_size)


@functools.lru_cache(maxsize=512)
def _parse(path: Path, kind: str, mtime_ns: int, size: int):
    if kind == "yaml":
        import yaml

        return yaml.safe_load(path.read_text())
    # Parsing makes many objects at once; the collector would walk the whole heap (mlflow
    # and its store are imported by now) again and again: 3 to 4 times the parse itself.
    with collector_paused():
        return _imports(ast.parse(path.read_text(), filename=str(path)))


def _imports(tree: ast.AST) -> tuple[tuple[int, str, tuple[str, ...]], ...]:
    """Each ``import`` statement anywhere in ``tree``, function-local ones included, as
    (level, module, names): ``import a.b`` -> (0, "a.b", ()); ``from ..c import d`` ->
    (2, "c", ("d",))."""
    found = []
    for node in ast.walk(tree):
        if isinstance(node, ast.Import):
            found.extend((0, alias.name, ()) for alias in node.names)
        elif isinstance(node, ast.ImportFrom):
            found.append((node.level, node.module or "", tuple(alias.name for alias in node.names)))
    return tuple(found)


LAUNCHER = "pipeline.processes.launch"  # ``python -m pipeline.processes.launch <module> ...`` runs <module>


def step_module(step: str) -> str:
    """The module ``step`` runs: the one its MLproject command starts (``python -m
    <module>``), or the one it has :data:`LAUNCHER` run."""
    command = entry_point_definition(step)["command"]
    found = re.search(rf"python -m (?:{re.escape(LAUNCHER)} )?([\w.]+)", command)
    if found is None:
        raise ValueError(f"MLproject entry point {step!r} does not start a module (python -m ...): {command}")
    return found.group(1)


def step_code_files(step: str) -> list[str]:
    """The project files ``step`` runs: its module (:func:`step_module`), the launcher
    when the command starts one, and every project module they import."""
    launched = f"python -m {LAUNCHER} " in entry_point_definition(step)["command"]
    return sorted({*imported_files(step_module(step)), *(imported_files(LAUNCHER) if launched else ())})


def imported_files(module: str, root: Path | None = None) -> list[str]:
    """The source files (relative to ``root``) of ``module`` and of every project module
    it imports, transitively: ``import`` statements anywhere in the file, function-local
    ones included, and the ``__init__.py`` of each package on the way. Modules that are
    not files under ``root`` (the standard library, installed packages) are left out.
    """
    root = root or CODE_ROOT
    seen: set[str] = set()
    pending = [module]
    while pending:
        name = pending.pop()
        path = _module_file(name, root)
        if path is None or path in seen:
            continue
        seen.add(path)
        parts = name.split(".")
        pending.extend(".".join(parts[:depth]) for depth in range(1, len(parts)))
        package = parts if path.endswith("__init__.py") else parts[:-1]
        for level, imported, names in _parsed(root / path, "python"):
            if not level and not names:
                pending.append(imported)
                continue
            # "from .x import y" is relative to the importing module's package.
            base = package[: len(package) - level + 1] if level else []
            source = ".".join([*base, *([imported] if imported else [])])
            # "from package import name": name may be a submodule or an attribute.
            pending.append(source)
            pending.extend(f"{source}.{name}" for name in names)
    return sorted(seen)


def target_modules(cfg_sections) -> list[str]:
    """The modules named by the ``_target_`` keys anywhere in ``cfg_sections``: code a
    step runs that no import statement names (Hydra imports it when it instantiates)."""
    found = []

    def walk(node):
        if isinstance(node, dict):
            target = node.get("_target_")
            if isinstance(target, str) and "." in target:
                found.append(target.rsplit(".", 1)[0])
            for value in node.values():
                walk(value)
        elif isinstance(node, list):
            for value in node:
                walk(value)

    walk(cfg_sections)
    return found


def _module_file(name: str, root: Path) -> str | None:
    base = root.joinpath(*name.split("."))
    for candidate in (base.with_suffix(".py"), base / "__init__.py"):
        if candidate.is_file():
            return candidate.relative_to(root).as_posix()
    return None


def parse_force(value: str) -> frozenset[str]:
    """``""`` -> none, ``"all"`` -> every step, ``"train,evaluate"`` -> those steps."""
    names = {name.strip() for name in value.split(",") if name.strip()}
    if "all" in names:
        return frozenset(graph.NAMES)
    unknown = sorted(names - set(graph.NAMES))
    if unknown:
        raise ValueError(f"force: unknown step(s) {unknown}; use 'all' or any of {', '.join(graph.NAMES)}")
    return frozenset(names)


def _search(experiment_id: str, filter_string: str, max_results: int = 1):
    import mlflow

    return mlflow.search_runs(
        experiment_ids=[experiment_id],
        filter_string=filter_string,
        order_by=["attributes.start_time DESC"],
        max_results=max_results,
        output_format="list",
    )


def lookup(step_key_: StepKey, experiment_id: str, forced: bool, still_valid=None) -> Lookup:
    """Find a FINISHED run of the same step with the same key, or say why there is none.

    ``still_valid(outputs)``, if given, returns why a matching run's outputs no
    longer hold (evaluate: the champion has moved since its decision), or None.
    """
    step = step_key_.step
    if forced:
        return Lookup(None, "forced")
    hits = _search(experiment_id, f"tags.`{CACHE_KEY_TAG}` = '{step_key_.key}' and attributes.status = 'FINISHED'")
    for run in hits:
        outputs = outputs_of(run)
        problem = _stale_outputs(run.info.run_id, outputs)
        if problem is None and still_valid is not None:
            problem = still_valid(outputs)
        if problem is None:
            return Lookup(run.info.run_id, f"same inputs as run {run.info.run_id}", outputs)
        return Lookup(None, problem)
    previous = _search(
        experiment_id,
        f"tags.`{contracts.STEP_TAG}` = '{step}' and attributes.status = 'FINISHED' and tags.`{CACHE_KEY_TAG}` != ''",
    )
    if not previous:
        return Lookup(None, f"no earlier finished {step} run")
    tags = previous[0].data.tags
    changed = [name for name, digest in step_key_.components.items() if tags.get(COMPONENT_TAG_PREFIX + name) != digest]
    return Lookup(None, f"{', '.join(changed) or 'key'} changed since run {previous[0].info.run_id}")


def _stale_outputs(run_id: str, outputs: Mapping[str, str]) -> str | None:
    """Why a cached run's outputs can no longer be reused, or None if they can."""
    from mlflow import MlflowClient
    from mlflow.exceptions import MlflowException

    uri = outputs.get("registered_model_uri")
    if uri:
        name, model_version = parse_registered_uri(uri)
        try:
            MlflowClient().get_model_version(name, model_version)
        except MlflowException:
            return f"cached output {uri} of run {run_id} no longer exists"
    return None


def record(run_id: str, step_key_: StepKey) -> None:
    """Tag a finished step run with its key and components, making it reusable."""
    from mlflow import MlflowClient

    client = MlflowClient()
    for name, digest in step_key_.components.items():
        client.set_tag(run_id, COMPONENT_TAG_PREFIX + name, digest)
    # The key last: a run is a hit only once every component is recorded.
    client.set_tag(run_id, CACHE_KEY_TAG, step_key_.key)
