"""A composed config read back without composing it again, so that a process that is
handed one, or that composed the same before, neither imports Hydra nor composes.

- Handed down: the driver puts the config it composed in each step's environment
  (:func:`hand_down`, ``pipeline.step.handed_to_step``); the step reads it back
  (:func:`config_for`).
- Kept: :func:`load_config` keeps each config it composes in ``.cache/config/``, by what
  composing it depends on (:func:`composition_key`); the next process with the same
  overrides, ``conf/`` and schema reads it back (a cached rerun: ``ops.retrain``).

Either way the YAML is read back as composing returns it: typed by the schema, struct,
its ranges checked, and ``${oc.env:...}`` resolved where it is used.
"""

from __future__ import annotations

import re
from collections.abc import Sequence
from pathlib import Path

from omegaconf import DictConfig, OmegaConf

from core import config, contracts
from core.contracts import PROJECT_DIR

# Set by the driver for the step it starts (``pipeline.step.handed_to_step``): the config
# it composed and the overrides it composed it from, as JSON.
HANDED_DOWN_ENV = "PIPELINE_CONFIG"


def hand_down(cfg: DictConfig, overrides: Sequence[str]) -> str:
    """``cfg`` as :func:`config_for` reads it back: its YAML unresolved (``${oc.env:...}``
    resolves in the step's environment, as when it composes), keyed by its overrides."""
    import json

    return json.dumps({"overrides": list(overrides), "config": OmegaConf.to_yaml(cfg)})


def config_for(overrides: Sequence[str]) -> DictConfig:
    """The config for ``overrides``: the one the driver composed and handed down when it
    was composed from the same overrides (a step then neither imports Hydra nor composes:
    about 0.13 s of each step's start), else :func:`load_config`'s."""
    import json
    import os

    try:
        handed = json.loads(os.environ.get(HANDED_DOWN_ENV) or "{}")
    except ValueError:  # not the driver's: a variable of the same name set for something else
        handed = None
    if not isinstance(handed, dict) or handed.get("overrides") != list(overrides) or "config" not in handed:
        return load_config(overrides)
    return _typed(handed["config"])


def _typed(text: str) -> DictConfig:
    """A composed config's YAML (:func:`hand_down`) read back as composing returns it: typed
    by the schema, struct, its ranges checked."""
    cfg = OmegaConf.merge(OmegaConf.structured(config.Config), OmegaConf.create(text))
    OmegaConf.set_struct(cfg, True)
    config.check_ranges(cfg)
    return cfg


# Configs composed before, by what they were composed from (:func:`load_config`): in
# $PIPELINE_CONFIG_CACHE if set (empty: none kept), else here.
CACHE_ENV = "PIPELINE_CONFIG_CACHE"
CACHE_DIR = PROJECT_DIR / ".cache" / "config"
CACHE_LIMIT = 256  # files kept; the oldest go first


def cache_dir() -> Path | None:
    import os

    chosen = os.environ.get(CACHE_ENV)
    if chosen is None:
        return CACHE_DIR
    return Path(chosen) if chosen else None


def composition_key(overrides: Sequence[str]) -> str:
    """What composing ``overrides`` depends on: the overrides, every file under ``conf/``
    (names and bytes), the schema (``core/config.py``, and the defaults it takes from
    ``core/contracts.py``), and the versions of Hydra and OmegaConf."""
    import os
    from importlib.metadata import version

    import omegaconf

    from core.digests import files_digest, json_digest

    conf = [Path(folder, name).relative_to(config.CONF_DIR)  # symlinked folders followed, as Hydra does
            for folder, _, names in os.walk(config.CONF_DIR, followlinks=True) for name in names]
    schema = [Path(module.__file__).relative_to(PROJECT_DIR) for module in (config, contracts)]
    return json_digest({
        "overrides": list(overrides),
        "conf": files_digest(conf, root=config.CONF_DIR),
        "schema": files_digest(schema, root=PROJECT_DIR),
        "versions": [version("hydra-core"), omegaconf.__version__],
    })


def load_config(overrides: Sequence[str] = ()) -> DictConfig:
    """:func:`core.config.compose_config`, remembered: a config composed from the same
    overrides, the same ``conf/`` and the same schema (:func:`composition_key`) is read back from
    ``.cache/config/`` (:func:`cache_dir`) without importing Hydra (about 0.15 s of a
    cached rerun). A kept file that is not whole, or not as it was written, is composed
    again; one that cannot be written is not kept. Errors are never kept: a bad override
    fails each time, with Hydra's message."""
    import hashlib
    import json

    where = cache_dir()
    # Overrides of Hydra's own settings (hydra.searchpath=...) reach files the key does not read.
    if where is None or any(o.lstrip("+~").startswith("hydra") for o in overrides):
        return config.compose_config(overrides)
    key = composition_key(overrides)
    path = where / f"{key}.json"
    try:
        kept = json.loads(path.read_text())
        text = kept["config"]
        if kept["key"] == key and kept["sha256"] == hashlib.sha256(text.encode()).hexdigest():
            return _typed(text)
    except Exception:  # noqa: BLE001, S110 - missing, unreadable or damaged: composed, as with no cache
        pass
    cfg = config.compose_config(overrides)
    text = OmegaConf.to_yaml(cfg)
    _keep(path, json.dumps({"key": key, "sha256": hashlib.sha256(text.encode()).hexdigest(), "config": text}))
    return cfg


KEPT_NAME = re.compile(r"[0-9a-f]{64}\.json")  # what load_config writes; nothing else is removed
STALE_SECONDS = 3600  # a half-written file this old was left by a process that died


def _keep(path: Path, content: str) -> None:
    """Write ``path`` whole or not at all (a reader never sees half a file), readable as a
    file the process creates normally is (another user of the checkout reads it too); then
    drop the oldest kept configs beyond :data:`CACHE_LIMIT`, and half-written files that a
    process that died left behind."""
    import os
    import tempfile
    import time

    tmp = None
    try:
        path.parent.mkdir(parents=True, exist_ok=True)
        with tempfile.NamedTemporaryFile("w", dir=path.parent, suffix=".tmp", delete=False) as tmp:
            tmp.write(content)
        umask = os.umask(0)
        os.umask(umask)
        os.chmod(tmp.name, 0o666 & ~umask)
        os.replace(tmp.name, path)
        kept = sorted((p for p in path.parent.iterdir() if KEPT_NAME.fullmatch(p.name)),
                      key=lambda p: p.stat().st_mtime_ns)
        for old in kept[:-CACHE_LIMIT]:
            old.unlink(missing_ok=True)
        for left in path.parent.glob("tmp*.tmp"):
            if time.time() - left.stat().st_mtime > STALE_SECONDS:
                left.unlink(missing_ok=True)
    except OSError:  # a read-only checkout, a full disk, a file removed meanwhile: compose next time
        if tmp is not None:
            Path(tmp.name).unlink(missing_ok=True)
