"""Config composition and overrides (the pinned environment: tests/unit/test_dependencies.py)."""

from __future__ import annotations

import importlib
from pathlib import Path

import pandas as pd
import pytest
from hydra.errors import ConfigCompositionException, OverrideParseException
from hydra.utils import instantiate
from omegaconf import OmegaConf
from sklearn.linear_model import LogisticRegression

from core import contracts
from core.config import compose_config, flatten, split_overrides
from pipeline.processes.step import parse_step_args, step_parser

MODEL_CONFIGS = sorted(p.stem for p in (contracts.CONF_DIR / "model").glob("*.yaml"))
# Every option of every config group in conf/, as group=option overrides.
GROUP_OPTIONS = sorted(f"{path.parent.name}={path.stem}" for path in contracts.CONF_DIR.glob("*/*.yaml"))
# Model configs whose fitted estimator lacks some of the three prediction methods.
FEWER_METHODS = {
    "svc": ("predict",),
    "linear_svc": ("predict",),
    "hist_gradient_boosting": ("predict", "predict_proba"),  # neither has predict_log_proba
    "knn": ("predict", "predict_proba"),
}


def _targets(node, path="") -> list[tuple[str, object]]:
    """Every outermost sub-config that names a ``_target_``, with its dotted path (the
    ones inside it, a Pipeline's steps say, are built with it)."""
    from omegaconf import DictConfig, ListConfig, OmegaConf

    found = []
    if isinstance(node, DictConfig):
        if "_target_" in node:
            return [(path, node)]
        for key in node:
            if not OmegaConf.is_missing(node, key):  # e.g. data.path: ???, given per run
                found += _targets(node[key], f"{path}.{key}".lstrip("."))
    elif isinstance(node, ListConfig):
        for index, item in enumerate(node):
            found += _targets(item, f"{path}.{index}")
    return found


def test_default_config_is_the_tutorial(cfg):
    estimator = instantiate(cfg.model)
    assert isinstance(estimator, LogisticRegression)
    assert estimator.get_params()["solver"] == "newton-cg"
    assert estimator.get_params()["max_iter"] == 5000
    assert estimator.get_params()["random_state"] == 0
    assert list(cfg.data.features) == ["petal length (cm)", "petal width (cm)"]
    assert cfg.data.test_size == 0.2 and cfg.data.random_state == 9001
    assert cfg.registry.model_name == "iris-classifier"
    assert cfg.registry.champion_alias == "champion"


def test_the_group_options_are_all_found():
    assert {"model=svc", "model=knn", "model=scaled_logistic_regression", "data=file"} <= set(GROUP_OPTIONS)
    assert "model=gradient_boosting" in GROUP_OPTIONS and "gate=labels_only" in GROUP_OPTIONS


@pytest.mark.parametrize("option", GROUP_OPTIONS)
def test_every_config_composes_and_instantiates(option, tmp_path):
    from core.data import load_iris_frame

    extra = []
    if option == "data=file":  # its path is given per run
        load_iris_frame().to_csv(tmp_path / "iris.csv", index=False)
        extra = [f"data.path={tmp_path / 'iris.csv'}"]
    cfg = compose_config([option, *extra])
    group = option.split("=")[0]
    targets = _targets(cfg[group], group)
    assert targets or group in ("gate", "registry", "drift"), option
    for path, node in targets:
        built = instantiate(node)
        module, name = node._target_.rsplit(".", 1)
        target = getattr(importlib.import_module(module), name)
        if not isinstance(target, type):  # a data loader: it gave rows
            assert isinstance(built, pd.DataFrame) and len(built) > 0, path
            continue
        assert isinstance(built, target), path
        if hasattr(built, "get_params"):  # the config's arguments reached the estimator
            params = built.get_params(deep=False)
            for key, value in node.items():
                if not key.startswith("_") and not OmegaConf.is_config(value):
                    assert params[key] == value, (path, key)


