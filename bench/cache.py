"""Cached rerun vs cold pipeline vs starting Python and importing mlflow.

    python -m bench.cache [--repeat 3]

Runs everything in a temporary SQLite store, side by side in one invocation,
and prints medians and ratios. The target: a cached rerun (nothing changed)
within 2x of `python -c "import mlflow"`.
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
        import_mlflow = [python, "-c", "import mlflow"]
        # The least any command that reads this store pays: the import plus MLflow's SQLite store.
        query_store = [python, "-c", "import mlflow; mlflow.search_runs(search_all_experiments=True)"]
        cold = timed(retrain, env, cwd)
        baseline, query, cached = [], [], []
        for _ in range(args.repeat):  # interleaved, so machine noise hits all alike
            baseline.append(timed(import_mlflow, env, cwd))
            query.append(timed(query_store, env, cwd))
            cached.append(timed(retrain, env, cwd))
    base = statistics.median(baseline)
    rows = [
        ("python -c 'import mlflow'", base),
        ("import mlflow + one store query", statistics.median(query)),
        ("pipeline, cold (4 step runs)", cold),
        ("pipeline, cached rerun", statistics.median(cached)),
    ]
    print(f"{'measurement':<34} {'seconds':>8} {'x import':>9}")
    for name, seconds in rows:
        print(f"{name:<34} {seconds:8.2f} {seconds / base:9.2f}")
    print(f"cached rerun / cold run: {statistics.median(cached) / cold:.2f}")


if __name__ == "__main__":
    main()
