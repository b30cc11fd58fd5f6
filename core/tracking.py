"""The tracking store before any run: can it be reached and opened, and which experiment
do the runs go to? One check for every command.

MLflow's own first request to a server that is down retries for minutes (seven
retries with exponential back-off) and ends in a traceback; a SQLite path that
cannot be created ends in SQLAlchemy's. Every command that starts runs
(``make run``, ``ops.retrain``, the driver ``pipeline.main``) checks first with
:func:`check_store` and stops with one line and exit :data:`EXIT_UNAVAILABLE`.
"""

from __future__ import annotations

import os
import sqlite3
import urllib.error
import urllib.request

from core import contracts

EXIT_UNAVAILABLE = 69  # sysexits EX_UNAVAILABLE


class StoreUnavailable(ConnectionError):
    """The tracking store cannot be reached or opened; the message says which and why."""


def check_server(tracking_uri: str, timeout: float) -> None:
    """Raise :class:`StoreUnavailable` if an HTTP tracking server does not answer ``/health``."""
    if not tracking_uri.startswith(("http://", "https://")):
        return
    url = tracking_uri.rstrip("/") + "/health"
    try:
        with urllib.request.urlopen(url, timeout=timeout) as response:
            if response.status == 200:
                return
            problem = f"HTTP {response.status}"
    except (urllib.error.URLError, OSError, ValueError) as err:  # ValueError: a malformed URL
        problem = getattr(err, "reason", err)
    raise StoreUnavailable(
        f"tracking server {tracking_uri} is unreachable ({problem}); checked {url} with a {timeout:g} s timeout"
    )


def check_sqlite(tracking_uri: str) -> None:
    """Raise :class:`StoreUnavailable` if a ``sqlite:///`` store can be neither opened nor
    created: its directory cannot be made, or the file is not a readable, writable database."""
    db = contracts.sqlite_path(tracking_uri)
    if db is None:
        return
    try:
        db.parent.mkdir(parents=True, exist_ok=True)
        if not db.exists():
            if not os.access(db.parent, os.W_OK | os.X_OK):
                raise PermissionError(f"cannot create files in {db.parent}")
            return
        with sqlite3.connect(f"{db.as_uri()}?mode=rw", uri=True, timeout=30) as connection:
            connection.execute("SELECT count(*) FROM sqlite_master").fetchone()
    except (OSError, sqlite3.Error) as err:
        reason = getattr(err, "strerror", None) or str(err)
        raise StoreUnavailable(f"tracking store {tracking_uri} cannot be opened: {reason} ({db})") from None


def unreachable(err: BaseException) -> bool:
    """Whether ``err`` says the store could not be reached (a connection refused or timed
    out, an HTTP error after MLflow's retries) rather than that the model is broken."""
    import requests

    seen = set()
    while err is not None and id(err) not in seen:
        seen.add(id(err))
        if isinstance(
            err, (requests.exceptions.ConnectionError, requests.exceptions.Timeout, ConnectionError, TimeoutError)
        ):
            return True
        if str(getattr(err, "message", "")).startswith("API request to "):
            return True
        err = err.__cause__ or err.__context__
    return False


CONNECT_TIMEOUT = 10.0  # seconds


def connect_timeout() -> float:
    """Seconds a tracking server has to answer ``/health``: :data:`CONNECT_TIMEOUT`, or
    MLflow's own request timeout (``MLFLOW_HTTP_REQUEST_TIMEOUT``) where that is shorter.
    Never longer: ``configure_tracking`` sets MLflow's to 30 s where the user has not."""
    try:
        return min(CONNECT_TIMEOUT, float(os.environ.get("MLFLOW_HTTP_REQUEST_TIMEOUT") or CONNECT_TIMEOUT))
    except ValueError:
        return CONNECT_TIMEOUT


def check_store(tracking_uri: str, timeout: float | None = None) -> None:
    """Raise :class:`StoreUnavailable` unless the store at ``tracking_uri`` can be used
    (a server within ``timeout`` seconds, :func:`connect_timeout` by default)."""
    check_server(tracking_uri, connect_timeout() if timeout is None else timeout)
    check_sqlite(tracking_uri)


class ExperimentUnusable(ValueError):
    """The configured experiment exists but is deleted: MLflow cannot start runs in it."""


def use_experiment(name: str) -> str:
    """The id of experiment ``name``, created if missing (safe when pipelines started together
    create it at once). Not made the process's active experiment (``mlflow.set_experiment``):
    that would outlive this store in a process that goes on; callers pass the id."""
    from mlflow import MlflowClient
    from mlflow.exceptions import MlflowException

    client = MlflowClient()
    experiment = client.get_experiment_by_name(name)
    if experiment is None:
        try:
            _create_experiment(client, name)
        except MlflowException as err:  # created by another process in between
            if err.error_code != "RESOURCE_ALREADY_EXISTS":
                raise
        experiment = client.get_experiment_by_name(name)
    if experiment.lifecycle_stage != "active":
        raise ExperimentUnusable(
            f"experiment {name!r} (id {experiment.experiment_id}) is deleted: restore it "
            f"(mlflow experiments restore --experiment-id {experiment.experiment_id}) or set "
            "experiment.name to another name"
        )
    return experiment.experiment_id


def _create_experiment(client, name: str) -> None:
    """A new experiment; in a SQLite store its artifacts go beside the database (a server decides for itself)."""
    import mlflow

    uri = mlflow.get_tracking_uri()
    db = contracts.sqlite_path(uri)
    if db is None:
        client.create_experiment(name)
        return
    from mlflow.store.tracking.sqlalchemy_store import SqlAlchemyStore

    SqlAlchemyStore(uri, default_artifact_root=contracts.sqlite_artifact_root(db)).create_experiment(name)


def main(argv=None) -> None:
    """``python -m core.tracking [OVERRIDES]``, what ``make run`` does before ``mlflow run``:
    check the store ``MLFLOW_TRACKING_URI`` names, create the experiment the config names
    with these Hydra overrides, and print its name; exit 0, 2 for a bad override, or 69
    with one line."""
    import sys

    from hydra.errors import HydraException

    from core.config import describe_error, experiment_name, split_overrides

    try:
        name = experiment_name(split_overrides(sys.argv[1:] if argv is None else argv))
    except (HydraException, ValueError) as err:  # a bad override, said in one line
        print(f"tracking store check: error: invalid Hydra override: {describe_error(err)}", file=sys.stderr)
        sys.exit(2)
    try:
        check_store(contracts.configure_tracking())
        use_experiment(name)
    except (StoreUnavailable, ExperimentUnusable) as err:
        print(f"tracking store check: {err}", file=sys.stderr)
        sys.exit(EXIT_UNAVAILABLE if isinstance(err, StoreUnavailable) else 2)
    print(name)


if __name__ == "__main__":
    main()
