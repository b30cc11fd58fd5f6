"""The step graph, declared once: the steps in order, the MLproject parameters each
takes and which earlier output fills each, the config sections each reads, and the
outputs each publishes (run tags ``pipeline.output.<key>``).

The driver (``pipeline.run``) passes parameters and counts steps from it, the
cache key (``pipeline.cache``) takes the config sections and upstream steps from it,
and a test checks ``MLproject``'s entry points against it.
"""

from __future__ import annotations

from collections.abc import Mapping
from dataclasses import dataclass

# Given by the driver rather than produced by a step: the data's digest, computed
# before any step runs so that a missing data file fails at once.
DATA_DIGEST = "data_digest"


@dataclass(frozen=True)
class Step:
    name: str  # the MLproject entry point and the module steps/<name>.py
    # MLproject parameter -> the output keys that can fill it, the first one present wins.
    params: Mapping[str, tuple[str, ...]]
    config: tuple[str, ...]  # config keys it reads (whole sections or dotted keys)
    outputs: tuple[str, ...]  # keys it may publish


STEPS: tuple[Step, ...] = (
    Step(
        "train",
        params={"data_digest": (DATA_DIGEST,)},
        config=("data", "model"),
        outputs=("model_uri", "holdout_uri", "columns_left_out"),
    ),
    Step("serialize", params={"model_uri": ("model_uri",)}, config=(), outputs=("joblib_uri", "joblib_sha256")),
    Step(
        "package_pyfunc",
        params={"joblib_uri": ("joblib_uri",), "joblib_sha256": ("joblib_sha256",), "example_uri": ("holdout_uri",)},
        config=("registry",),
        outputs=("pyfunc_model_uri", "registered_model_uri", "registered_model_version"),
    ),
    Step(
        "evaluate",
        params={
            # The registered version; with registry.register=false, the logged model.
            "model_uri": ("registered_model_uri", "pyfunc_model_uri"),
            "reference_model_uri": ("model_uri",),
            "holdout_uri": ("holdout_uri",),
        },
        config=("data.target", "validation", "registry", "gate"),
        outputs=("validation_status", "gate_outcome", "champion_version"),
    ),
)

NAMES: tuple[str, ...] = tuple(step.name for step in STEPS)
BY_NAME: Mapping[str, Step] = {step.name: step for step in STEPS}
# Every MLproject entry point of a step also takes the Hydra overrides.
HYDRA_OPTIONS = "hydra_options"


def producer(key: str) -> str | None:
    """The step that publishes output ``key`` (None for what the driver gives)."""
    return next((step.name for step in STEPS if key in step.outputs), None)


def upstream(name: str) -> tuple[str, ...]:
    """The earlier steps whose outputs step ``name`` consumes, in pipeline order."""
    used = {producer(key) for keys in BY_NAME[name].params.values() for key in keys}
    return tuple(step for step in NAMES if step in used)


def params_for(name: str, outputs: Mapping[str, str]) -> dict[str, str]:
    """Step ``name``'s MLproject parameters from the outputs gathered so far."""
    params = {}
    for param, keys in BY_NAME[name].params.items():
        found = next((outputs[key] for key in keys if outputs.get(key)), None)
        if found is None:
            raise KeyError(f"step {name}: no output {' or '.join(keys)} for parameter {param!r}")
        params[param] = found
    return params
