"""The Hydra config: its schema, and composing ``conf/`` from overrides as every command does.

The YAML files in ``conf/`` give the values; the dataclasses here give them types,
registered in Hydra's ConfigStore as ``schema`` (the first entry of
``conf/config.yaml``'s defaults). A misspelt key (``gate.keep_method=false``), a value
of the wrong type (``gate.metrics.accuracy.tolerance=abc``) or an unknown choice
(``sweep.metric=recall``) fails when the config is composed, with Hydra's message,
before any run starts. ``model`` stays free-form: it is whatever the estimator named
by its ``_target_`` accepts.
"""

from __future__ import annotations

import math
import re
from collections.abc import Mapping, Sequence
from dataclasses import dataclass, field
from enum import Enum
from typing import Any, Optional

from omegaconf import MISSING, DictConfig, OmegaConf

from core.contracts import CHAMPION_ALIAS, CONF_DIR, CONFIG_NAME, MODEL_NAME
from core.drift_config import DRIFT_RANGES, DriftConfig

SCHEMA_NAME = "schema"


class Metric(str, Enum):
    """The holdout metrics (``core.metrics.HOLDOUT_METRICS``) a sweep can rank jobs by."""

    accuracy = "accuracy"
    f1_macro = "f1_macro"
    roc_auc_ovr = "roc_auc_ovr"
    log_loss = "log_loss"


class Candidates(str, Enum):
    """What a sweep does with the models of the jobs that are not the best."""

    register = "register"  # registered as versions without an alias
    none = "none"  # not registered


class Dates(str, Enum):
    """What training does with feature columns of dates or times (``core.profile``)."""

    refuse = "refuse"  # stop, naming the columns
    days = "days"  # train on them as days since 1970-01-01 (a float; clients send that number)


@dataclass
class DataConfig:
    loader: Any = MISSING  # {_target_: callable returning a DataFrame, ...its arguments}
    path: Optional[str] = None  # the file data=file reads
    features: Optional[list[str]] = None  # None: every column except the target (core.profile)
    drop: list[str] = field(default_factory=list)  # columns left out, whatever they look like
    dates: Dates = Dates.refuse
    target: str = "target"
    test_size: float = 0.2  # fraction of rows held out, strictly between 0 and 1
    random_state: int = 0
    stratify: bool = True
    max_duplicate_share: float = 0.9  # more repeated rows than this share: refused


@dataclass
class RegistryConfig:
    model_name: str = MODEL_NAME
    champion_alias: str = CHAMPION_ALIAS
    register: bool = True


@dataclass
class GateMetric:
    greater_is_better: bool = True
    tolerance: float = 0.0
    threshold: Optional[float] = None


@dataclass
class GateConfig:
    metrics: dict[str, GateMetric] = field(default_factory=dict)
    challenger_alias: str = "challenger"
    previous_champion_alias: str = "previous_champion"
    keep_methods: bool = True
    allow_schema_change: bool = False  # a version with other input columns may replace the champion
    enabled: bool = True


@dataclass
class ValidationConfig:
    atol: float = 1e-9


@dataclass
class SweepConfig:
    metric: Metric = Metric.accuracy
    candidates: Candidates = Candidates.register


@dataclass
class ExperimentConfig:
    name: str = MISSING  # the MLflow experiment every run of the pipeline goes to; created if missing


@dataclass
class Config:
    experiment: ExperimentConfig = MISSING
    data: DataConfig = MISSING
    model: Any = MISSING
    registry: RegistryConfig = MISSING
    gate: GateConfig = MISSING
    validation: ValidationConfig = field(default_factory=ValidationConfig)
    sweep: SweepConfig = field(default_factory=SweepConfig)
    drift: DriftConfig = field(default_factory=DriftConfig)


def register_schema() -> None:
    """Register :class:`Config` as ``schema`` in Hydra's ConfigStore before Hydra composes ``conf/``;
    not at import: a step handed its config (``core.composed``) never imports Hydra."""
    from hydra.core.config_store import ConfigStore

    ConfigStore.instance().store(name=SCHEMA_NAME, node=Config)


