"""The session's champion store: a tracking store in which the project ran through
``mlflow run . --env-manager local`` with the default config, so that version 1 of
``iris-classifier`` is registered, validated and champion, with four real step runs and
their cache records. What the command printed is kept beside it (``STDOUT``): the
end-to-end test of the default pipeline reads this run instead of running its own.

Built once per test session, in the background as soon as a worker sees a test that
needs it (``python -m tests.support.champion_store DIR``), under a file lock: one process
builds it, everyone else waits for it. Tests get copies (``factories.copy_store``).
"""

from __future__ import annotations

import json
import os
import shutil
import signal
import subprocess
import sys
from pathlib import Path

from core import contracts
from core.locks import file_lock

NAME = "champion-store"
OUTPUTS = "outputs.json"
STDOUT = "mlflow-run.out"
BUILD_TIMEOUT = 1800  # seconds; about 30 on a quiet machine


def ensure(shared: Path) -> Path:
    """The champion store under ``shared``, built now unless it already is."""
    template = shared / NAME
    with file_lock(shared / f"{NAME}.lock", wait=BUILD_TIMEOUT):
        if not (template / OUTPUTS).exists():
            build(template)
    return template


def build(template: Path) -> None:
    from tests.support.factories import EXPERIMENT, mlflow_run, new_store, pipeline_outputs, venv_env

    shutil.rmtree(template, ignore_errors=True)
    template.mkdir(parents=True)
    uri = new_store(None, template)
    result = mlflow_run(
        venv_env(
            MLFLOW_TRACKING_URI=uri,
            MLFLOW_EXPERIMENT_NAME=EXPERIMENT,
            PIPELINE_LOCK_DIR=str(template / "locks"),
            PYTHONPATH=str(contracts.PROJECT_DIR),
        ),
        template,
        timeout=BUILD_TIMEOUT,
    )
    if result.returncode != 0 or "promoted version 1 to champion" not in result.stdout:
        raise RuntimeError(
            f"the champion store could not be built (exit {result.returncode}):\n"
            f"{result.stdout[-3000:]}\n{result.stderr[-3000:]}"
        )
    (template / STDOUT).write_text(result.stdout)
    # Written last and whole (a rename): its presence means the store is complete.
    partial = template / f"{OUTPUTS}.partial"
    partial.write_text(json.dumps(pipeline_outputs(uri)))
    os.replace(partial, template / OUTPUTS)


def start_in_background(shared: Path) -> subprocess.Popen:
    """Build the store in another process; its output goes to ``champion-store-<pid>.log``."""
    shared.mkdir(parents=True, exist_ok=True)
    with open(shared / f"{NAME}-{os.getpid()}.log", "w") as log:
        return subprocess.Popen(
            [sys.executable, "-m", "tests.support.champion_store", str(shared)],
            cwd=contracts.PROJECT_DIR,
            stdout=log,
            stderr=subprocess.STDOUT,
            start_new_session=True,  # its own process group: stop_background stops the pipeline too
        )


def stop_background(process: subprocess.Popen) -> None:
    """Stop a build still running when the session ends, with the pipeline it started."""
    if process.poll() is None:
        os.killpg(process.pid, signal.SIGTERM)
        try:
            process.wait(timeout=30)
        except subprocess.TimeoutExpired:
            os.killpg(process.pid, signal.SIGKILL)
            process.wait()


if __name__ == "__main__":
    ensure(Path(sys.argv[1]))
