"""What tests build, in one place: tracking stores, the in-process chain of steps,
a packaged dispatch model, a real `mlflow run`. Fixtures in conftest.py use these;
test modules import them from here, never from each other."""

from __future__ import annotations

import os
import shutil
import sqlite3
import subprocess
import sys
from pathlib import Path

import mlflow
import numpy as np
import pandas as pd

from core import contracts, data
from pipeline import graph
from steps import package_pyfunc, serialize, train

EXPERIMENT = "tests"
FEATURES = ["petal length (cm)", "petal width (cm)"]


def venv_env(**extra: str) -> dict[str, str]:
    """The environment for a subprocess: this venv's python and mlflow first on PATH."""
    env = dict(os.environ)
    env["PATH"] = f"{Path(sys.executable).parent}{os.pathsep}{env.get('PATH', '')}"
    env.update(extra)
    return env


def new_store(empty_store: Path | None, root: Path) -> str:
    """A store at ``root/mlflow.db`` (a copy of ``empty_store``, or migrated now) with
    experiment ``tests``, whose artifacts go to ``root/artifacts`` (a SQLite store
    otherwise puts them under ./mlruns of whichever process created it)."""
    uri = f"sqlite:///{root / 'mlflow.db'}"
    if empty_store is not None:
        shutil.copyfile(empty_store, root / "mlflow.db")
    client = mlflow.MlflowClient(tracking_uri=uri)
    client.create_experiment(EXPERIMENT, artifact_location=(root / "artifacts").as_uri())
    return uri


def copy_store(template: Path, root: Path) -> str:
    """Copy a store made under ``template`` (``mlflow.db`` and ``artifacts/``) to ``root``.

    The store records absolute artifact locations (runs, logged models, versions,
    and each logged model's MLmodel file); they are rewritten to the copy, so the
    test reads and damages its own files, never the template's.
    """
    old, new = str(template), str(root)
    shutil.copytree(template / "artifacts", root / "artifacts")
    for path in (root / "artifacts").rglob("MLmodel"):
        path.write_text(path.read_text().replace(old, new))
    shutil.copyfile(template / "mlflow.db", root / "mlflow.db")
    with sqlite3.connect(root / "mlflow.db") as db:
        tables = [name for (name,) in db.execute("SELECT name FROM sqlite_master WHERE type = 'table'")]
        for table in tables:
            for column in db.execute(f"PRAGMA table_info('{table}')").fetchall():
                name, kind = column[1], column[2].upper()
                if "CHAR" in kind or "TEXT" in kind:
                    db.execute(
                        f'UPDATE "{table}" SET "{name}" = replace("{name}", ?, ?) WHERE "{name}" LIKE ?',
                        (old, new, f"%{old}%"),
                    )
    db.close()
    return f"sqlite:///{root / 'mlflow.db'}"


def pipeline_outputs(uri: str) -> dict[str, str]:
    """The outputs of every step of the newest pipeline run in the store at ``uri``."""
    client = mlflow.MlflowClient(tracking_uri=uri)
    (parent,) = client.search_runs(
        [client.get_experiment_by_name(EXPERIMENT).experiment_id],
        filter_string=f"tags.`{contracts.STEP_TAG}` = 'main'",
        max_results=1,
        order_by=["attributes.start_time DESC"],
    )
    outputs = {"pipeline_run_id": parent.info.run_id}
    for step in graph.NAMES:
        run_id = parent.data.tags[f"pipeline.step.{step}.run_id"]
        tags = client.get_run(run_id).data.tags
        outputs[f"{step}_run_id"] = run_id
        outputs |= {
            k.removeprefix(contracts.OUTPUT_TAG_PREFIX): v
            for k, v in tags.items()
            if k.startswith(contracts.OUTPUT_TAG_PREFIX)
        }
    return outputs


