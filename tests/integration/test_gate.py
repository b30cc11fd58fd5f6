"""The gate in the evaluate step against a real registry: alias moves, decision tags,
rollback, a champion that cannot be scored, and a registry that fails (fail closed)."""

from __future__ import annotations

import json
from pathlib import Path

import mlflow
import pytest
from mlflow import MlflowClient
from mlflow.exceptions import MlflowException

from core import contracts, validation
from core.config import compose_config
from core.registry import alias_version
from ops import rollback
from steps import evaluate
from tests.support.factories import run_chain


def run_evaluate(cfg) -> dict:
    outputs = run_chain(cfg)
    with mlflow.start_run():
        return evaluate.run(outputs["registered_model_uri"], outputs["model_uri"], outputs["holdout_uri"], cfg)


def test_version_offering_fewer_methods_than_the_champion_is_not_promoted():
    labels_only = ["gate=labels_only"]
    run_evaluate(compose_config(labels_only))  # version 1: logistic regression, champion
    result = run_evaluate(compose_config([*labels_only, "model=svc"]))
    assert result["gate_outcome"] == "challenger"
    reason = MlflowClient().get_model_version("iris-classifier", "2").tags["gate.reason"]
    assert "also offers predict_proba, predict_log_proba, which its clients would lose" in reason
    # Allowed when asked for.
    assert (
        run_evaluate(compose_config([*labels_only, "model=svc", "gate.keep_methods=false"]))["gate_outcome"]
        == "promoted"
    )


def test_cached_decision_holds_only_while_the_champion_is_unchanged(champion, cfg):
    from pipeline.run import _decision_still_holds

    holds = _decision_still_holds(cfg)
    assert holds({"gate_outcome": "promoted", "champion_version": "1"}) is None
    assert holds({"gate_outcome": "not gated"}) is None
    MlflowClient().delete_registered_model_alias("iris-classifier", "champion")
    assert holds({"gate_outcome": "promoted", "champion_version": "1"}) == (
        "the champion is version none now, 1 when the cached decision was made"
    )


def promote_cycle(overrides):
    cfg = compose_config(overrides)
    outputs = run_chain(cfg)
    with mlflow.start_run():
        result = evaluate.run(outputs["registered_model_uri"], outputs["model_uri"], outputs["holdout_uri"], cfg)
    return outputs["registered_model_version"], result, outputs


def reevaluate(outputs, cfg, reference_uri=None):
    """Run evaluate again on an already registered version."""
    with mlflow.start_run():
        return evaluate.run(
            outputs["registered_model_uri"], reference_uri or outputs["model_uri"], outputs["holdout_uri"], cfg
        )


def aliases(name="iris-classifier"):
    return {alias: str(v) for alias, v in MlflowClient().get_registered_model(name).aliases.items()}


def test_gate_promotes_refuses_and_rollback_swaps(champion):
    client = MlflowClient()
    v1 = champion["registered_model_version"]
    assert champion["gate_outcome"] == "promoted" and aliases() == {"champion": v1}

    v2, worse, _ = promote_cycle(["model.C=0.001"])  # validated, but accuracy 0.5 vs 1.0
    assert worse == {"validation_status": "passed", "gate_outcome": "challenger", "champion_version": v1}
    assert aliases() == {"champion": v1, "challenger": v2}
    tags = client.get_model_version("iris-classifier", v2).tags
    assert tags["gate.outcome"] == "challenger"
    assert tags["gate.champion_version"] == v1
    assert json.loads(tags["gate.champion_metrics"])["accuracy"] == 1.0
    assert json.loads(tags["gate.candidate_metrics"])["accuracy"] == 0.5
    assert "accuracy" in tags["gate.reason"] and "gate.thresholds" in tags
    # Its page in the MLflow UI says the same: the decision, metrics against the champion's,
    # and a link to the report of the run that decided.
    description = client.get_model_version("iris-classifier", v2).description
    assert description.startswith("**Gate: challenger**: ") and tags["gate.reason"].split()[0] in description
    assert f"- accuracy: **0.5** (champion v{v1} 1; bound >= " in description
    evaluate_run = mlflow.get_run(tags["validation_run_id"])
    report = f"#/experiments/{evaluate_run.info.experiment_id}/runs/{evaluate_run.info.run_id}/artifactPath/report/report.html"
    assert f"[Evaluation report]({report})" in description
    assert "report.html" in {f.path.split("/")[-1] for f in client.list_artifacts(evaluate_run.info.run_id, "report")}

    v3, better, v3_outputs = promote_cycle(["model.C=2.0"])
    assert better["gate_outcome"] == "promoted"
    assert aliases() == {"champion": v3, "previous_champion": v1, "challenger": v2}

    done = rollback.rollback(client, "iris-classifier", "champion", "previous_champion")
    assert (done.old, done.new, done.undone) == (v3, v1, False)
    assert aliases() == {"champion": v1, "previous_champion": v3, "challenger": v2}
    assert client.get_model_version("iris-classifier", v3).tags["gate.outcome"] == "rolled_back"

    # Evaluating the rolled-back version again, however often (forced, a config
    # change, the champion moving), never re-promotes it: it stays rolled back.
    for _ in range(2):
        again = reevaluate(v3_outputs, compose_config(["model.C=2.0"]))
        assert again == {"validation_status": "passed", "gate_outcome": "rolled_back", "champion_version": v1}
        assert aliases() == {"champion": v1, "previous_champion": v3, "challenger": v2}
        tags = client.get_model_version("iris-classifier", v3).tags
        assert tags["gate.outcome"] == "rolled_back"
        assert tags["gate.reason"].startswith(f"rolled back to version {v1} at ")
        assert tags["gate.reason"].endswith("; not re-promoted") and tags["gate.reason"].count("re-promoted") == 1


