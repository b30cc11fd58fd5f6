"""The pipeline and batch scoring on a generated 1,000,000-row, 20-feature CSV.

    python -m bench.big [--rows 1000000]

1. Pipeline (`python -m ops.retrain data=file ...`, cold, in a temporary store)
   vs a plain script that reads the same CSV with pandas, splits it the same
   way and fits the same estimator: wall time and peak memory (largest process).
2. Batch scoring (`python -m serving.batch`, chunked) vs the raw estimator on the
   same rows (whole file in memory): wall time and peak memory, and the
   scorer's peak memory on files of 1/4, 1/2 and all the rows (flat = chunked).

Each measurement runs in its own process; peak memory is its largest
descendant's maximum resident set size. Targets: pipeline within 2x of the
plain script; scoring memory flat as the file grows.
"""

from __future__ import annotations

import argparse
import os
import subprocess
import sys
import tempfile
import time
from pathlib import Path

from core import contracts
from core.contracts import PROJECT_DIR

PLAIN_FIT = """
import sys, pandas as pd
from hydra.utils import instantiate
from sklearn.model_selection import train_test_split
from core.config import compose_config
cfg = compose_config(["data=file"] + sys.argv[2:])
frame = pd.read_csv(sys.argv[1])
features = [c for c in frame.columns if c != "target"]
train, holdout = train_test_split(frame, test_size=cfg.data.test_size, random_state=cfg.data.random_state,
                                  stratify=frame["target"])
model = instantiate(cfg.model).fit(train[features], train["target"])
model.predict_proba(holdout[features])
"""

RAW_SCORE = """
import sys, joblib, pandas as pd
model = joblib.load(sys.argv[1])
frame = pd.read_csv(sys.argv[2])
proba = model.predict_proba(frame[list(model.feature_names_in_)])
out = pd.DataFrame(proba, columns=[f"proba_{c}" for c in model.classes_])
out.to_csv(sys.argv[3], index=False)
"""

MEASURE = """
import resource, subprocess, sys, time
started = time.perf_counter()
code = subprocess.run(sys.argv[1:]).returncode
print(time.perf_counter() - started, resource.getrusage(resource.RUSAGE_CHILDREN).ru_maxrss, code)
"""


def measured(command: list[str], env: dict) -> tuple[float, float]:
    """(seconds, peak MiB) of ``command`` and its descendants."""
    out = (
        subprocess.run(
            [sys.executable, "-c", MEASURE, *command],
            env=env,
            cwd=PROJECT_DIR,
            capture_output=True,
            text=True,
            check=True,
        )
        .stdout.strip()
        .splitlines()[-1]
        .split()
    )
    seconds, kib, code = float(out[0]), int(out[1]), int(out[2])
    if code != 0:
        raise RuntimeError(f"{command} exited {code}")
    return seconds, kib / 1024


def write_data(path: Path, rows: int) -> None:
    import numpy as np
    import pandas as pd
    from sklearn.datasets import make_classification

    x, y = make_classification(n_samples=rows, n_features=20, n_informative=10, n_classes=3, random_state=0)
    frame = pd.DataFrame(x.round(6), columns=[f"f{i:02d}" for i in range(20)])
    frame["target"] = y.astype(np.int64)
    frame.to_csv(path, index=False)


def main(argv=None) -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--rows", type=int, default=1_000_000)
    args = parser.parse_args(argv)
    python = sys.executable
    with tempfile.TemporaryDirectory() as tmp:
        tmp = Path(tmp)
        env = {
            **os.environ,
            "MLFLOW_TRACKING_URI": f"sqlite:///{tmp / 'mlflow.db'}",
            "PYTHONPATH": str(PROJECT_DIR),
            "PIPELINE_LOCK_DIR": str(tmp / "locks"),
            "PATH": f"{Path(python).parent}{os.pathsep}{os.environ.get('PATH', '')}",
        }
        env.pop("MLFLOW_EXPERIMENT_NAME", None)
        data = tmp / "big.csv"
        started = time.perf_counter()
        write_data(data, args.rows)
        print(f"generated {data.stat().st_size / 2**20:.0f} MiB CSV in {time.perf_counter() - started:.0f} s")
        overrides = [f"data.path={data}"]

        plain = measured([python, "-c", PLAIN_FIT, str(data), *overrides], env)
        pipeline = measured([python, "-m", "ops.retrain", "data=file", *overrides], env)
        print(f"\n{'training':<34} {'seconds':>8} {'peak MiB':>9}")
        print(f"{'plain script (pandas + fit)':<34} {plain[0]:8.1f} {plain[1]:9.0f}")
        print(f"{'pipeline, cold':<34} {pipeline[0]:8.1f} {pipeline[1]:9.0f}")
        print(f"ratio pipeline/plain: time {pipeline[0] / plain[0]:.2f}, memory {pipeline[1] / plain[1]:.2f}")

        import mlflow

        mlflow.set_tracking_uri(env["MLFLOW_TRACKING_URI"])
        champion = mlflow.MlflowClient().get_model_version_by_alias(contracts.MODEL_NAME, contracts.CHAMPION_ALIAS)
        joblib_path = mlflow.artifacts.download_artifacts(
            f"runs:/{champion.tags['lineage.serialize_run_id']}/estimator/estimator.joblib", dst_path=str(tmp)
        )
        rows = {}
        for fraction in (4, 2, 1):
            part = tmp / f"part{fraction}.csv"
            if fraction == 1:
                part = data
            else:
                with open(data) as src, open(part, "w") as dst:
                    for i, line in enumerate(src):
                        if i > args.rows // fraction:
                            break
                        dst.write(line)
            rows[fraction] = measured(
                [
                    python,
                    "-m",
                    "serving.batch",
                    "--no-progress",
                    "--input",
                    str(part),
                    "--output",
                    str(tmp / "scored.csv"),
                    "--model-uri",
                    contracts.CHAMPION_URI,
                ],
                env,
            )
        raw = measured([python, "-c", RAW_SCORE, joblib_path, str(data), str(tmp / "raw.csv")], env)
        print(f"\n{'scoring (predict_proba)':<34} {'seconds':>8} {'peak MiB':>9}")
        for fraction in (4, 2, 1):
            print(
                f"{f'serving.batch, {args.rows // fraction:,} rows':<34} {rows[fraction][0]:8.1f} {rows[fraction][1]:9.0f}"
            )
        print(f"{f'raw estimator, {args.rows:,} rows':<34} {raw[0]:8.1f} {raw[1]:9.0f}")
        print(
            f"ratio score/raw: time {rows[1][0] / raw[0]:.2f}, memory {rows[1][1] / raw[1]:.2f}; "
            f"score memory at full/quarter size: {rows[1][1] / rows[4][1]:.2f}"
        )


if __name__ == "__main__":
    main()
