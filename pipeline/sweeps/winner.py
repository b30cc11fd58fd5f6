"""Which job of a sweep goes through the gate: the best by ``sweep.metric`` among the
jobs the gate could promote.

Only the winner is gated, so a winner the gate must refuse whatever its metrics
promotes nothing, although another job could have been promoted. Seen with the
iris defaults: ``model=logistic_regression,knn`` ties on accuracy (1.0) and kNN
wins on log loss (0.017 against 0.14), but kNN has no ``predict_log_proba``,
which a logistic-regression champion offers: with ``gate.keep_methods`` the gate
refuses it, as the champion's clients would lose that method. So a job can win
only when:

- it finished, its model passed validation, and it has the metric it is ranked by;
- it has every gated metric (``gate.metrics``; a model without probabilities has
  no ``log_loss``, so the gate cannot compare it);
- with ``gate.keep_methods``, it offers every prediction method the champion offers;
- its registered version (a job whose steps are cached reuses one) was not rolled
  back by an operator: the gate never re-promotes those.

Among those the best by the metric wins, in its own direction; ties go to the
better value of the other holdout metrics, then to the first job. The gate
still compares the winner with the champion and may keep it as challenger.
"""

from __future__ import annotations

import logging
from collections.abc import Mapping, Sequence
from dataclasses import dataclass

import pandas as pd

from core.gate import ROLLED_BACK
from core.metrics import HOLDOUT_METRICS
from core.registry import alias_version
from model.dispatch_model import offered_methods

log = logging.getLogger(__name__)

METHODS_SEPARATOR = ", "


@dataclass(frozen=True)
class GateNeeds:
    """What the gate will ask of the winner whatever its metrics, read before it runs."""

    gated: tuple[str, ...] = ()  # the metrics in gate.metrics
    champion_version: str | None = None
    champion_methods: tuple[str, ...] = ()  # to keep (gate.keep_methods), else empty
    rolled_back: frozenset[str] = frozenset()  # versions among the jobs' that were rolled back


def methods_offered(model_uri: str) -> str:
    """The prediction methods the model at ``model_uri`` offers (its MLmodel metadata), as
    the jobs table shows them; empty when there is no model or it cannot be read."""
    from mlflow.exceptions import MlflowException
    from mlflow.models import Model

    if not model_uri:
        return ""
    try:
        return METHODS_SEPARATOR.join(offered_methods(Model.load(model_uri).metadata))
    except (MlflowException, OSError) as err:
        log.warning("could not read the methods of %s: %s", model_uri, err)
        return ""


def gate_needs(client, cfg, versions: Sequence[str]) -> GateNeeds:
    """Read from the registry what the gate of ``cfg`` will require: the champion's
    methods (fail closed: a registry that cannot be read stops the sweep) and which of
    the jobs' registered ``versions`` were rolled back."""
    name = cfg.registry.model_name
    champion = alias_version(client, name, cfg.registry.champion_alias)
    champion_version = None if champion is None else str(champion.version)
    methods = ""
    if champion_version is not None and cfg.gate.keep_methods:
        methods = methods_offered(f"models:/{name}/{champion_version}")
    rolled_back = frozenset(
        version
        for version in set(versions) - {""}
        if client.get_model_version(name, version).tags.get("gate.outcome") == ROLLED_BACK
    )
    return GateNeeds(
        tuple(cfg.gate.metrics), champion_version, tuple(m for m in methods.split(METHODS_SEPARATOR) if m), rolled_back
    )


def exclusion(job: Mapping, needs: GateNeeds, metric: str | None = None) -> str:
    """Why ``job`` (a row of the jobs table) cannot win: the gate could not promote it, or
    it lacks the ``metric`` the sweep ranks by. Empty when it can."""
    if job["status"] != "FINISHED":
        return f"status {job['status']}"
    if job["validation"] != "passed":
        return f"validation {job['validation'] or 'not recorded'}"
    if metric is not None and pd.isna(job.get(metric)):
        return f"no {metric}, which the sweep ranks by (sweep.metric)"
    missing = [name for name in needs.gated if pd.isna(job.get(name))]
    if missing:
        return f"no {', '.join(missing)}, which the gate compares"
    offered = str(job.get("methods") or "").split(METHODS_SEPARATOR)
    lost = [method for method in needs.champion_methods if method not in offered]
    if lost:
        return f"no {', '.join(lost)}, which the champion (version {needs.champion_version}) offers (gate.keep_methods)"
    version = str(job.get("registered_version") or "")
    if version in needs.rolled_back:
        return f"version {version} was rolled back"
    return ""


def exclusions(table: pd.DataFrame, needs: GateNeeds, metric: str | None = None) -> list[str]:
    """:func:`exclusion` for every job of ``table``, in its order."""
    return [exclusion(job, needs, metric) for job in table.to_dict("records")]


def best_job(table: pd.DataFrame, metric: str, needs: GateNeeds = GateNeeds()):
    """The row of the best job by ``metric`` among those the gate could promote, or None."""
    eligible = table[[not reason for reason in exclusions(table, needs, metric)]]
    if eligible.empty:
        return None
    order = [metric, *[name for name in HOLDOUT_METRICS if name != metric]]
    ranked = eligible.sort_values(
        [*order, "job"],
        ascending=[*(not HOLDOUT_METRICS[name] for name in order), True],
        na_position="last",
        kind="stable",
    )
    return ranked.iloc[0]
