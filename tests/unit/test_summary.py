"""Run names, outcome words and the Markdown description of a pipeline (pipeline/summary.py)."""

from __future__ import annotations

import pytest

from core.config import compose_config
from pipeline.summary import NAME_LIMIT, PipelineSummary, StepResult, model_class, named, shorten, step_run_name


@pytest.mark.parametrize(
    "overrides, expected",
    [
        ([], "pipeline"),
        (["model=logistic_regression", "model.C=0.5"], "pipeline model=logistic_regression C=0.5"),
        (["data=file", "data.path=/srv/iris/batch.csv"], "pipeline data=file path=batch.csv"),
        (["+model.steps.1.1.C=2", "~gate.metrics.log_loss"], "pipeline C=2 ~gate.metrics.log_loss"),
        (["registry.model_name='iris classifier'"], "pipeline model_name=iris classifier"),
    ],
)
def test_a_pipeline_run_is_named_after_its_overrides_shortened(overrides, expected):
    assert named("pipeline", overrides) == expected


def test_a_long_name_is_cut_to_what_the_runs_table_shows():
    name = shorten([f"model.param_{i}=value_{i}" for i in range(40)])
    assert len(name) == NAME_LIMIT and name.endswith("…")


def test_the_evaluate_run_is_named_after_the_version_it_evaluates():
    assert step_run_name("evaluate", {"registered_model_version": "7"}) == "evaluate v7"
    assert step_run_name("evaluate", {"pyfunc_model_uri": "models:/m-1"}) == "evaluate"
    assert step_run_name("train", {"registered_model_version": "7"}) == "train"


@pytest.mark.parametrize(
    "model, expected",
    [
        ("logistic_regression", "LogisticRegression"),
        ("random_forest", "RandomForestClassifier"),
        ("scaled_logistic_regression", "LogisticRegression"),  # a Pipeline: its final estimator
        ("tabular_logistic_regression", "LogisticRegression"),
    ],
)
def test_the_model_tag_is_the_estimators_class(model, expected):
    assert model_class(compose_config([f"model={model}"]).model) == expected


def summary(*statuses: str, gate: str | None = "promoted") -> PipelineSummary:
    steps = [
        StepResult(
            step,
            run_id=f"r{i}",
            status=status,
            cache="hit" if status == "CACHED" else "miss",
            reason="why | with a bar\nand a newline",
        )
        for i, (step, status) in enumerate(
            zip(("train", "serialize", "package_pyfunc", "evaluate"), statuses, strict=False)
        )
    ]
    return PipelineSummary(
        run_id="p",
        steps=steps,
        registered_model_version="3",
        gate_outcome=gate,
        champion_version="3",
        validation_status="passed",
    )


def test_the_outcome_is_one_word_to_filter_by():
    assert summary(*["FINISHED"] * 4).outcome_word == "promoted"
    assert summary(*["FINISHED"] * 4, gate="challenger").outcome_word == "challenger"
    assert summary(*["FINISHED"] * 4, gate="not gated").outcome_word == "not_gated"
    assert summary(*["CACHED"] * 4).outcome_word == "unchanged"
    assert summary("FINISHED", "FAILED").outcome_word == "failed"
    assert summary("CACHED", "CACHED", "CACHED", "FINISHED", gate="rolled_back").outcome_word == "rolled_back"


def test_the_description_is_a_table_of_steps_with_links_and_safe_cells():
    text = summary(*["FINISHED"] * 4).markdown("5", "iris-classifier", "schedule")
    assert text.startswith("**promoted**: promoted version 3 to champion\n")
    assert (
        "| train | FINISHED | miss | why \\| with a bar and a newline | 0.0 | [r0](#/experiments/5/runs/r0) |" in text
    )
    assert text.endswith(
        "[iris-classifier v3](#/models/iris-classifier/versions/3) · validation: passed · trigger: schedule"
    )
    assert (
        summary(*["FINISHED"] * 4)
        .markdown("5", "m", "sweep", headline="best of 2 jobs")
        .startswith("**promoted**: best of 2 jobs\n")
    )


def test_the_columns_the_profile_left_out_are_in_the_summary_and_the_description():
    done = summary(*["FINISHED"] * 4)
    assert "left out" not in done.render() and "left out" not in done.markdown("5", "m", "manual")
    done.columns_left_out = "rownames (identifier), notes (empty)"
    assert "  columns left out: rownames (identifier), notes (empty)\n" in done.render()
    assert done.markdown("5", "m", "manual").endswith(
        "Columns left out by the profile: rownames (identifier), notes (empty)"
    )
