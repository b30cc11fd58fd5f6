"""Latency while `make serve` swaps in a new version, vs steady state; and how soon it answers with it.

    python -m bench.swap [--requests 2000] [--swaps 20]

Registers two versions of the iris model (C=1.0 and C=0.5) in a temporary store,
serves alias `champion` with `python -m serving.server` on loopback, and sends
one-row `dataframe_split` requests over one keep-alive connection from one thread:
`--swaps` times: a block of requests in steady state (`--requests` in all), then
move the alias to the other version, call the server's webhook as MLflow would (signed; the server then
reads the alias at once instead of at its next poll), and keep sending until an
answer carries the new version. Requests sent between the move and that answer
are "during a swap" (the new version is loaded, checked and swapped in meanwhile,
in the server's background thread). Prints p50 and p99 latency of both and their
ratio, and the time from the alias move to the first answer by the new version.
Target: p99 during a swap at most 1.5x steady state.
"""

from __future__ import annotations

import argparse
import json
import os
import statistics
import subprocess
import sys
import tempfile
import time
import uuid
from pathlib import Path

import requests

from bench.rest import start_server

NAME = "bench-swap"
SECRET = "bench"


def build_versions(tmp: Path) -> list[str]:
    """Two registered versions of the default pipeline's estimator, C=1.0 and C=0.5."""
    import mlflow

    from core import data
    from core.config import build_estimator, compose_config
    from steps import package_pyfunc, serialize, train

    mlflow.set_tracking_uri(f"sqlite:///{tmp / 'mlflow.db'}")
    # Its artifacts in the temporary folder too, not in ./mlruns of whatever directory it runs from.
    mlflow.set_experiment(experiment_id=mlflow.create_experiment("bench", (tmp / "artifacts").as_uri()))
    versions = []
    for c in (1.0, 0.5):
        cfg = compose_config([f"model.C={c}"])
        train_rows, holdout, features = data.prepare_data(cfg.data)
        estimator = train.fit_estimator(build_estimator(cfg.model), train_rows, features, cfg.data.target)
        path = tmp / f"estimator-{c}.joblib"
        digest = serialize.serialize_estimator(estimator, path)
        with mlflow.start_run():
            info = package_pyfunc.log_dispatch_model(str(path), digest, estimator, holdout[features].head(5))
        versions.append(str(mlflow.register_model(info.model_uri, NAME).version))
    mlflow.MlflowClient().set_registered_model_alias(NAME, "champion", versions[0])
    return versions


def serve(env: dict, log: Path) -> tuple[subprocess.Popen, str]:
    command = [
        sys.executable,
        "-m",
        "serving.server",
        "--model-uri",
        f"models:/{NAME}@champion",
        "--poll-interval",
        "0",
        "--port",
    ]
    return start_server(command, env, log, "the server")


def call_webhook(session: requests.Session, base: str, version: str) -> None:
    """What MLflow sends when the alias moved, signed (serving.webhook)."""
    from serving.webhook import DELIVERY_ID_HEADER, SIGNATURE_HEADER, TIMESTAMP_HEADER, signature

    body = json.dumps(
        {
            "entity": "model_version_alias",
            "action": "created",
            "data": {"name": NAME, "alias": "champion", "version": version},
        }
    ).encode()
    delivery, stamp = str(uuid.uuid4()), str(int(time.time()))
    headers = {
        "Content-Type": "application/json",
        DELIVERY_ID_HEADER: delivery,
        TIMESTAMP_HEADER: stamp,
        SIGNATURE_HEADER: signature(SECRET, delivery, stamp, body),
    }
    session.post(f"{base}/webhooks/mlflow", data=body, headers=headers, timeout=10).raise_for_status()


def request(session: requests.Session, base: str, body: dict) -> tuple[float, str]:
    """(latency in seconds, the version that answered)."""
    started = time.perf_counter()
    response = session.post(f"{base}/invocations", json=body, timeout=10)
    latency = time.perf_counter() - started
    response.raise_for_status()
    return latency, response.headers["X-Model-Version"]


def percentiles(times: list[float]) -> tuple[float, float]:
    ordered = sorted(times)
    return statistics.median(ordered) * 1e3, ordered[max(0, int(len(ordered) * 0.99) - 1)] * 1e3


def main(argv=None) -> None:
    import mlflow

    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--requests", type=int, default=2000, help="in steady state, spread between the swaps")
    parser.add_argument("--swaps", type=int, default=20)
    args = parser.parse_args(argv)
    with tempfile.TemporaryDirectory() as tmp:
        tmp = Path(tmp)
        versions = build_versions(tmp)
        client = mlflow.MlflowClient()
        env = {
            **os.environ,
            "MLFLOW_TRACKING_URI": mlflow.get_tracking_uri(),
            "SERVING_WEBHOOK_SECRET": SECRET,
            "PATH": f"{Path(sys.executable).parent}{os.pathsep}{os.environ.get('PATH', '')}",
        }
        process, base = serve(env, tmp / "server.log")
        body = {
            "dataframe_split": {"columns": ["petal length (cm)", "petal width (cm)"], "data": [[1.4, 0.2]]},
            "params": {"predict_method": "predict_proba"},
        }
        steady, during, reached = [], [], []
        try:
            with requests.Session() as session:
                for _ in range(200):  # warm-up
                    request(session, base, body)
                for swap in range(args.swaps):
                    # Steady state measured between swaps: a machine whose load drifts weighs on both alike.
                    for _ in range(args.requests // args.swaps):
                        steady.append(request(session, base, body)[0])
                    target = versions[(swap + 1) % 2]
                    moved = time.perf_counter()
                    client.set_registered_model_alias(NAME, "champion", target)
                    call_webhook(session, base, target)
                    while True:
                        latency, version = request(session, base, body)
                        if version == target:
                            reached.append(time.perf_counter() - moved)
                            break
                        during.append(latency)
                    for _ in range(50):  # back to steady state before the next move
                        request(session, base, body)
        finally:
            process.terminate()
            process.wait(30)
    (s50, s99), (d50, d99) = percentiles(steady), percentiles(during)
    print(f"{'requests':<20} {'count':>6} {'p50 ms':>8} {'p99 ms':>8}")
    print(f"{'steady state':<20} {len(steady):6d} {s50:8.3f} {s99:8.3f}")
    print(f"{'during a swap':<20} {len(during):6d} {d50:8.3f} {d99:8.3f}")
    print(f"ratio swap/steady: p50 {d50 / s50:.2f}, p99 {d99 / s99:.2f}")
    print(
        f"alias move -> first answer by the new version: median {statistics.median(reached) * 1e3:.0f} ms, "
        f"max {max(reached) * 1e3:.0f} ms ({len(reached)} swaps)"
    )


if __name__ == "__main__":
    main()