@pytest.mark.parametrize("name", MODEL_CONFIGS)
def test_every_model_config_fits_and_has_its_methods(name):
    from core.data import load_iris_frame
    from model.dispatch_model import PREDICT_METHODS, available_methods

    estimator = instantiate(compose_config([f"model={name}"]).model)
    frame = load_iris_frame()
    estimator.fit(frame.drop(columns="target"), frame["target"])
    expected = FEWER_METHODS.get(name, PREDICT_METHODS)
    assert available_methods(estimator) == expected
    assert list(estimator.feature_names_in_) == list(frame.columns.drop("target"))


def test_overrides_change_the_config():
    cfg = compose_config(["model.C=0.5", "data.test_size=0.3", "registry.model_name=x"])
    assert cfg.model.C == 0.5
    assert cfg.data.test_size == 0.3
    assert cfg.registry.model_name == "x"


def test_unknown_key_is_rejected_by_hydra():
    with pytest.raises(ConfigCompositionException, match="model.nonexistent"):
        compose_config(["model.nonexistent=1"])


def test_unknown_config_group_option_is_rejected():
    with pytest.raises(ConfigCompositionException, match="no_such_model"):
        compose_config(["model=no_such_model"])


@pytest.mark.parametrize(
    ("argv", "expected"),
    [
        ([], []),
        ([""], []),  # MLflow passes an empty -P value as ''
        (["model.C=0.5 data.test_size=0.3"], ["model.C=0.5", "data.test_size=0.3"]),
        (["model.C=0.5", "data.test_size=0.3"], ["model.C=0.5", "data.test_size=0.3"]),
        (["registry.model_name='a b' model.C=2"], ["registry.model_name='a b'", "model.C=2"]),
    ],
)
def test_split_overrides(argv, expected):
    assert split_overrides(argv) == expected


def test_quoted_override_keeps_hydra_quoting():
    overrides = split_overrides(["registry.model_name='a b' model.C=2"])
    assert compose_config(overrides).registry.model_name == "a b"


def test_parse_step_args_exits_2_with_hydra_message(capsys):
    parser = step_parser("test")
    with pytest.raises(SystemExit) as exit_info:
        parse_step_args(parser, ["model.C=1 model.nonexistent=1"])
    assert exit_info.value.code == 2
    assert "model.nonexistent" in capsys.readouterr().err


@pytest.mark.parametrize(
    ("override", "message"),
    [
        ("gate.metrics.accuracy.tolerance=abc", "'abc' of type 'str' could not be converted to Float"),
        ("gate.metrics.log_loss.greater_is_better=maybe", "'maybe' is not a valid bool"),
        ("data.test_size=abc", "'abc' of type 'str' could not be converted to Float"),
        ("data.random_state=abc", "'abc' of type 'str' could not be converted to Integer"),
        ("registry.register=perhaps", "'perhaps' is not a valid bool"),
        ("sweep.metric=recall", "Invalid value 'recall', expected one of [accuracy, f1_macro, roc_auc_ovr, log_loss]"),
        ("sweep.candidates=some", "Invalid value 'some', expected one of [register, none]"),
        ("gate.keep_method=false", "Could not override 'gate.keep_method'"),
        ("gate.metrics.accuracy.tolerence=0.1", "Could not override 'gate.metrics.accuracy.tolerence'"),
        ("+gate.keep_method=false", "gate.keep_method: no such setting"),  # "+" adds no setting either
        ("+data.test_sise=0.5", "data.test_sise: no such setting"),
        ("drift.psy=0.1", "Could not override 'drift.psy'"),
        ("drift.retrain.share=half", "'half' of type 'str' could not be converted to Float"),
    ],
)
def test_a_mistyped_or_misspelt_setting_fails_at_compose_time(capsys, override, message):
    """The schema (core/config.py) types every setting but the estimator's arguments."""
    with pytest.raises(ConfigCompositionException):
        compose_config([override])
    with pytest.raises(SystemExit) as exit_info:
        parse_step_args(step_parser("test"), [override])
    assert exit_info.value.code == 2
    err = capsys.readouterr().err
    assert message in err and "To append to your config use" not in err


