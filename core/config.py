"""Composing the Hydra config (``conf/``) from overrides, as every command does."""

from __future__ import annotations

import re
from collections.abc import Mapping, Sequence

from hydra import compose, initialize_config_dir
from omegaconf import DictConfig

from core.contracts import CONF_DIR, CONFIG_NAME

# A run of non-space characters and quoted strings (which may contain spaces).
_OVERRIDE_TOKEN = re.compile(r"""(?:[^\s'"]+|'[^']*'|"[^"]*")+""")


def split_overrides(args: Sequence[str]) -> list[str]:
    """Turn command-line arguments into a flat list of Hydra overrides.

    ``mlflow run -P hydra_options="a=1 b=2"`` shell-quotes the value, so it arrives
    as one argument (and an empty value as ``''``). Each argument is split on
    whitespace outside quotes, and the quotes are kept for Hydra to parse
    (``registry.model_name='a b'`` stays one override).
    """
    overrides: list[str] = []
    for arg in args:
        if _OVERRIDE_TOKEN.sub("", arg).strip():
            raise ValueError(f"Unbalanced quotes in Hydra overrides: {arg!r}")
        overrides.extend(_OVERRIDE_TOKEN.findall(arg))
    return overrides


def compose_config(overrides: Sequence[str] = ()) -> DictConfig:
    """Compose ``conf/config.yaml`` with Hydra overrides.

    Raises Hydra's own exceptions (e.g. ``ConfigCompositionException``) for an
    unknown key or a malformed override; they name the offending override.
    """
    with initialize_config_dir(config_dir=str(CONF_DIR), version_base="1.3"):
        return compose(config_name=CONFIG_NAME, overrides=list(overrides))


def flatten(cfg: Mapping, prefix: str = "") -> dict[str, object]:
    """Flatten a nested mapping into dotted keys, for ``mlflow.log_params``."""
    flat: dict[str, object] = {}
    for key, value in cfg.items():
        name = f"{prefix}{key}"
        if isinstance(value, Mapping):
            flat.update(flatten(value, prefix=f"{name}."))
        else:
            flat[name] = value
    return flat