def run_chain(cfg) -> dict[str, str]:
    """train -> serialize -> package_pyfunc in-process, each in its own run; the merged outputs."""
    outputs: dict[str, str] = {}
    with mlflow.start_run():
        outputs |= train.run(cfg)
    with mlflow.start_run():
        outputs |= serialize.run(outputs["model_uri"], cfg)
    with mlflow.start_run():
        outputs |= package_pyfunc.run(outputs["joblib_uri"], outputs["joblib_sha256"], outputs["holdout_uri"], cfg)
    return outputs


def package(estimator, tmp_path: Path, cfg):
    """Fit, joblib-dump and log ``estimator`` as the dispatch model (not registered);
    return (model info, the fitted estimator, the holdout's feature columns)."""
    train_rows, holdout, _ = data.prepare_data(cfg.data)
    features = list(cfg.data.features)
    fitted = train.fit_estimator(estimator, train_rows, features, cfg.data.target)
    path = tmp_path / "estimator.joblib"
    digest = serialize.serialize_estimator(fitted, path)
    with mlflow.start_run():
        info = package_pyfunc.log_dispatch_model(str(path), digest, fitted, holdout[features].head(5))
    return info, fitted, holdout[features]


def package_once(estimator, folder: Path, empty_store: Path, cfg):
    """:func:`package` into a store of its own, ``folder/store``, for a module's tests to
    copy (:func:`use_copy`): packaging is most of such a test's cost. Returns (the store's
    folder, model info, the fitted estimator, the holdout's feature columns)."""
    import pytest

    store = folder / "store"
    store.mkdir()
    uri = new_store(empty_store, store)
    with pytest.MonkeyPatch.context() as patch:
        patch.setenv("MLFLOW_TRACKING_URI", uri)
        patch.setenv("MLFLOW_EXPERIMENT_NAME", EXPERIMENT)
        patch.delenv("MLFLOW_EXPERIMENT_ID", raising=False)
        patch.setattr(mlflow.tracking.fluent, "_active_experiment_id", None)
        mlflow.set_tracking_uri(uri)
        try:
            # The joblib file beside the store, not in it: a copy rewrites the store's paths.
            return (store, *package(estimator, folder, cfg))
        finally:
            mlflow.set_tracking_uri(None)


def use_copy(store: Path, tmp_path: Path, monkeypatch) -> str:
    """Make a copy of ``store`` (:func:`package_once`) under ``tmp_path`` this test's store."""
    uri = copy_store(store, tmp_path / "store-copy")
    monkeypatch.setenv("MLFLOW_TRACKING_URI", uri)
    mlflow.set_tracking_uri(uri)
    return uri


def mlflow_run(env, cwd: Path, hydra_options: str | None = None, timeout: float = 900) -> subprocess.CompletedProcess:
    """The real `mlflow run <project> --env-manager local [-P hydra_options=...]`."""
    command = [sys.executable, "-m", "mlflow", "run", str(contracts.PROJECT_DIR), "--env-manager", "local"]
    if hydra_options is not None:
        command += ["-P", f"hydra_options={hydra_options}"]
    return subprocess.run(command, env=env, cwd=cwd, capture_output=True, text=True, timeout=timeout)


def rows(n: int, seed: int = 0) -> pd.DataFrame:
    """``n`` rows to score: an id column, the two features, a note column."""
    rng = np.random.default_rng(seed)
    frame = pd.DataFrame(rng.uniform(0.1, 7.0, size=(n, 2)), columns=FEATURES)
    frame.insert(0, "id", np.arange(n)[::-1])  # ids in an order unlike the row order
    frame["note"] = [f"r{i}" for i in range(n)]
    return frame


def gate_decisions() -> list:
    """The evaluate runs, in every experiment, that decided at the gate (promoted or challenger)."""
    from pipeline.processes.step import read_outputs

    return [
        run
        for run in mlflow.search_runs(search_all_experiments=True, output_format="list")
        if run.data.tags.get("mlflow.project.entryPoint") == "evaluate"
        and read_outputs(run.info.run_id).get("gate_outcome") in ("promoted", "challenger")
    ]
