"""In-process predict through the dynamic-dispatch pyfunc vs the raw estimator.

    python -m bench.pyfunc [--repeat 5]

For each method and batch size (1, 100, 10,000, 1,000,000 rows) times
`model.predict(X, params=...)` on the loaded pyfunc and `estimator.<method>(X)`
on the same fitted estimator, interleaved, and prints medians and the ratio.
Target: within 5% (ratio <= 1.05) at 10,000 rows and above.
"""

from __future__ import annotations

import argparse
import os
import statistics
import tempfile
import time
from pathlib import Path

import numpy as np
import pandas as pd

SIZES = (1, 100, 10_000, 1_000_000)
METHODS = ("predict", "predict_proba", "predict_log_proba")


def build_model(tmp: Path):
    """Fit the default pipeline's estimator and log it as the dispatch model in a temp store."""
    import mlflow

    from core import data
    from core.config import build_estimator, compose_config
    from steps import package_pyfunc, serialize, train

    mlflow.set_tracking_uri(f"sqlite:///{tmp / 'mlflow.db'}")
    # Artifacts in the temporary folder too (a SQLite store's default is ./mlruns).
    mlflow.set_experiment(experiment_id=mlflow.create_experiment("bench", (tmp / "artifacts").as_uri()))
    cfg = compose_config([])

    train_rows, holdout, features = data.prepare_data(cfg.data)
    estimator = train.fit_estimator(build_estimator(cfg.model), train_rows, features, cfg.data.target)
    path = tmp / "estimator.joblib"
    digest = serialize.serialize_estimator(estimator, path)
    with mlflow.start_run():
        info = package_pyfunc.log_dispatch_model(str(path), digest, estimator, holdout[features].head(5))
    return mlflow.pyfunc.load_model(info.model_uri), estimator, features


def best_of(fn, repeat: int) -> float:
    times = []
    for _ in range(repeat):
        started = time.perf_counter()
        fn()
        times.append(time.perf_counter() - started)
    return statistics.median(times)


def main(argv=None) -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--repeat", type=int, default=5)
    args = parser.parse_args(argv)
    os.environ.setdefault("MLFLOW_ENABLE_ASYNC_LOGGING", "false")
    with tempfile.TemporaryDirectory() as tmp:
        model, estimator, features = build_model(Path(tmp))
        rng = np.random.default_rng(0)
        print(f"{'method':<18} {'rows':>9} {'raw ms':>10} {'pyfunc ms':>10} {'ratio':>7}")
        for method in METHODS:
            raw = getattr(estimator, method)
            params = {"predict_method": method}
            for size in SIZES:
                frame = pd.DataFrame(rng.uniform(0.1, 7.0, size=(size, len(features))), columns=features)
                repeat = args.repeat if size < 1_000_000 else max(3, args.repeat // 2)
                inner = max(1, 2000 // max(1, size // 10)) if size <= 100 else 1
                raw_s, py_s = [], []
                for _ in range(repeat):  # interleaved, so noise hits both alike
                    raw_s.append(best_of(lambda raw=raw, frame=frame: raw(frame), inner))
                    py_s.append(best_of(lambda frame=frame, params=params: model.predict(frame, params=params), inner))
                r, p = statistics.median(raw_s), statistics.median(py_s)
                print(f"{method:<18} {size:>9,} {r * 1e3:10.3f} {p * 1e3:10.3f} {p / r:7.2f}")


if __name__ == "__main__":
    main()
