"""PostgreSQL for the tests: a fresh database on the machine's server, and a SQLite
tracking store copied into one.

The server is the machine's own service at 127.0.0.1:5432 (user ``postgres``, trust
authentication, an existing database ``test`` to connect to); neither the Makefile
nor the test session starts it. Where it refuses connections, :func:`unavailable`
says so and :func:`fresh_database` yields None: a test then skips or falls back to
SQLite, saying why.

MLflow migrates an empty database to its schema (alembic, seconds of CPU) the first time
a server or client opens it; ``fresh_database(migrated=True)`` instead copies a template
migrated once per test session (``CREATE DATABASE ... TEMPLATE``), which the session's
xdist workers share and :func:`drop_template` drops.
"""

from __future__ import annotations

import os
import uuid
from collections.abc import Iterator
from contextlib import contextmanager

from tests.support.helpers import wait_until

ADDRESS = "127.0.0.1:5432"
ADMIN_DSN = "host=127.0.0.1 port=5432 user=postgres dbname=test"
WAIT = 120  # seconds a server that accepts connections may take to answer
# The template's name: one per session (xdist gives its workers the session's id).
TEMPLATE = f"mlflow_template_{(os.environ.get('PYTEST_XDIST_TESTRUNUID') or uuid.uuid4().hex)[:12]}"
# The advisory lock under which the template is built, copied and dropped.
TEMPLATE_LOCK = f"SELECT pg_advisory_lock(hashtext('{TEMPLATE}'))"


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


def _connect_admin():
    import psycopg

    return wait_until(
        lambda timeout: psycopg.connect(f"{ADMIN_DSN} connect_timeout={max(2, int(timeout))}", autocommit=True),
        WAIT,
        f"PostgreSQL at {ADDRESS}",
        transient=(psycopg.OperationalError,),
    )


def _uri(name: str) -> str:
    return f"postgresql://postgres@{ADDRESS}/{name}"


def _ensure_template(admin) -> None:
    """Create and migrate :data:`TEMPLATE` unless it exists (the caller holds the lock): as
    ``mlflow server --artifacts-destination`` leaves a new store, its default experiment's
    artifacts at ``mlflow-artifacts:/0``."""
    from mlflow.store.tracking.sqlalchemy_store import SqlAlchemyStore

    if admin.execute("SELECT 1 FROM pg_database WHERE datname = %s", (TEMPLATE,)).fetchone():
        return
    admin.execute(f"CREATE DATABASE {TEMPLATE}")
    try:
        SqlAlchemyStore(_uri(TEMPLATE), "mlflow-artifacts:/")  # migrates it, makes the default experiment
    except BaseException:
        admin.execute(f"DROP DATABASE IF EXISTS {TEMPLATE} WITH (FORCE)")
        raise
    # A template is copied only with no session on it: this process's pooled ones are ended.
    admin.execute("SELECT pg_terminate_backend(pid, 10000) FROM pg_stat_activity WHERE datname = %s", (TEMPLATE,))


def drop_template() -> None:
    """Drop this session's template, if it was made (another worker makes it again if it needs it)."""
    if unavailable():
        return
    with _connect_admin() as admin:
        admin.execute(TEMPLATE_LOCK)
        admin.execute(f"DROP DATABASE IF EXISTS {TEMPLATE} WITH (FORCE)")


@contextmanager
def fresh_database(migrated: bool = False) -> Iterator[str | None]:
    """A new database, dropped on exit (its connections closed by force): its
    ``postgresql://`` URI, or None where :func:`unavailable` says why not. Empty, or
    ``migrated`` to MLflow's schema as an MLflow server would leave it on first start."""
    if unavailable():
        yield None
        return
    admin = _connect_admin()
    name = f"mlflow_{uuid.uuid4().hex[:12]}"
    try:
        if migrated:
            admin.execute(TEMPLATE_LOCK)
            try:
                _ensure_template(admin)
                admin.execute(f"CREATE DATABASE {name} TEMPLATE {TEMPLATE}")
            finally:
                admin.execute(TEMPLATE_LOCK.replace("_lock(", "_unlock("))
        else:
            admin.execute(f"CREATE DATABASE {name}")
        yield _uri(name)
    finally:
        admin.execute(f"DROP DATABASE IF EXISTS {name} WITH (FORCE)")
        admin.close()


def copy_sqlite_store(sqlite_uri: str, database_uri: str) -> None:
    """Copy the MLflow store at ``sqlite_uri``, row by row, into the database at
    ``database_uri``, empty or migrated, which MLflow migrates to its schema if need be (the same MLflow, so the
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
