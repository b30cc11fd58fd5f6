"""The pipeline against the cost of starting its processes, side by side in one run.

    python -m bench.cache [--repeat 3]

In a temporary SQLite store, interleaved so that machine noise hits all alike,
with medians of ``--repeat`` runs:

- the floor of a cold pipeline: five sequential ``python -c "import mlflow,
  sklearn, pandas"`` processes (one driver, four steps), against a cold pipeline
  through ``ops.retrain`` (target: at most 1.5x), and the same pipeline with each
  step in its own interpreter (``PIPELINE_PRELOAD=0``: no step server);
- a cached rerun (nothing changed) through ``ops.retrain`` against ``python -c
  "import mlflow"`` (target: at most 1.5x), and through ``mlflow run .``
  (target: at most 2.5x).
"""

from __future__ import annotations

import argparse
import os
import statistics
import subprocess
import sys
import tempfile
import time
from pathlib import Path

from core.contracts import PROJECT_DIR
from pipeline.processes.step_server import PRELOAD_ENV


def timed(command: list[str], env: dict[str, str], cwd: Path) -> float:
    started = time.perf_counter()
    subprocess.run(command, env=env, cwd=cwd, check=True, capture_output=True)
    return time.perf_counter() - started


def main(argv=None) -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--repeat", type=int, default=3, help="runs of each cheap command (median)")
    args = parser.parse_args(argv)
    python = sys.executable
    with tempfile.TemporaryDirectory() as tmp:
        cwd = Path(tmp)
        env = {
            **os.environ,
            "MLFLOW_TRACKING_URI": f"sqlite:///{cwd / 'mlflow.db'}",
            "PYTHONPATH": str(PROJECT_DIR),
            "PATH": f"{Path(python).parent}{os.pathsep}{os.environ.get('PATH', '')}",
        }
        env.pop("MLFLOW_EXPERIMENT_NAME", None)
        retrain = [python, "-m", "ops.retrain"]
        mlflow_run = [str(Path(python).parent / "mlflow"), "run", str(PROJECT_DIR), "--env-manager", "local"]
        import_mlflow = [python, "-c", "import mlflow"]
        import_stack = [python, "-c", "import mlflow, sklearn, pandas"]
        query_store = [python, "-c", "import mlflow; mlflow.search_runs(search_all_experiments=True)"]
        cold, cold_apart, floor, baseline, cached, cached_mlflow_run = [], [], [], [], [], []
        for attempt in range(args.repeat):
            store, apart = cwd / str(attempt), cwd / f"{attempt}-apart"
            for folder in (store, apart):
                folder.mkdir()
                # an existing store: creating its tables is not the pipeline's cost
                timed(query_store, {**env, "MLFLOW_TRACKING_URI": f"sqlite:///{folder / 'mlflow.db'}"}, folder)
            run_env = {**env, "MLFLOW_TRACKING_URI": f"sqlite:///{store / 'mlflow.db'}"}
            floor.append(sum(timed(import_stack, env, cwd) for _ in range(5)))
            cold.append(timed(retrain, run_env, store))
            cold_apart.append(
                timed(
                    retrain, {**env, "MLFLOW_TRACKING_URI": f"sqlite:///{apart / 'mlflow.db'}", PRELOAD_ENV: "0"}, apart
                )
            )
            baseline.append(timed(import_mlflow, env, cwd))
            cached.append(timed(retrain, run_env, store))
            # As `make run` does: the configured experiment, where ops.retrain's runs went.
            experiment = subprocess.run(
                [python, "-m", "core.tracking"], env=run_env, cwd=store, check=True, capture_output=True, text=True
            ).stdout.strip()
            cached_mlflow_run.append(timed([*mlflow_run, "--experiment-name", experiment], run_env, store))
    median = statistics.median
    base, stack = median(baseline), median(floor)
    rows = [
        ("python -c 'import mlflow'", base, 1.0, None),
        ("floor: 5 x import mlflow, sklearn, pandas", stack, None, 1.0),
        ("pipeline, cold (ops.retrain)", median(cold), None, 1.5),
        ("  the same, PIPELINE_PRELOAD=0", median(cold_apart), None, None),
        ("cached rerun (ops.retrain)", median(cached), 1.5, None),
        ("cached rerun (mlflow run .)", median(cached_mlflow_run), 2.5, None),
    ]
    print(f"{'measurement':<42} {'seconds':>8} {'x import':>9} {'x floor':>8}  target")
    for name, seconds, import_target, floor_target in rows:
        target = (
            f"<= {import_target}x import"
            if import_target and import_target != 1.0
            else (f"<= {floor_target}x floor" if floor_target and floor_target != 1.0 else "")
        )
        print(f"{name:<42} {seconds:8.2f} {seconds / base:9.2f} {seconds / stack:8.2f}  {target}")


if __name__ == "__main__":
    main()
