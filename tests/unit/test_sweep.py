"""Sweeps planned before any job runs: expansion, per-job composition failures, settings, selection of the best job."""

from __future__ import annotations

import mlflow
import pandas as pd
import pytest
from hydra.errors import ConfigCompositionException

from core import contracts
from core.config import Metric, compose_config, multirun_flag
from core.metrics import HOLDOUT_METRICS
from hydra_plugins.pipeline_sweeper.pipeline_sweeper import compose_errors, expand
from pipeline.sweeps import job as sweep_job
from pipeline.sweeps import winner as sweep_winner


def test_expansion_is_hydras_cartesian_product():
    (jobs,) = expand(["model=logistic_regression,random_forest", "model.C=0.1,1", "data.test_size=0.3"])
    assert jobs == [
        ["model=logistic_regression", "model.C=0.1", "data.test_size=0.3"],
        ["model=logistic_regression", "model.C=1", "data.test_size=0.3"],
        ["model=random_forest", "model.C=0.1", "data.test_size=0.3"],
        ["model=random_forest", "model.C=1", "data.test_size=0.3"],
    ]


def test_combinations_that_cannot_be_composed_are_named_with_hydras_message():
    from hydra.errors import MissingConfigException

    errors = compose_errors(["model=logistic_regression,random_forest,no_such_model", "model.C=0.5"], compose_config)
    assert [job for job, _ in errors] == [
        ["model=random_forest", "model.C=0.5"],
        ["model=no_such_model", "model.C=0.5"],
    ]
    job, err = errors[0]
    assert sweep_job.uncomposable_message(job, err) == (
        "cannot compose the config: Could not override 'model.C'. "
        "That key does not exist with model=random_forest model.C=0.5."
    )
    # A config option that does not exist: the sweep refuses it before any job (exit 2).
    assert isinstance(errors[1][1], MissingConfigException) and "no_such_model" in str(errors[1][1])


@pytest.mark.parametrize(
    ("argv", "expected"),
    [
        (["-m", "model=knn"], (True, ["model=knn"])),
        (["--multirun", "model=knn"], (True, ["model=knn"])),
        (
            ["--force", "", "-m model=knn,svc data.test_size=0.3"],
            (True, ["--force", "", "model=knn,svc data.test_size=0.3"]),
        ),
        (["model=knn"], (False, ["model=knn"])),
        (["model.C=0.5 -m"], (False, ["model.C=0.5 -m"])),  # only a leading flag counts
    ],
)
def test_multirun_flag(argv, expected):
    assert multirun_flag(argv) == expected


def test_the_sweeps_own_overrides_are_not_part_of_a_job():
    assert sweep_job.job_overrides(["model=knn", "sweep.metric=f1_macro", "sweep.candidates=none"]) == ["model=knn"]
    # Hydra's own overrides configure the launcher, not the job (Hydra keeps them apart too).
    assert sweep_job.job_overrides(
        [
            "hydra/launcher=joblib",
            "hydra.launcher.n_jobs=2",
            "model.C=1",
            f"+hydra.job.env_set.{sweep_job.SWEEP_RUN_ENV}=abc",
        ]
    ) == ["model.C=1"]


def test_a_job_out_of_range_is_not_run_twice(monkeypatch):
    """The sweep records it as not composable; the launched job then starts nothing."""
    from hydra import compose, initialize_config_dir

    with initialize_config_dir(config_dir=str(contracts.CONF_DIR), version_base="1.3"):
        cfg = compose(config_name=contracts.CONFIG_NAME, overrides=["data.test_size=1.5"])  # no project checks
    monkeypatch.setattr(sweep_job, "run_job", lambda *args: pytest.fail("an out-of-range job ran"))
    result = sweep_job.checked_job(cfg, ["data.test_size=1.5"])
    assert result["status"] == "FAILED" and "data.test_size=1.5 is out of range" in result["error"]


def test_the_sweeps_run_and_force_are_not_user_config():
    """They reach the jobs through Hydra's hydra.job.env_set, not as config keys a user could set."""
    with pytest.raises(ConfigCompositionException, match="sweep.run_id"):
        compose_config(["sweep.run_id=abc"])
    with pytest.raises(ConfigCompositionException, match="sweep.force"):
        compose_config(["sweep.force=all"])


def table(rows):
    base = {
        "status": "FINISHED",
        "validation": "passed",
        "accuracy": 0.9,
        "f1_macro": 0.9,
        "roc_auc_ovr": 0.99,
        "log_loss": 0.1,
        "registered_version": "",
        "methods": ", ".join(ALL_METHODS),
    }
    return pd.DataFrame([{**base, "job": number, **row} for number, row in enumerate(rows)])


ALL_METHODS = ["predict", "predict_proba", "predict_log_proba"]


def test_best_job_is_the_best_validated_one():
    jobs = table(
        [
            {"accuracy": 0.95},
            {"accuracy": 0.99, "status": "FAILED"},  # failed jobs never win
            {"accuracy": 0.97, "validation": "failed"},
            {"accuracy": 0.96},
            {"accuracy": 0.90},
        ]
    )
    assert sweep_winner.best_job(jobs, "accuracy")["job"] == 3


def test_each_metric_has_its_own_direction():
    jobs = table([{"log_loss": 0.3}, {"log_loss": 0.2}, {"log_loss": 0.5}])
    assert sweep_winner.best_job(jobs, "log_loss")["job"] == 1  # smaller is better


