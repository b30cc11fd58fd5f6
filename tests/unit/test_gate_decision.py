"""The gate decision from metrics alone: thresholds, tolerances, and every way a
version is promoted or kept (core/gate.py); no registry, no run."""

from __future__ import annotations

import json

import pytest
from omegaconf import OmegaConf

from core import gate
from core.config import compose_config

GATE = OmegaConf.create(
    {
        "accuracy": {"greater_is_better": True, "tolerance": 0.0, "threshold": None},
        "log_loss": {"greater_is_better": False, "tolerance": 0.05, "threshold": None},
    }
)
CHAMPION = {"accuracy": 0.95, "log_loss": 0.20}


def test_first_version_passes_without_a_champion():
    passed, reason, thresholds = gate.decide({"accuracy": 0.5, "log_loss": 2.0}, None, GATE)
    assert passed and "first validated version" in reason and thresholds == {}


def test_gated_metric_a_model_cannot_compute_refuses_the_promotion():
    # An SVC without probabilities has no log_loss: the default gate cannot pass it.
    passed, reason, _ = gate.decide({"accuracy": 0.99, "f1_macro": 0.99}, None, GATE)
    assert not passed and "log_loss cannot be computed for this model" in reason


def test_labels_only_gate_passes_a_model_without_probabilities():
    labels_gate = compose_config(["gate=labels_only"]).gate.metrics
    labels = {"accuracy": 0.96, "f1_macro": 0.96}
    assert gate.decide(labels, None, labels_gate)[0]
    # Against a champion with probabilities, only the label metrics are compared.
    assert gate.decide(labels, {**CHAMPION, "f1_macro": 0.95}, labels_gate)[0]
    assert not gate.decide({"accuracy": 0.90, "f1_macro": 0.96}, CHAMPION | {"f1_macro": 0.9}, labels_gate)[0]


def test_metric_the_champion_lacks_is_named_as_not_compared():
    passed, reason, _ = gate.decide({"accuracy": 0.95, "log_loss": 0.9}, {"accuracy": 0.95}, GATE)
    assert passed and "not compared with the champion, which has none: log_loss" in reason


@pytest.mark.parametrize(
    ("candidate", "refused_on"),
    [
        ({"accuracy": 0.95, "log_loss": 0.20}, None),  # equal
        ({"accuracy": 0.97, "log_loss": 0.24}, None),  # log_loss worse, within tolerance
        ({"accuracy": 0.94, "log_loss": 0.10}, "accuracy"),  # accuracy worse, no tolerance
        ({"accuracy": 0.99, "log_loss": 0.26}, "log_loss"),  # log_loss worse beyond tolerance
    ],
)
def test_gate_compares_with_the_champion_within_tolerance(candidate, refused_on):
    ok, reason, thresholds = gate.decide(candidate, CHAMPION, GATE)
    assert ok is (refused_on is None)
    assert thresholds["accuracy"]["threshold"] == pytest.approx(0.95)
    assert thresholds["log_loss"]["threshold"] == pytest.approx(0.25)
    if refused_on:  # the reason names the metric that failed, and only that one
        assert refused_on in reason
        assert ({"accuracy", "log_loss"} - {refused_on}).pop() not in reason


def test_absolute_threshold_tightens_the_bound():
    tightened = OmegaConf.merge(GATE, {"accuracy": {"threshold": 0.99}})
    ok, reason, thresholds = gate.decide({"accuracy": 0.98, "log_loss": 0.2}, CHAMPION, tightened)
    assert not ok and thresholds["accuracy"]["threshold"] == 0.99 and "accuracy" in reason


GATE_CFG = OmegaConf.create({"metrics": GATE, "keep_methods": True})
ALL_METHODS = ["predict", "predict_proba", "predict_log_proba"]


class Scorer:
    """A stand-in for scoring the champion, which records whether the gate asked."""

    def __init__(self, score):
        self.score, self.calls = score, 0

    def __call__(self):
        self.calls += 1
        return self.score


def judged(candidate=None, methods=ALL_METHODS, rolled_back=None, champion="1", score=None):
    scorer = Scorer(score or gate.ChampionScore("1", dict(CHAMPION), ALL_METHODS))
    decision = gate.judge(
        GATE_CFG, "2", candidate or {"accuracy": 0.96, "log_loss": 0.19}, methods, rolled_back, champion, scorer
    )
    return decision, scorer.calls