# A run of non-space characters and quoted strings (which may contain spaces).
_OVERRIDE_TOKEN = re.compile(r"""(?:[^\s'"]+|'[^']*'|"[^"]*")+""")


def split_overrides(args: Sequence[str]) -> list[str]:
    """Turn command-line arguments into a flat list of Hydra overrides.

    ``mlflow run -P hydra_options="a=1 b=2"`` shell-quotes the value, so it arrives
    as one argument (and an empty value as ``''``). Each argument is split on
    whitespace outside quotes, and the quotes are kept for Hydra to parse
    (``registry.model_name='a b'`` stays one override). An override quoted whole,
    as a shell would take it (``make run HYDRA_OPTIONS="'data.features=[a,b]'"``,
    where the shell keeps the inner quotes), loses those outer quotes.
    """
    overrides: list[str] = []
    for arg in args:
        if _OVERRIDE_TOKEN.sub("", arg).strip():
            raise ValueError(f"Unbalanced quotes in Hydra overrides: {arg!r}")
        overrides.extend(_unquoted_whole(token) for token in _OVERRIDE_TOKEN.findall(arg))
    return overrides


def _unquoted_whole(token: str) -> str:
    """``'key=value'`` as ``key=value``; refused when that would not stay one override
    (the pipeline hands its overrides on to each step as one string)."""
    quote, inner = token[0], token[1:-1]
    if len(token) < 2 or quote not in "'\"" or token[-1] != quote or quote in inner or "=" not in inner:
        return token
    if _OVERRIDE_TOKEN.findall(inner) != [inner]:
        key, _, value = inner.partition("=")
        if value.startswith("[") and value.endswith("]"):
            value = "[" + ",".join(f"'{item.strip()}'" for item in value[1:-1].split(",")) + "]"
        else:
            value = f"'{value}'"
        raise ValueError(
            f"Hydra override {token} is quoted whole and holds a space: quote the value instead, as {key}={value}"
        )
    return inner


MULTIRUN_FLAGS = ("-m", "--multirun")


def multirun_flag(argv: Sequence[str]) -> tuple[bool, list[str]]:
    """(whether ``argv`` asks for a sweep, ``argv`` without the flag).

    The flag is ``-m``/``--multirun`` as an argument of its own, or at the start
    of one: ``mlflow run -P hydra_options="-m a=1,2"`` passes ``-m a=1,2`` as one.
    """
    found, rest = False, []
    for arg in argv:
        head, _, tail = arg.partition(" ")
        if head in MULTIRUN_FLAGS:
            found = True
            if tail.strip():
                rest.append(tail.strip())
        else:
            rest.append(arg)
    return found, rest


def build_estimator(model_cfg):
    """The estimator ``model`` configures, built by ``hydra.utils.instantiate`` with lists and mappings
    as plain Python (scikit-learn does not know OmegaConf's, and a model holding them needs OmegaConf)."""
    from hydra.utils import instantiate

    return instantiate(model_cfg, _convert_="all")


def is_override_error(err: Exception) -> bool:
    """Whether ``err`` is a bad override or setting (Hydra's and OmegaConf's errors as composing
    raises them, or ``ValueError``); Hydra is imported only to tell (``core.composed``)."""
    if isinstance(err, ValueError):
        return True
    from hydra.errors import HydraException

    return isinstance(err, HydraException)


def describe_error(err: Exception) -> str:
    """A Hydra or OmegaConf error on one line, with the cause Hydra keeps apart:
    ``Error merging override sweep.metric=recall: Invalid value 'recall', expected
    one of [accuracy, f1_macro, roc_auc_ovr, log_loss]``."""
    message = " ".join(str(err).split())
    # Hydra suggests "+key=value" for a key that does not exist; the schema refuses those too.
    message = re.sub(r"\s*To append to your config use \+\S+", "", message)
    cause = err.__cause__
    if cause is not None:
        detail = str(cause).strip().splitlines()[0] if str(cause).strip() else type(cause).__name__
        full_key = getattr(cause, "full_key", None)
        message += f": {detail}" + (f" (key {full_key})" if full_key and full_key not in detail else "")
    return message


