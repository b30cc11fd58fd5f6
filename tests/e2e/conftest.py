"""Fixtures of the end-to-end tests: the session's shared `mlflow server` on PostgreSQL."""

from __future__ import annotations

from types import SimpleNamespace

import pytest

from tests.support import postgres
from tests.support.tracking_server import tracking_server as start_tracking_server


@pytest.fixture(scope="session")
def tracking_server(tmp_path_factory):
    """The session's `mlflow server` (tests/support/tracking_server.py) on a fresh PostgreSQL
    database: ``uri``, its folder ``root`` (``server-artifacts/``) and ``database`` (its
    ``postgresql://`` URI). Skips, saying why, where PostgreSQL is not running."""
    with postgres.fresh_database(migrated=True) as database:
        if database is None:
            pytest.skip(postgres.unavailable() or f"PostgreSQL at {postgres.ADDRESS} refused a connection")
        root = tmp_path_factory.mktemp("tracking-server")
        with start_tracking_server(database, root) as uri:
            yield SimpleNamespace(uri=uri, root=root, database=database)


@pytest.fixture(scope="session", autouse=True)
def postgres_template():
    """The session's migrated PostgreSQL template (tests/support/postgres.py), dropped at the end."""
    yield
    postgres.drop_template()
