"""Rebuild a registered version from its recorded lineage and compare predictions.

    python -m ops.reproduce 3                  # version 3 of the configured registered model
    python -m ops.reproduce 3 registry.model_name=other-model

Reads the version's ``lineage.*`` tags: the resolved config, the train run
(whose logged ``data/train.parquet`` and ``data/holdout.parquet`` are the exact
split; its recorded data digest must match the version's) and the git commit.
Builds the estimator from the recorded config, fits it again on the logged
training split, and compares ``predict``, ``predict_proba`` and ``predict_log_proba``
on the holdout with the registered version's: they must be identical.
Warns when the current checkout differs from the recorded commit, and says which
dependency lock built the version (the SHA-256 of ``requirements.lock`` recorded on
the version, or on its train run) against the checkout's: a refit under another lock
may install other versions of any package and so predict differently.
Exits 0 when identical, 1 when not or when the lineage is incomplete.
"""

from __future__ import annotations

import argparse
import logging
import sys
from collections.abc import Sequence

import numpy as np
import pandas as pd
from omegaconf import OmegaConf

from core import contracts
from core.config import build_estimator, compose_config, describe_error, split_overrides
from core.dependencies import RUNTIME_LOCK, lock_sha256
from core.integrity import load_verified, verified_artifact
from model.dispatch_model import PREDICT_METHOD_PARAM, PREDICT_METHODS
from pipeline.cache import COMPONENT_TAG_PREFIX
from pipeline.lineage import LOCK_TAG, git_state

log = logging.getLogger(__name__)


class ReproductionError(RuntimeError):
    pass


def reproduce(name: str, model_version: str) -> dict[str, bool]:
    """Refit from lineage; return {method: identical} for the three predict methods."""
    import mlflow
    from mlflow import MlflowClient

    tags = MlflowClient().get_model_version(name, model_version).tags
    missing = [t for t in ("lineage.train_run_id", "lineage.data_digest") if not tags.get(t)]
    if missing:
        raise ReproductionError(f"{name} version {model_version} lacks lineage tag(s) {missing}")
    train_run = mlflow.get_run(tags["lineage.train_run_id"])
    if train_run.data.tags.get(contracts.DATA_DIGEST_TAG) != tags["lineage.data_digest"]:
        raise ReproductionError(
            f"train run {train_run.info.run_id} recorded data digest "
            f"{train_run.data.tags.get(contracts.DATA_DIGEST_TAG)}, the version {tags['lineage.data_digest']}"
        )
    commit, dirty = git_state()
    if commit != tags.get("lineage.git_commit") or dirty:
        log.warning(
            "checkout is at %s%s; version %s was built from %s%s",
            commit,
            " (dirty)" if dirty else "",
            model_version,
            tags.get("lineage.git_commit"),
            " (dirty)" if tags.get("lineage.git_dirty") == "true" else "",
        )
    if not tags.get("lineage.config"):
        raise ReproductionError(f"{name} version {model_version} lacks lineage tag 'lineage.config'")
    cfg = OmegaConf.create(tags["lineage.config"])
    run_uri = f"runs:/{train_run.info.run_id}"
    with verified_artifact(f"{run_uri}/{contracts.TRAIN_DATA_ARTIFACT}") as path:
        train = pd.read_parquet(path)
    with verified_artifact(f"{run_uri}/{contracts.HOLDOUT_ARTIFACT}") as path:
        holdout = pd.read_parquet(path)
    target = cfg.data.target
    features = [column for column in train.columns if column != target]
    rebuilt = build_estimator(cfg.model).fit(train[features], train[target])
    registered = load_verified(f"models:/{name}/{model_version}")
    results = {}
    for method in PREDICT_METHODS:
        if not hasattr(rebuilt, method):
            continue
        expected = getattr(rebuilt, method)(holdout[features])
        got = registered.predict(holdout[features], params={PREDICT_METHOD_PARAM: method})
        results[method] = bool(np.array_equal(np.asarray(got), expected))
    return results


def lock_statement(name: str, model_version: str) -> str:
    """Which ``requirements.lock`` built the version, against the checkout's (:func:`describe_lock`).

    The lock's SHA-256 is read from the version's lineage tag, else from its train run's
    cache record (``pipeline.cache.lock``)."""
    import mlflow
    from mlflow import MlflowClient

    tags = MlflowClient().get_model_version(name, model_version).tags
    recorded = tags.get(LOCK_TAG)
    if not recorded and tags.get("lineage.train_run_id"):
        recorded = mlflow.get_run(tags["lineage.train_run_id"]).data.tags.get(COMPONENT_TAG_PREFIX + "lock")
    return describe_lock(model_version, recorded, tags.get("lineage.git_commit"), lock_sha256())


def describe_lock(model_version: str, recorded: str | None, commit: str | None, current: str) -> str:
    """One line naming the lock that built ``model_version`` and how it compares with the
    checkout's (``current``: :func:`core.dependencies.lock_sha256`)."""
    lock = RUNTIME_LOCK.name
    if not recorded:
        return f"lock: version {model_version} records no {lock} digest; the checkout's {lock} is sha256 {current}"
    if recorded == current:
        return f"lock: version {model_version} was built with {lock} sha256 {recorded}, the checkout's"
    source = f" (git show {commit}:{lock})" if commit and commit != "unknown" else ""
    return (
        f"lock: version {model_version} was built with {lock} sha256 {recorded}{source}; the checkout's "
        f"{lock} is sha256 {current}: packages installed from it may differ from those that built it"
    )


def main(argv: Sequence[str] | None = None) -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("version", help="registered model version to rebuild")
    parser.add_argument("overrides", nargs="*", help="Hydra overrides, e.g. registry.model_name=x")
    args = parser.parse_args(argv)
    from hydra.errors import HydraException

    try:
        cfg = compose_config(split_overrides(args.overrides))
    except (HydraException, ValueError) as err:
        parser.exit(2, f"reproduce: error: invalid Hydra override: {describe_error(err)}\n")
    contracts.configure_logging()
    contracts.configure_tracking()
    name = cfg.registry.model_name
    from mlflow.exceptions import MlflowException

    try:
        print(lock_statement(name, args.version))
        results = reproduce(name, args.version)
    except (ReproductionError, MlflowException) as err:
        print(f"reproduce: {getattr(err, 'message', err)}", file=sys.stderr)
        sys.exit(1)
    for method, same in results.items():
        print(f"{method:<18} {'identical' if same else 'DIFFERENT'}")
    if not results or not all(results.values()):
        print(f"{name} version {args.version} was NOT reproduced", file=sys.stderr)
        sys.exit(1)
    print(f"{name} version {args.version} reproduced: predictions identical on the holdout")


if __name__ == "__main__":
    main()
