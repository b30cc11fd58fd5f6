"""The tracking store before any run: can it be reached and opened? One check for every command.

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
        f"tracking server {tracking_uri} is unreachable ({problem}); checked {url} "
        f"with a {timeout:g} s timeout"
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


def check_store(tracking_uri: str, timeout: float = 10.0) -> None:
    """Raise :class:`StoreUnavailable` unless the store at ``tracking_uri`` can be used."""
    check_server(tracking_uri, timeout)
    check_sqlite(tracking_uri)


def main() -> None:
    """``python -m core.tracking``: check the store ``MLFLOW_TRACKING_URI`` names (``make run``
    does, before ``mlflow run``); exit 0, or 69 with one line."""
    import sys

    try:
        check_store(contracts.tracking_uri())
    except StoreUnavailable as err:
        print(f"tracking store check: {err}", file=sys.stderr)
        sys.exit(EXIT_UNAVAILABLE)


if __name__ == "__main__":
    main()
