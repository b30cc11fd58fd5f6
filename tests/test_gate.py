"""Champion/challenger gate, alias moves, decision tags, and rollback."""

from __future__ import annotations

import json

import mlflow
import pytest
from mlflow import MlflowClient
from omegaconf import OmegaConf

from ops import rollback
from steps import common, evaluate
from tests.test_evaluate import run_chain

GATE = OmegaConf.create(
    {
        "accuracy": {"greater_is_better": True, "tolerance": 0.0, "threshold": None},
        "log_loss": {"greater_is_better": False, "tolerance": 0.05, "threshold": None},
    }
)
CHAMPION = {"accuracy": 0.95, "log_loss": 0.20}


def test_first_version_passes_without_a_champion():
    passed, reason, thresholds = evaluate.decide({"accuracy": 0.5, "log_loss": 2.0}, None, GATE)
    assert passed and "first validated version" in reason and thresholds == {}


@pytest.mark.parametrize(
    ("candidate", "passed"),
    [
        ({"accuracy": 0.95, "log_loss": 0.20}, True),  # equal
        ({"accuracy": 0.97, "log_loss": 0.24}, True),  # log_loss worse, within tolerance
        ({"accuracy": 0.94, "log_loss": 0.10}, False),  # accuracy worse, no tolerance
        ({"accuracy": 0.99, "log_loss": 0.26}, False),  # log_loss worse beyond tolerance
    ],
)
def test_gate_compares_with_the_champion_within_tolerance(candidate, passed):
    ok, reason, thresholds = evaluate.decide(candidate, CHAMPION, GATE)
    assert ok is passed
    assert thresholds["accuracy"]["threshold"] == pytest.approx(0.95)
    assert thresholds["log_loss"]["threshold"] == pytest.approx(0.25)
    if not passed:
        assert ("accuracy" in reason) or ("log_loss" in reason)


def test_absolute_threshold_tightens_the_bound():
    gate = OmegaConf.merge(GATE, {"accuracy": {"threshold": 0.99}})
    ok, reason, thresholds = evaluate.decide({"accuracy": 0.98, "log_loss": 0.2}, CHAMPION, gate)
    assert not ok and thresholds["accuracy"]["threshold"] == 0.99 and "accuracy" in reason


def promote_cycle(overrides):
    cfg = common.compose_config(overrides)
    outputs = run_chain(cfg)
    with mlflow.start_run():
        result = evaluate.run(outputs["registered_model_uri"], outputs["model_uri"], outputs["holdout_uri"], cfg)
    return outputs["registered_model_version"], result


def aliases(name="iris-classifier"):
    return {alias: str(v) for alias, v in MlflowClient().get_registered_model(name).aliases.items()}


def test_gate_promotes_refuses_and_rollback_swaps():
    client = MlflowClient()
    v1, first = promote_cycle([])
    assert first["gate_outcome"] == "promoted" and aliases() == {"champion": v1}

    v2, worse = promote_cycle(["model.C=0.001"])  # validated, but accuracy 0.5 vs 1.0
    assert worse == {"validation_status": "passed", "gate_outcome": "challenger", "champion_version": v1}
    assert aliases() == {"champion": v1, "challenger": v2}
    tags = client.get_model_version("iris-classifier", v2).tags
    assert tags["gate.outcome"] == "challenger"
    assert tags["gate.champion_version"] == v1
    assert json.loads(tags["gate.champion_metrics"])["accuracy"] == 1.0
    assert json.loads(tags["gate.candidate_metrics"])["accuracy"] == 0.5
    assert "accuracy" in tags["gate.reason"] and "gate.thresholds" in tags

    v3, better = promote_cycle(["model.C=2.0"])
    assert better["gate_outcome"] == "promoted"
    assert aliases() == {"champion": v3, "previous_champion": v1, "challenger": v2}

    old, new = rollback.rollback(client, "iris-classifier", "champion", "previous_champion")
    assert (old, new) == (v3, v1)
    assert aliases() == {"champion": v1, "previous_champion": v3, "challenger": v2}
    assert client.get_model_version("iris-classifier", v3).tags["gate.outcome"] == "rolled_back"


def test_rollback_without_previous_champion_changes_nothing(capsys):
    v1, _ = promote_cycle([])
    with pytest.raises(SystemExit) as exit_info:
        rollback.main([])
    assert exit_info.value.code == 1
    assert "no 'previous_champion' alias" in capsys.readouterr().err
    assert aliases() == {"champion": v1}