def test_reevaluating_the_champion_keeps_it_or_fails_closed(champion):
    v1, outputs = champion["registered_model_version"], champion
    cfg = compose_config([])
    again = reevaluate(outputs, cfg)
    assert again["gate_outcome"] == "promoted" and aliases() == {"champion": v1}
    tags = MlflowClient().get_model_version("iris-classifier", v1).tags
    assert tags["gate.reason"] == "already the champion; re-validated"

    _, _, other = promote_cycle(["model.C=0.001"])  # a reference the champion cannot match
    with pytest.raises(validation.ValidationFailed):
        reevaluate(outputs, cfg, reference_uri=other["model_uri"])
    assert "champion" not in aliases()
    tags = MlflowClient().get_model_version("iris-classifier", v1).tags
    assert tags[contracts.VALIDATION_STATUS_TAG] == "failed"


def stored_estimator(version: str) -> Path:
    """The joblib file of registered ``version`` as it lies in the test's artifact store."""
    client = MlflowClient()
    source = client.get_model_version("iris-classifier", version).source  # models:/m-...
    model = client.get_logged_model(source.removeprefix("models:/"))
    (stored,) = Path(model.artifact_location.removeprefix("file://")).rglob("estimator.joblib")
    return stored


def test_a_broken_champion_is_replaced_not_kept_forever(champion):
    client = MlflowClient()
    v1 = champion["registered_model_version"]
    v2, _, _ = promote_cycle(["model.C=2.0"])  # v2 champion, v1 previous champion
    assert aliases() == {"champion": v2, "previous_champion": v1}
    stored = stored_estimator(v2)
    stored.write_bytes(stored.read_bytes() + b"damaged")

    v3, result, _ = promote_cycle([])
    assert result == {
        "validation_status": "passed",
        "gate_outcome": "promoted",
        "champion_version": v3,
        "broken_champion_version": v2,
    }
    # Not a version to roll back to: previous_champion stays on the healthy one.
    assert aliases() == {"champion": v3, "previous_champion": v1}
    broken = client.get_model_version("iris-classifier", v2).tags
    assert broken[contracts.VALIDATION_STATUS_TAG] == "broken"
    assert "files in the artifact store differ" in broken["validation.broken_reason"]
    reason = client.get_model_version("iris-classifier", v3).tags["gate.reason"]
    assert reason.startswith(f"champion version {v2} is broken: it could not be loaded or scored")
    assert f"replaced by version {v3}: no champion yet" in reason


def test_a_champion_the_store_cannot_deliver_is_not_called_broken(champion, monkeypatch):
    """A connection that fails is no broken champion: the step fails and nothing moves."""
    import requests

    v1 = champion["registered_model_version"]
    real_load = evaluate.load_verified

    def load(uri, **flavor):
        if uri == f"models:/iris-classifier/{v1}":
            try:
                raise requests.exceptions.ConnectionError("connection refused")
            except requests.exceptions.ConnectionError:
                raise MlflowException("API request to http://store/artifacts failed with exception") from None
        return real_load(uri, **flavor)

    monkeypatch.setattr(evaluate, "load_verified", load)
    with pytest.raises(MlflowException, match="API request to"):
        promote_cycle(["model.C=2.0"])
    assert aliases() == {"champion": v1}
    assert MlflowClient().get_model_version("iris-classifier", v1).tags[contracts.VALIDATION_STATUS_TAG] == "passed"