def test_the_schema_types_every_section_but_the_model():
    cfg = compose_config(["data=file", "data.path=x.csv", "gate=labels_only"])
    for section, schema in [
        ("data", "DataConfig"),
        ("registry", "RegistryConfig"),
        ("gate", "GateConfig"),
        ("validation", "ValidationConfig"),
        ("sweep", "SweepConfig"),
        ("drift", "DriftConfig"),
    ]:
        assert OmegaConf.get_type(cfg, section).__name__ == schema
    assert OmegaConf.get_type(cfg.gate.metrics, "f1_macro").__name__ == "GateMetric"
    assert OmegaConf.get_type(cfg, "model") is dict
    assert compose_config(["model.C=0.25"]).model.C == 0.25  # the estimator's own arguments stay free


def test_malformed_override_is_rejected():
    with pytest.raises(OverrideParseException):
        compose_config(["model.C=="])


def test_tracking_uri_defaults_to_absolute_sqlite_in_project(monkeypatch):
    monkeypatch.delenv("MLFLOW_TRACKING_URI")
    uri = contracts.tracking_uri()
    assert uri == f"sqlite:///{contracts.PROJECT_DIR / 'mlflow.db'}"
    assert Path(uri.removeprefix("sqlite:///")).is_absolute()


def test_tracking_uri_honours_environment(monkeypatch):
    monkeypatch.setenv("MLFLOW_TRACKING_URI", "http://127.0.0.1:5000")
    assert contracts.tracking_uri() == "http://127.0.0.1:5000"


def test_flatten():
    assert flatten({"a": {"b": 1, "c": {"d": 2}}, "e": 3}) == {"a.b": 1, "a.c.d": 2, "e": 3}


def test_unbalanced_quote_is_rejected():
    with pytest.raises(ValueError, match="Unbalanced quotes"):
        split_overrides(["registry.model_name='a b"])


def test_unregistered_model_with_the_gate_on_is_refused_before_any_run(capsys):
    import mlflow

    from pipeline import main

    with pytest.raises(SystemExit) as exit_info:
        main.main(["registry.register=false"])
    assert exit_info.value.code == 2
    assert "registry.register=false needs gate.enabled=false" in capsys.readouterr().err
    assert mlflow.search_runs(search_all_experiments=True, output_format="list") == []


HANDED_DOWN_CASES = [
    [],
    ["model=random_forest", "model.n_estimators=5"],
    ["gate=labels_only", "sweep.metric=log_loss", "gate.metrics.accuracy.tolerance=0.01"],
    ["registry.model_name='iris x'", "data=file", "data.path=/tmp/x.csv", "data.features=[a,b]"],
]


@pytest.mark.parametrize("overrides", HANDED_DOWN_CASES, ids=" ".join)
def test_a_config_handed_down_is_the_config_composed(overrides, monkeypatch):
    """The driver hands its composed config to each step (pipeline.processes.step.handed_to_step): the
    step reads back the same values, types (enums, the schema's dataclasses) and struct flag,
    and interpolations still resolve in the step's own environment."""
    from core.composed import HANDED_DOWN_ENV, config_for, hand_down
    from core.config import Metric

    composed = compose_config(overrides)
    monkeypatch.setenv(HANDED_DOWN_ENV, hand_down(composed, overrides))
    monkeypatch.setenv("MLFLOW_EXPERIMENT_NAME", "where the step runs")
    handed = config_for(overrides)
    assert OmegaConf.to_container(handed) == OmegaConf.to_container(composed)
    assert handed.experiment.name == "where the step runs"
    assert isinstance(handed.sweep.metric, Metric)
    assert OmegaConf.get_type(handed.gate.metrics.accuracy) is OmegaConf.get_type(composed.gate.metrics.accuracy)
    assert OmegaConf.is_struct(handed)
    with pytest.raises(Exception, match="no_such_key"):
        handed.data.no_such_key = 1


