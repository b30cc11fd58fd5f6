"""The step graph (pipeline/graph.py) is the one declaration of the pipeline: MLproject agrees with it."""

from __future__ import annotations

import pytest
import yaml

from core import contracts
from pipeline import cache, graph


def entry_points() -> dict:
    return yaml.safe_load((contracts.PROJECT_DIR / "MLproject").read_text())["entry_points"]


@pytest.mark.parametrize("step", graph.STEPS, ids=graph.NAMES)
def test_mlproject_declares_each_step_as_the_graph_does(step):
    entry = entry_points()[step.name]
    assert set(entry["parameters"]) == {*step.params, graph.HYDRA_OPTIONS}
    assert entry["command"].startswith(f"python -m pipeline.processes.launch steps.{step.name} ")
    assert cache.step_module(step.name) == f"steps.{step.name}"
    for param in entry["parameters"]:
        assert "{" + param + "}" in entry["command"], f"{step.name}: {param} is declared but never passed"


def test_every_parameter_comes_from_an_earlier_step_or_the_driver():
    for position, step in enumerate(graph.STEPS):
        for param, keys in step.params.items():
            for key in keys:
                producer = graph.producer(key)
                if producer is None:
                    assert key == graph.DATA_DIGEST, f"{step.name}.{param}: nothing publishes {key}"
                else:
                    assert graph.NAMES.index(producer) < position, f"{step.name}.{param}: {key} comes later"


def test_upstream_steps_are_read_off_the_parameters():
    assert graph.upstream("train") == ()
    assert graph.upstream("serialize") == ("train",)
    assert graph.upstream("package_pyfunc") == ("train", "serialize")
    assert graph.upstream("evaluate") == ("train", "package_pyfunc")


def test_a_parameter_takes_the_first_output_present():
    outputs = {"model_uri": "models:/m-1", "holdout_uri": "runs:/r/h.parquet", "pyfunc_model_uri": "models:/m-2"}
    assert graph.params_for("evaluate", outputs)["model_uri"] == "models:/m-2"
    registered = {**outputs, "registered_model_uri": "models:/iris-classifier/3"}
    assert graph.params_for("evaluate", registered)["model_uri"] == "models:/iris-classifier/3"
    with pytest.raises(KeyError, match="step serialize: no output model_uri for parameter 'model_uri'"):
        graph.params_for("serialize", {})