def test_judge_promotes_a_better_version_over_the_champion_it_scored():
    decision, calls = judged()
    assert (decision.outcome, decision.champion_version, calls) == ("promoted", "1", 1)
    assert decision.champion_metrics == CHAMPION and set(decision.thresholds) == {"accuracy", "log_loss"}


def test_judge_keeps_a_worse_version_as_challenger():
    decision, _ = judged({"accuracy": 0.90, "log_loss": 0.19})
    assert decision.outcome == "challenger" and "accuracy" in decision.reason


def test_judge_without_a_champion_scores_nothing_and_applies_absolute_thresholds():
    decision, calls = judged(champion=None)
    assert (decision.outcome, decision.champion_version, calls) == ("promoted", None, 0)
    assert decision.reason == "no champion yet: first validated version"


def test_judge_never_repromotes_a_rolled_back_version():
    decision, calls = judged(rolled_back="rolled back to version 1 at 2026-01-01; not re-promoted")
    assert (decision.outcome, decision.promoted, calls) == ("rolled_back", False, 0)
    assert decision.reason.count("not re-promoted") == 1


def test_judge_revalidates_the_champion_itself_without_scoring_it():
    decision, calls = judged(champion="2")
    assert (decision.outcome, decision.reason, calls) == ("promoted", "already the champion; re-validated", 0)


def test_judge_replaces_a_champion_it_cannot_score_when_the_version_passes_alone():
    broken = gate.ChampionScore("1", error="OSError: truncated joblib file")
    decision, _ = judged(score=broken)
    assert (decision.outcome, decision.champion_version) == ("promoted", "1")
    assert decision.champion_broken == "OSError: truncated joblib file"
    assert decision.reason.startswith(
        "champion version 1 is broken: it could not be loaded or scored "
        "(OSError: truncated joblib file); replaced by version 2: "
    )
    # Judged on its absolute thresholds alone, as a first version is: one it misses is not promoted.
    strict = OmegaConf.create(
        {"metrics": OmegaConf.merge(GATE, {"accuracy": {"threshold": 0.99}}), "keep_methods": True}
    )
    refused = gate.judge(strict, "2", {"accuracy": 0.96, "log_loss": 0.19}, ALL_METHODS, None, "1", Scorer(broken))
    assert refused.outcome == "challenger" and refused.champion_broken
    assert "not replaced by version 2" in refused.reason and "accuracy" in refused.reason


def test_judge_refuses_a_version_offering_fewer_methods_unless_allowed():
    decision, _ = judged(methods=["predict"])
    assert decision.outcome == "challenger" and "predict_proba, predict_log_proba" in decision.reason
    labels_only = OmegaConf.create({"metrics": {"accuracy": GATE.accuracy}, "keep_methods": False})
    allowed = gate.judge(
        labels_only,
        "2",
        {"accuracy": 0.96},
        ["predict"],
        None,
        "1",
        Scorer(gate.ChampionScore("1", dict(CHAMPION), ALL_METHODS)),
    )
    assert allowed.outcome == "promoted"


def test_decision_tags_record_outcome_reason_and_both_versions_metrics():
    decision, _ = judged()
    tags = gate.decision_tags(decision, {"accuracy": 0.96}, "run-1")
    assert tags["gate.outcome"] == "promoted" and tags["gate.champion_version"] == "1"
    assert tags[gate.GATE_RUN_TAG] == "run-1"
    assert json.loads(tags["gate.champion_metrics"]) == CHAMPION
    assert json.loads(tags["gate.thresholds"])["accuracy"]["threshold"] == 0.95
    assert gate.describe_bounds(decision) == "accuracy >= 0.95; log_loss <= 0.25"


def test_a_schema_change_never_scores_the_champion_nor_calls_it_broken():
    def never():
        raise AssertionError("the champion was scored on a holdout with other columns")

    cfg = compose_config([]).gate
    kept = gate.judge(
        cfg,
        "2",
        {"accuracy": 1.0, "log_loss": 0.1},
        ALL_METHODS,
        None,
        "1",
        never,
        schema_change="removed 'b' (double)",
    )
    assert (kept.outcome, kept.champion_broken, kept.champion_version) == ("challenger", None, "1")
    assert "removed 'b' (double)" in kept.reason and "make promote VERSION=2" in kept.reason
    allowed = gate.judge(
        compose_config(["gate.allow_schema_change=true"]).gate,
        "2",
        {"accuracy": 1.0, "log_loss": 0.1},
        ALL_METHODS,
        None,
        "1",
        never,
        "removed 'b' (double)",
    )
    assert allowed.promoted and allowed.champion_broken is None and allowed.champion_version == "1"
