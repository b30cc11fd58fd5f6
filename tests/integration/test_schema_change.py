"""A version trained on other input columns than the champion's: a decision, not a fault.

The champion is not scored on a holdout it cannot read, is never tagged broken for it,
and the new version waits as challenger until ``make promote`` or
``gate.allow_schema_change=true``; nothing stored in the tracking store quotes rows."""

from __future__ import annotations

import mlflow
from mlflow import MlflowClient

from core import contracts
from core.config import compose_config
from ops import promote
from steps import evaluate
from tests.support.factories import run_chain

NAME = "iris-classifier"
ONE_FEATURE = "data.features=['petal width (cm)']"


def evaluate_with(overrides):
    cfg = compose_config(overrides)
    outputs = run_chain(cfg)
    with mlflow.start_run():
        result = evaluate.run(outputs["registered_model_uri"], outputs["model_uri"], outputs["holdout_uri"], cfg)
    return outputs["registered_model_version"], result


def aliases():
    return {alias: str(v) for alias, v in MlflowClient().get_registered_model(NAME).aliases.items()}


def test_fewer_columns_keep_the_champion_and_wait_as_challenger(champion, monkeypatch):
    v1 = champion["registered_model_version"]
    scored = []
    real_outputs = evaluate.holdout_outputs
    monkeypatch.setattr(
        evaluate, "holdout_outputs", lambda model, *a, **k: scored.append(a[1]) or real_outputs(model, *a, **k)
    )

    v2, result = evaluate_with([ONE_FEATURE])

    assert result == {"validation_status": "passed", "gate_outcome": "challenger", "champion_version": v1}
    assert aliases() == {"champion": v1, "challenger": v2}
    assert scored == [f"version {v2} (new)"]  # the champion was not scored on the new holdout
    client = MlflowClient()
    assert client.get_model_version(NAME, v1).tags[contracts.VALIDATION_STATUS_TAG] == "passed"
    reason = client.get_model_version(NAME, v2).tags["gate.reason"]
    assert f"inputs differ from the champion's (version {v1})" in reason
    assert "removed 'petal length (cm)'" in reason
    assert "make promote" in reason and "gate.allow_schema_change=true" in reason

    # An operator's decision promotes it, and the old champion stays a version to roll back to.
    promote.main([v2, "--reason", "one feature from now on"])
    assert aliases() == {"champion": v2, "previous_champion": v1}


def test_schema_change_promoted_when_the_config_allows_it(champion):
    v1 = champion["registered_model_version"]
    v2, result = evaluate_with([ONE_FEATURE, "gate.allow_schema_change=true"])
    assert result["gate_outcome"] == "promoted"
    assert aliases() == {"champion": v2, "previous_champion": v1}
    assert MlflowClient().get_model_version(NAME, v1).tags[contracts.VALIDATION_STATUS_TAG] == "passed"
    reason = MlflowClient().get_model_version(NAME, v2).tags["gate.reason"]
    assert "removed 'petal length (cm)'" in reason and "gate.allow_schema_change=true" in reason
