"""The config the driver composed, handed down to each step it starts, so that every step
of one pipeline uses the config composed once, from the same ``conf/``, at its start.

The driver puts it in each step's environment (:func:`hand_down`,
``pipeline.processes.step.handed_to_step``); the step reads it back (:func:`config_for`) as
composing returns it: typed by the schema, struct, its ranges checked, and
``${oc.env:...}`` resolved where it is used. A step started on its own composes it.
"""

from __future__ import annotations

from collections.abc import Sequence

from omegaconf import DictConfig, OmegaConf

from core import config

# Set by the driver for the step it starts (``pipeline.processes.step.handed_to_step``): the config
# it composed and the overrides it composed it from, as JSON.
HANDED_DOWN_ENV = "PIPELINE_CONFIG"


def hand_down(cfg: DictConfig, overrides: Sequence[str]) -> str:
    """``cfg`` as :func:`config_for` reads it back: its YAML unresolved (``${oc.env:...}``
    resolves in the step's environment, as when it composes), keyed by its overrides."""
    import json

    return json.dumps({"overrides": list(overrides), "config": OmegaConf.to_yaml(cfg)})


def config_for(overrides: Sequence[str]) -> DictConfig:
    """The config for ``overrides``: the one the driver composed and handed down when it
    was composed from the same overrides, else composed here."""
    import json
    import os

    try:
        handed = json.loads(os.environ.get(HANDED_DOWN_ENV) or "{}")
    except ValueError:  # not the driver's: a variable of the same name set for something else
        handed = None
    if not isinstance(handed, dict) or handed.get("overrides") != list(overrides) or "config" not in handed:
        return config.compose_config(overrides)
    return _typed(handed["config"])


def _typed(text: str) -> DictConfig:
    """A composed config's YAML (:func:`hand_down`) read back as composing returns it: typed
    by the schema, struct, its ranges checked."""
    cfg = OmegaConf.merge(OmegaConf.structured(config.Config), OmegaConf.create(text))
    OmegaConf.set_struct(cfg, True)
    config.check_ranges(cfg)
    return cfg