def test_a_config_handed_down_for_other_overrides_is_not_used(monkeypatch):
    from core.composed import HANDED_DOWN_ENV, config_for, hand_down

    monkeypatch.setenv(HANDED_DOWN_ENV, hand_down(compose_config(["model.C=5"]), ["model.C=5"]))
    assert config_for(["model.C=7"]).model.C == 7
    assert config_for([]).model.C == compose_config([]).model.C
    # A variable of the same name that the driver did not set: ignored, the step composes.
    for foreign in ("/etc/pipeline.conf", "[1, 2]", '{"overrides": ["model.C=7"]}'):
        monkeypatch.setenv(HANDED_DOWN_ENV, foreign)
        assert config_for(["model.C=7"]).model.C == 7


def test_a_step_handed_its_config_does_not_import_hydra(monkeypatch):
    """What handing it down saves each step: importing Hydra and composing (about 0.13 s)."""
    import subprocess
    import sys

    from core.composed import HANDED_DOWN_ENV, hand_down

    env = {
        "PYTHONPATH": str(contracts.PROJECT_DIR),
        HANDED_DOWN_ENV: hand_down(compose_config(["model.C=3"]), ["model.C=3"]),
    }
    check = (
        "import sys; from pipeline.processes.step import parse_step_args, step_parser; "
        "_, cfg = parse_step_args(step_parser('x'), ['model.C=3']); "
        "print(cfg.model.C, sorted(m for m in sys.modules if m.split('.')[0] == 'hydra'))"
    )
    done = subprocess.run([sys.executable, "-c", check], env=env, capture_output=True, text=True, timeout=120)
    assert done.returncode == 0, done.stderr
    assert done.stdout.split() == ["3", "[]"]


def test_the_driver_hands_its_config_down_only_while_it_starts_a_step_and_not_a_huge_one(monkeypatch):
    import os

    from core.composed import HANDED_DOWN_ENV, config_for
    from pipeline.processes import step

    monkeypatch.delenv(HANDED_DOWN_ENV, raising=False)
    overrides = ["model.C=4"]
    with step.handed_to_step(compose_config(overrides), overrides):
        assert os.environ[step.DRIVER_ENV] == step.process_identity()
        assert config_for(overrides).model.C == 4
    assert HANDED_DOWN_ENV not in os.environ and step.DRIVER_ENV not in os.environ
    # Over the limit (a table of thousands of listed features): the step composes it itself.
    monkeypatch.setattr(step, "HAND_DOWN_LIMIT", 100)
    with step.handed_to_step(compose_config(overrides), overrides):
        assert os.environ[HANDED_DOWN_ENV] == "" and config_for(overrides).model.C == 4


# As docs/data.md writes them inside make run HYDRA_OPTIONS="...": the shell keeps the inner
# quotes, and `make run` hands the string to `python -m core.tracking` and, through
# `mlflow run -P hydra_options=...`, to pipeline.main as one argument.
QUOTED_WHOLE = (
    "model=hist_gradient_boosting 'model.categorical_features=[island,sex]' "
    '\'data.features=["petal width (cm)","petal length (cm)"]\''
)


def test_an_override_quoted_whole_works_where_make_run_passes_it(capsys):
    from core import tracking

    tracking.main([QUOTED_WHOLE])
    assert capsys.readouterr().out.strip() == compose_config([]).experiment.name
    _, cfg = parse_step_args(step_parser("test"), [QUOTED_WHOLE])
    assert list(cfg.model.categorical_features) == ["island", "sex"]
    assert list(cfg.data.features) == ["petal width (cm)", "petal length (cm)"]
    # The driver hands its overrides on to each step as one string: they split the same again.
    overrides = split_overrides([QUOTED_WHOLE])
    assert split_overrides([" ".join(overrides)]) == overrides


def test_an_override_quoted_whole_with_a_space_says_how_to_quote_it(capsys):
    from core import tracking

    with pytest.raises(SystemExit) as exit_info:
        tracking.main(["'data.features=[petal width (cm),petal length (cm)]'"])
    assert exit_info.value.code == 2
    assert (
        "quote the value instead, as data.features=['petal width (cm)','petal length (cm)']" in capsys.readouterr().err
    )