def test_ties_go_to_the_better_other_metrics_then_the_first_job():
    jobs = table([{"accuracy": 1.0, "log_loss": 0.14}, {"accuracy": 1.0, "log_loss": 0.02}, {"accuracy": 1.0}])
    assert sweep_winner.best_job(jobs, "accuracy")["job"] == 1
    assert sweep_winner.best_job(table([{}, {}]), "accuracy")["job"] == 0


def test_a_job_without_a_gated_metric_cannot_win():
    # An SVC has no log_loss: with log_loss gated it could never be promoted.
    jobs = table([{"accuracy": 1.0, "log_loss": None}, {"accuracy": 0.97}])
    gated = sweep_winner.GateNeeds(gated=("accuracy", "log_loss"))
    assert sweep_winner.best_job(jobs, "accuracy", gated)["job"] == 1
    assert sweep_winner.best_job(jobs, "accuracy", sweep_winner.GateNeeds(gated=("accuracy",)))["job"] == 0
    assert sweep_winner.exclusions(jobs, gated) == ["no log_loss, which the gate compares", ""]


# The default sweep model=logistic_regression,knn on iris, as its jobs recorded it:
# a tie on accuracy, kNN better on log loss, and kNN without predict_log_proba.
LOGISTIC_AND_KNN = [
    {
        "overrides": "model=logistic_regression",
        "accuracy": 1.0,
        "f1_macro": 1.0,
        "roc_auc_ovr": 1.0,
        "log_loss": 0.14005276995674823,
        "methods": "predict, predict_proba, predict_log_proba",
    },
    {
        "overrides": "model=knn",
        "accuracy": 1.0,
        "f1_macro": 1.0,
        "roc_auc_ovr": 1.0,
        "log_loss": 0.017027520792199904,
        "methods": "predict, predict_proba",
    },
]


def test_a_job_offering_fewer_methods_than_the_champion_cannot_win():
    """The gate (gate.keep_methods) would keep kNN as challenger, as the logistic-regression
    champion's clients would lose predict_log_proba: the logistic job wins instead."""
    jobs = table(LOGISTIC_AND_KNN)
    needs = sweep_winner.GateNeeds(("accuracy", "log_loss"), "1", tuple(ALL_METHODS))
    assert sweep_winner.best_job(jobs, "accuracy", needs)["overrides"] == "model=logistic_regression"
    assert sweep_winner.exclusions(jobs, needs) == [
        "",
        "no predict_log_proba, which the champion (version 1) offers (gate.keep_methods)",
    ]
    # No champion yet, or gate.keep_methods=false: nothing to keep, and the tie goes to kNN's log loss.
    assert (
        sweep_winner.best_job(jobs, "accuracy", sweep_winner.GateNeeds(("accuracy", "log_loss")))["overrides"]
        == "model=knn"
    )


def test_a_job_whose_version_was_rolled_back_cannot_win():
    """A job whose steps are all cached reuses its registered version; if an operator rolled
    that version back, the gate would never promote it."""
    jobs = table([{"accuracy": 1.0, "registered_version": "3"}, {"accuracy": 0.97, "registered_version": "4"}])
    needs = sweep_winner.GateNeeds(rolled_back=frozenset({"3"}))
    assert sweep_winner.best_job(jobs, "accuracy", needs)["job"] == 1
    assert sweep_winner.exclusions(jobs, needs)[0] == "version 3 was rolled back"


def test_no_eligible_job():
    assert sweep_winner.best_job(table([{"status": "FAILED"}]), "accuracy") is None
    unranked = table([{"roc_auc_ovr": None}])
    assert sweep_winner.best_job(unranked, "roc_auc_ovr") is None
    assert sweep_winner.exclusions(unranked, sweep_winner.GateNeeds(), "roc_auc_ovr") == [
        "no roc_auc_ovr, which the sweep ranks by (sweep.metric)"
    ]
    jobs = table(LOGISTIC_AND_KNN[1:])
    assert sweep_winner.best_job(jobs, "accuracy", sweep_winner.GateNeeds(champion_methods=tuple(ALL_METHODS))) is None


def test_every_metric_a_sweep_can_rank_by_is_a_holdout_metric():
    assert [m.value for m in Metric] == list(HOLDOUT_METRICS)


@pytest.mark.parametrize(
    ("argv", "message"),
    [
        (["model.C=0.1,,1"], "invalid sweep"),
        (
            ["model.C=0.1,1", "sweep.metric=recall"],
            "sweep.metric=recall: Invalid value 'recall', expected one of [accuracy, f1_macro, roc_auc_ovr, log_loss]",
        ),
        (["model.C=0.1,1", "sweep.candidates=some"], "Invalid value 'some', expected one of [register, none]"),
        (["model=logistic_regresion,knn"], "Could not find 'model/logistic_regresion'"),
    ],
)
def test_malformed_sweep_exits_2_before_any_run(capsys, argv, message):
    from pipeline import main

    with pytest.raises(SystemExit) as exit_info:
        main.main(["-m", *argv])
    stderr = capsys.readouterr().err
    assert exit_info.value.code == 2, stderr[-2000:]
    assert message in stderr
    assert mlflow.search_runs(search_all_experiments=True, output_format="list") == []
