"""PostgreSQL for the tests: a fresh database on the machine's server, and a SQLite
tracking store copied into one.

The server is the machine's own service at 127.0.0.1:5432 (user ``postgres``, trust
authentication, an existing database ``test`` to connect to); neither the Makefile
nor the test session starts it. Where it refuses connections, :func:`unavailable`
says so and :func:`fresh_database` yields None: a test then skips or falls back to
SQLite, saying why.
"""

from __future__ import annotations

import uuid
from collections.abc import Iterator
from contextlib import contextmanager

from tests.support.helpers import wait_until

ADDRESS = "127.0.0.1:5432"
ADMIN_DSN = "host=127.0.0.1 port=5432 user=postgres dbname=test"
WAIT = 120  # seconds a server that accepts connections may take to answer


def unavailable() -> str | None:
    """Why PostgreSQL cannot be used here, or None.

    A server that is not running refuses at once; one that is slow to answer (starting,
    or on a busy machine) counts as available, and :func:`fresh_database` waits for it.
    """
    try:
        import psycopg
    except ImportError:
        return "psycopg is not installed (requirements-dev.lock)"
    try:
        psycopg.connect(f"{ADMIN_DSN} connect_timeout=5").close()
    except psycopg.OperationalError as err:
        if "refused" in str(err):
            return f"PostgreSQL is not running at {ADDRESS} ({err})"
    return None


@contextmanager
def fresh_database() -> Iterator[str | None]:
    """A new, empty database, dropped on exit (its connections closed by force): its
    ``postgresql://`` URI, or None where :func:`unavailable` says why not."""
    if unavailable():
        yield None
        return
    import psycopg

    admin = wait_until(
        lambda timeout: psycopg.connect(f"{ADMIN_DSN} connect_timeout={max(2, int(timeout))}", autocommit=True),
        WAIT,
        f"PostgreSQL at {ADDRESS}",
        transient=(psycopg.OperationalError,),
    )
    name = f"mlflow_{uuid.uuid4().hex[:12]}"
    try:
        admin.execute(f"CREATE DATABASE {name}")
        yield f"postgresql://postgres@{ADDRESS}/{name}"
    finally:
        admin.execute(f"DROP DATABASE IF EXISTS {name} WITH (FORCE)")
        admin.close()


def copy_sqlite_store(sqlite_uri: str, database_uri: str) -> None:
    """Copy the MLflow store at ``sqlite_uri``, row by row, into the empty database at
    ``database_uri``, which MLflow first migrates to its schema (the same MLflow, so the
    same revision; checked). Artifact locations are copied as they are: the copy shares
    the SQLite store's artifact files."""
    import mlflow
    import sqlalchemy as sa

    mlflow.MlflowClient(tracking_uri=database_uri).search_experiments()  # creates MLflow's tables
    source, target = sa.create_engine(sqlite_uri), sa.create_engine(database_uri)
    read, write = sa.MetaData(), sa.MetaData()
    read.reflect(source)
    write.reflect(target)
    tables = [table for table in write.sorted_tables if table.name != "alembic_version"]
    try:
        with source.connect() as reading, target.begin() as writing:
            revision = sa.text("SELECT version_num FROM alembic_version")
            here, there = reading.execute(revision).scalars().all(), writing.execute(revision).scalars().all()
            if here != there:
                raise RuntimeError(f"{sqlite_uri} is at schema revision {here}, {database_uri} at {there}")
            # The migration's own rows (the default experiment and workspace) give way to the copy's.
            names = ", ".join(f'"{table.name}"' for table in tables)
            writing.execute(sa.text(f"TRUNCATE {names}"))
            for table in tables:
                rows = [dict(row._mapping) for row in reading.execute(sa.select(read.tables[table.name]))]
                if rows:
                    writing.execute(table.insert(), rows)
            # Ids the database generates (experiments) continue after the copied ones.
            for table in tables:
                for column in table.primary_key.columns:
                    sequence = writing.execute(
                        sa.text("SELECT pg_get_serial_sequence(:t, :c)"), {"t": f'"{table.name}"', "c": column.name}
                    ).scalar()
                    if sequence:
                        writing.execute(
                            sa.text(
                                f'SELECT setval(:s, (SELECT coalesce(max("{column.name}"), 0) + 1 '
                                f'FROM "{table.name}"), false)'
                            ),
                            {"s": sequence},
                        )
    finally:
        source.dispose()
        target.dispose()


def lock_sessions(database_uri: str, name: str) -> list[tuple[str, bool]]:
    """The sessions open for lock ``name`` (``core.locks.postgres``) on the database at
    ``database_uri``: (their ``application_name``, whether they hold an advisory lock)."""
    import psycopg

    with psycopg.connect(database_uri, autocommit=True, connect_timeout=10) as conn:
        return conn.execute(
            """
            SELECT a.application_name, EXISTS (
                SELECT 1 FROM pg_locks l WHERE l.pid = a.pid AND l.locktype = 'advisory' AND l.granted)
            FROM pg_stat_activity a
            WHERE a.datname = current_database() AND a.application_name LIKE %s AND a.pid <> pg_backend_pid()
            """,
            (f"pipeline lock {name}: %",),
        ).fetchall()


def end_sessions(database_uri: str, application_name: str) -> int:
    """End the sessions named ``application_name`` on the database at ``database_uri``, as a
    server restart or a cut connection would (waiting up to 10 s for each to end; PostgreSQL
    14 and later); how many were ended."""
    import psycopg

    with psycopg.connect(database_uri, autocommit=True, connect_timeout=10) as conn:
        rows = conn.execute(
            "SELECT pg_terminate_backend(pid, 10000) FROM pg_stat_activity "
            "WHERE datname = current_database() AND application_name = %s",
            (application_name,),
        ).fetchall()
    return sum(1 for (ended,) in rows if ended)
