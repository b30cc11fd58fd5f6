"""REST latency: the dynamic-dispatch model vs the same estimator in MLflow's native sklearn flavor.

    python -m bench.rest [--requests 2000]

Logs both models in a temporary store, serves each with `mlflow models serve
--env-manager local` on loopback, and sends the same one-row `dataframe_split`
requests over one keep-alive connection, alternating servers in blocks.
Prints median and p99 latency and requests per second, and the ratios.
Target: dynamic-dispatch within 5% of native.
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

import requests

from bench.pyfunc import build_model


def free_port() -> int:
    import socket

    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        return sock.getsockname()[1]


def start_server(command: list[str], env: dict, log: Path, what: str) -> tuple[subprocess.Popen, str]:
    """Start a scoring server, ``command`` followed by ``--port N``, on a free port; return the
    process and its base URL once ``/ping`` answers (a ``RuntimeError`` with its log if never)."""
    port = free_port()
    process = subprocess.Popen([*command, str(port)], env=env, stdout=open(log, "w"), stderr=subprocess.STDOUT)
    base = f"http://127.0.0.1:{port}"
    for _ in range(240):
        try:
            if requests.get(f"{base}/ping", timeout=1).status_code == 200:
                return process, base
        except requests.ConnectionError:
            time.sleep(0.5)
    process.kill()
    raise RuntimeError(f"{what} did not start: {log.read_text()[-2000:]}")


def serve(model_uri: str, env: dict, log: Path) -> tuple[subprocess.Popen, str]:
    command = [
        sys.executable,
        "-m",
        "mlflow",
        "models",
        "serve",
        "-m",
        model_uri,
        "--env-manager",
        "local",
        "-h",
        "127.0.0.1",
        "-w",
        "1",
        "-p",
    ]
    return start_server(command, env, log, model_uri)


def measure(session: requests.Session, base: str, body: dict, n: int) -> list[float]:
    times = []
    for _ in range(n):
        started = time.perf_counter()
        response = session.post(f"{base}/invocations", json=body, timeout=10)
        times.append(time.perf_counter() - started)
        response.raise_for_status()
    return times


def main(argv=None) -> None:
    import mlflow

    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--requests", type=int, default=2000, help="per server")
    args = parser.parse_args(argv)
    with tempfile.TemporaryDirectory() as tmp:
        tmp = Path(tmp)
        model, estimator, features = build_model(tmp)
        from mlflow.models import infer_signature

        example = model.input_example if model.input_example is not None else None
        with mlflow.start_run():  # same column-based input schema as the dispatch model
            native = mlflow.sklearn.log_model(
                estimator, name="native", signature=infer_signature(example, estimator.predict(example))
            )
        env = {
            **os.environ,
            "MLFLOW_TRACKING_URI": mlflow.get_tracking_uri(),
            "PATH": f"{Path(sys.executable).parent}{os.pathsep}{os.environ.get('PATH', '')}",
        }
        dispatch_uri = mlflow.search_logged_models(output_format="list")
        dispatch_uri = next(m.model_uri for m in dispatch_uri if m.name == "model")
        servers = {
            "dynamic-dispatch": serve(dispatch_uri, env, tmp / "dispatch.log"),
            "native sklearn": serve(native.model_uri, env, tmp / "native.log"),
        }
        bodies = {
            "dynamic-dispatch": {
                "dataframe_split": {"columns": features, "data": [[1.4, 0.2]]},
                "params": {"predict_method": "predict"},
            },
            "native sklearn": {"dataframe_split": {"columns": features, "data": [[1.4, 0.2]]}},
        }
        try:
            results = {name: [] for name in servers}
            sessions = {name: requests.Session() for name in servers}
            for name, (_, base) in servers.items():  # warm-up
                measure(sessions[name], base, bodies[name], 100)
            block = 100
            for _ in range(max(1, args.requests // block)):
                for name, (_, base) in servers.items():
                    results[name] += measure(sessions[name], base, bodies[name], block)
        finally:
            for process, _ in servers.values():
                process.terminate()
    stats = {}
    for name, times in results.items():
        ordered = sorted(times)
        stats[name] = (
            statistics.median(ordered) * 1e3,
            ordered[int(len(ordered) * 0.99) - 1] * 1e3,
            len(ordered) / sum(ordered),
        )
    print(f"{'server':<18} {'median ms':>10} {'p99 ms':>8} {'req/s':>8}")
    for name, (median, p99, rps) in stats.items():
        print(f"{name:<18} {median:10.3f} {p99:8.3f} {rps:8.0f}")
    d, n = stats["dynamic-dispatch"], stats["native sklearn"]
    print(f"ratio dispatch/native: median {d[0] / n[0]:.3f}, p99 {d[1] / n[1]:.3f}, req/s {d[2] / n[2]:.3f}")


if __name__ == "__main__":
    main()
