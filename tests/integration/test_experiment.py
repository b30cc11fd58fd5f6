"""Which experiment a pipeline's runs go to (pipeline/record.py, core/tracking.py)."""

from __future__ import annotations

import logging

import mlflow
import pytest
from mlflow import MlflowClient

from core import tracking
from pipeline import record
from tests.support.factories import EXPERIMENT


def test_a_run_mlflow_run_made_elsewhere_stays_there_with_a_warning_unless_overridden(caplog):
    client = MlflowClient()
    elsewhere = client.create_run("0")  # `mlflow run` without --experiment-name: Default
    with caplog.at_level(logging.WARNING, logger="pipeline.record"):
        assert record.experiment_for(EXPERIMENT, [], elsewhere) == "0"
    assert f"mlflow run made this run in experiment 'Default', the config names '{EXPERIMENT}'" in caplog.text
    with pytest.raises(record.WrongExperiment, match="start it with `mlflow run . --experiment-name 'nightly'`"):
        record.experiment_for("nightly", ["model=knn", "experiment.name=nightly"], elsewhere)
    # Made in the configured experiment: used as it is, no warning.
    caplog.clear()
    here = client.create_run(client.get_experiment_by_name(EXPERIMENT).experiment_id)
    assert record.experiment_for(EXPERIMENT, [], here) == here.info.experiment_id and not caplog.text


def test_the_experiment_is_created_once_even_when_pipelines_race_to_create_it(monkeypatch):
    client = MlflowClient()
    real = client.get_experiment_by_name
    calls = []

    def not_there_at_first(self, name):  # another process creates it between our look and our create
        calls.append(name)
        if len(calls) == 1:
            client.create_experiment(name)
            return None
        return real(name)

    monkeypatch.setattr(MlflowClient, "get_experiment_by_name", not_there_at_first)
    experiment_id = tracking.use_experiment("raced")
    assert real("raced").experiment_id == experiment_id and len(calls) == 2
    # Not made the process's active experiment: a later run elsewhere goes where it is told.
    with mlflow.start_run() as run:
        assert run.info.experiment_id == real(EXPERIMENT).experiment_id


def test_a_trigger_not_among_the_known_ones_is_refused(monkeypatch):
    monkeypatch.setenv("PIPELINE_TRIGGER", "cron")
    with pytest.raises(ValueError, match="PIPELINE_TRIGGER='cron': expected one of manual, schedule, sweep"):
        record.trigger()
    monkeypatch.delenv("PIPELINE_TRIGGER")
    assert record.trigger() == "manual"