def test_rollback_without_previous_champion_changes_nothing(champion, capsys):
    v1 = champion["registered_model_version"]
    with pytest.raises(SystemExit) as exit_info:
        rollback.main([])
    assert exit_info.value.code == 1
    assert "no 'previous_champion' alias" in capsys.readouterr().err
    assert aliases() == {"champion": v1}


def registry_unavailable(*args, **kwargs):
    from mlflow.protos.databricks_pb2 import TEMPORARILY_UNAVAILABLE

    raise MlflowException("API request failed with error code 503 after 2 retries", TEMPORARILY_UNAVAILABLE)


def unavailable_to_the_gate(read):
    """``read``, except that it fails like a registry that is down when the evaluate step
    reads the champion (``alias_version`` called from ``steps/evaluate.py``)."""
    import inspect

    def patched(self, *args, **kwargs):
        stack = inspect.stack(context=0)
        if any(
            caller.function == "alias_version" and frame.filename.endswith("steps/evaluate.py")
            for caller, frame in zip(stack, stack[1:], strict=False)
        ):
            registry_unavailable()
        return read(self, *args, **kwargs)

    return patched


def test_a_registry_read_that_fails_stops_the_gate_and_moves_no_alias(champion, cfg, monkeypatch):
    """Fail closed: "could not read the champion" is not "there is no champion"."""
    outputs = run_chain(cfg)  # version 2, as good as the champion
    for read in ("get_registered_model", "get_model_version_by_alias"):
        monkeypatch.setattr(MlflowClient, read, unavailable_to_the_gate(getattr(MlflowClient, read)))
    with pytest.raises(MlflowException, match="503"), mlflow.start_run():
        evaluate.run(outputs["registered_model_uri"], outputs["model_uri"], outputs["holdout_uri"], cfg)
    monkeypatch.undo()
    assert aliases() == {"champion": "1"}
    assert "gate.outcome" not in MlflowClient().get_model_version("iris-classifier", "2").tags


def test_only_a_missing_model_or_alias_means_no_champion(champion, monkeypatch):
    client = MlflowClient()
    assert str(alias_version(client, "iris-classifier", "champion").version) == "1"
    assert alias_version(client, "iris-classifier", "challenger") is None
    assert alias_version(client, "no-such-model", "champion") is None
    monkeypatch.setattr(MlflowClient, "get_registered_model", registry_unavailable)
    monkeypatch.setattr(MlflowClient, "get_model_version_by_alias", registry_unavailable)
    with pytest.raises(MlflowException, match="503"):
        alias_version(client, "iris-classifier", "champion")


def test_a_registry_read_that_fails_after_the_gate_only_dims_the_summary(champion, cfg, monkeypatch):
    """The champion is read once more for the summary, after every step: failing there
    fails nothing that was decided (every step here is a cache hit of the champion's pipeline)."""
    import sys

    from pipeline import run
    from pipeline.run import PipelineContext, PipelineSummary, run_pipeline

    real = alias_version

    def unreadable_for_the_summary(client, name, alias):
        if sys._getframe(1).f_code is run._run_steps.__code__:
            registry_unavailable()
        return real(client, name, alias)

    monkeypatch.setattr(run, "alias_version", unreadable_for_the_summary)
    with mlflow.start_run() as parent:
        summary = PipelineSummary(run_id=parent.info.run_id)
        run_pipeline(PipelineContext.create(cfg, [], frozenset(), mlflow.get_run(parent.info.run_id)), summary)
    assert [step.status for step in summary.steps] == ["CACHED"] * 4 and summary.succeeded
    assert summary.champion_version == "unknown (the registry could not be read)"


def test_a_validation_that_cannot_run_fails_closed(champion, cfg, monkeypatch):
    """A check that raises (not only a model that will not load) fails validation: the
    champion being re-validated is tagged failed and loses its alias."""

    def broken(*args, **kwargs):
        raise RuntimeError("shapes (30, 3) and (30, 2) differ")

    monkeypatch.setattr(validation, "validate_predictions", broken)
    outputs = {k: champion[k] for k in ("registered_model_uri", "model_uri", "holdout_uri")}
    with pytest.raises(validation.ValidationFailed, match="validate_predictions .RuntimeError: shapes"):
        reevaluate(outputs, cfg)
    version = MlflowClient().get_model_version("iris-classifier", champion["registered_model_version"])
    assert version.tags[contracts.VALIDATION_STATUS_TAG] == "failed" and version.aliases == []