# Ranges the types cannot say: (key, test, what it must be). ``*`` stands for each key
# of a mapping (each gated metric). NaN fails every test, as it fails every comparison.
RANGES = (
    ("experiment.name", lambda v: bool(v.strip()), "a name, not empty"),
    ("data.test_size", lambda v: 0 < v < 1, "a fraction strictly between 0 and 1"),
    ("data.max_duplicate_share", lambda v: 0 <= v <= 1, "a share between 0 and 1"),
    # What scikit-learn accepts as a seed.
    ("data.random_state", lambda v: 0 <= v < 2**32, "an integer from 0 to 2**32 - 1"),
    ("validation.atol", lambda v: 0 <= v < math.inf, "a finite number, zero or more"),
    ("gate.metrics.*.tolerance", lambda v: 0 <= v < math.inf, "a finite number, zero or more"),
    ("gate.metrics.*.threshold", lambda v: math.isfinite(v), "a finite number, or null for none"),
    *DRIFT_RANGES,
)


def _selected(cfg: DictConfig, pattern: str):
    """(key, value) for each key ``pattern`` names; ``*`` expands to every key of that mapping."""
    head, star, tail = pattern.partition(".*.")
    if not star:
        yield pattern, OmegaConf.select(cfg, pattern)
        return
    node = OmegaConf.select(cfg, head)
    for key in node or ():
        yield from _selected(cfg, f"{head}.{key}.{tail}")


def check_ranges(cfg: DictConfig) -> None:
    """Refuse values of the right type but out of range, and keys the schema does not have
    (added with ``+key=value``), as Hydra refuses a wrong type."""
    import dataclasses

    def refuse(message: str):
        # Hydra's own error, as composing raises; imported only to raise it.
        from hydra.errors import ConfigCompositionException

        raise ConfigCompositionException(message)

    def unknown(node, path):
        kind = OmegaConf.get_type(node)
        if dataclasses.is_dataclass(kind):
            fields = {f.name for f in dataclasses.fields(kind)}
            for key in node:
                if key not in fields:
                    yield f"{path}{key}"
                elif OmegaConf.is_dict(node[key]):
                    yield from unknown(node[key], f"{path}{key}.")
        elif OmegaConf.is_dict(node):
            for key in node:
                if OmegaConf.is_dict(node[key]):
                    yield from unknown(node[key], f"{path}{key}.")

    for section in ("experiment", "data", "registry", "gate", "validation", "sweep", "drift"):
        extra = list(unknown(cfg[section], f"{section}.")) if section in cfg else []
        if extra:
            refuse(f"{', '.join(extra)}: no such setting (see core/config.py)")
    for pattern, ok, expected in RANGES:
        for key, value in _selected(cfg, pattern):
            if value is not None and not ok(value):
                refuse(f"{key}={value} is out of range: it must be {expected}")


def compose_config(overrides: Sequence[str] = ()) -> DictConfig:
    """Compose ``conf/config.yaml`` with Hydra overrides.

    Raises Hydra's own exceptions (e.g. ``ConfigCompositionException``) for an
    unknown key or a malformed override; they name the offending override.
    """
    from hydra import compose, initialize_config_dir

    register_schema()
    with initialize_config_dir(config_dir=str(CONF_DIR), version_base="1.3"):
        cfg = compose(config_name=CONFIG_NAME, overrides=list(overrides))
    check_ranges(cfg)
    return cfg


EXPERIMENT_KEY = "experiment.name"


def experiment_name(overrides: Sequence[str]) -> str:
    """The experiment ``conf/`` names with these overrides (a sweep's included: only
    ``experiment.name`` is read, and it cannot be swept: a sweep's runs share one experiment)."""
    from hydra.core.override_parser.overrides_parser import OverridesParser

    parsed = OverridesParser.create().parse_overrides([o for o in overrides if o not in MULTIRUN_FLAGS])
    chosen = [o for o in parsed if o.key_or_group == EXPERIMENT_KEY]
    if any(o.is_sweep_override() for o in chosen):
        raise ValueError(f"{EXPERIMENT_KEY} cannot be swept: the runs of a sweep share one experiment")
    return compose_config([o.input_line for o in chosen]).experiment.name


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
