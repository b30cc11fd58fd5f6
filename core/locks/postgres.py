"""PostgreSQL advisory locks: one lock for every host that reaches one server (``core.locks``
takes them when ``PIPELINE_LOCK_URL`` is set, or when the tracking store is PostgreSQL itself).

A lock is a session-level advisory lock held on a connection of its own, open while the
lock is held: ``pg_try_advisory_lock`` is tried every :data:`POLL` seconds until the wait
ends, so a waiter that dies while it waits never gets it. The server releases the lock
when that session ends: at once when the holder's process dies (its kernel closes the
connection), and within :data:`DEAD_HOST_SECONDS` when its host vanishes or is cut off
(TCP keepalives and a user timeout set for the session on both ends, and
``client_connection_check_interval`` on PostgreSQL 14 and later). The key is a 64-bit hash
of the tracking store (its URI without credentials) and the lock's name (:func:`lock_key`);
the session's ``application_name`` says who holds it, and a waiter reads it from
``pg_stat_activity``. No message, log line or session name carries the URL's password
(:func:`without_password`).
"""

from __future__ import annotations

import contextlib
import hashlib
import logging
import os
import re
import socket
import time
from collections.abc import Iterator
from urllib.parse import unquote, urlsplit, urlunsplit

from core.locks.held import Held, LockBusy, LockLost, LockUnavailable

log = logging.getLogger(__name__)

POLL = 0.25  # seconds between tries of a busy lock
CONNECT_TIMEOUT = 10  # seconds to reach the lock server
# A silent peer is probed after KEEPALIVE_IDLE seconds, then every KEEPALIVE_INTERVAL; after
# KEEPALIVE_COUNT unanswered probes the session ends and the server releases its locks.
KEEPALIVE_IDLE, KEEPALIVE_INTERVAL, KEEPALIVE_COUNT = 10, 5, 3
DEAD_HOST_SECONDS = KEEPALIVE_IDLE + KEEPALIVE_INTERVAL * KEEPALIVE_COUNT
SCHEMES = ("postgresql", "postgres")

# The session holding an advisory lock on a bigint key: its high half is classid, its low half objid.
HOLDER = """
SELECT a.application_name, a.client_addr, a.backend_start
FROM pg_locks l JOIN pg_stat_activity a ON a.pid = l.pid
WHERE l.locktype = 'advisory' AND l.granted AND l.objsubid = 1
  AND l.classid::bigint = %s AND l.objid::bigint = %s
  AND l.database = (SELECT oid FROM pg_database WHERE datname = current_database())
"""


def is_postgres(uri: str) -> bool:
    """Whether ``uri`` names a PostgreSQL database (``postgresql://``, ``postgresql+driver://``)."""
    scheme, sep, _ = uri.partition("://")
    return bool(sep) and scheme.lower().split("+")[0] in SCHEMES


def without_password(url: str) -> str:
    """``url`` without its password (in the user part or as a ``password`` parameter)."""
    parts = urlsplit(url)
    user, at, hosts = parts.netloc.rpartition("@")
    netloc = f"{user.partition(':')[0]}@{hosts}" if at else hosts
    query = "&".join(p for p in parts.query.split("&") if p and p.partition("=")[0].lower() != "password")
    return urlunsplit((parts.scheme, netloc, parts.path, query, ""))


DEFAULT_PORTS = {"postgresql": 5432, "http": 80, "https": 443}


def store_identity(uri: str) -> str:
    """A store (or lock server) as the lock key names it: its URI without user, password,
    parameters, driver, default port or trailing slash, scheme and host in lower case. Every host must name the
    tracking store by this same identity for their locks to meet."""
    parts = urlsplit(uri)
    if not parts.netloc:  # sqlite:////abs/path/mlflow.db: the path is the store
        return uri
    scheme = parts.scheme.lower().split("+")[0]  # postgresql+psycopg:// names the same store
    scheme = "postgresql" if scheme == "postgres" else scheme
    host = parts.netloc.rpartition("@")[2].lower()
    host = host.removesuffix(f":{DEFAULT_PORTS[scheme]}") if scheme in DEFAULT_PORTS else host
    return urlunsplit((scheme, host, parts.path.rstrip("/"), "", ""))


def lock_key(store: str, name: str) -> int:
    """The advisory lock key of lock ``name`` of the store at ``store``: a signed 64-bit
    number, the same on every host and version (stores never share one)."""
    digest = hashlib.sha256(f"{store_identity(store)}\n{name}".encode()).digest()
    return int.from_bytes(digest[:8], "big", signed=True)


def one_line(err: BaseException, url: str) -> str:
    """``err`` on one line, without the password of ``url`` should the driver quote it."""
    text = " ".join(str(err).split()) or type(err).__name__
    parts = urlsplit(url)
    secrets = {parts.password or ""} | set(re.findall(r"(?:^|&)password=([^&]*)", parts.query, re.I))
    for secret in sorted(secrets - {""}, key=len, reverse=True):
        text = text.replace(secret, "***").replace(unquote(secret), "***")
    return text


def connect(url: str, name: str):
    """An autocommit connection to ``url`` for one lock named ``name``, its session named for
    its holder, with keepalives on both ends; :class:`LockUnavailable` when it cannot be made."""
    import psycopg

    if not is_postgres(url):
        shown = (
            repr(without_password(url))
            if "://" in url
            else "a value that is not a URL (not shown: it may hold a password)"
        )
        raise LockUnavailable(f"PIPELINE_LOCK_URL must be a postgresql:// URL, not {shown}")
    dsn = re.sub(r"^[^:]*:", "postgresql:", url, count=1)  # SQLAlchemy's postgresql+psycopg:// is libpq's postgresql://
    holder = f"pipeline lock {name}: pid {os.getpid()} on {socket.gethostname()}"
    try:
        conn = psycopg.connect(
            dsn,
            autocommit=True,
            connect_timeout=CONNECT_TIMEOUT,
            application_name=holder[:63],
            keepalives=1,
            keepalives_idle=KEEPALIVE_IDLE,
            keepalives_interval=KEEPALIVE_INTERVAL,
            keepalives_count=KEEPALIVE_COUNT,
            tcp_user_timeout=DEAD_HOST_SECONDS * 1000,
        )
    except psycopg.Error as err:
        raise LockUnavailable(
            f"the lock server {without_password(url)} cannot be reached: {one_line(err, url)}"
        ) from None
    settings = {
        "tcp_keepalives_idle": str(KEEPALIVE_IDLE),
        "tcp_keepalives_interval": str(KEEPALIVE_INTERVAL),
        "tcp_keepalives_count": str(KEEPALIVE_COUNT),
        "tcp_user_timeout": str(DEAD_HOST_SECONDS * 1000),
        "idle_session_timeout": "0",  # the holder's session is idle by design
    }
    if conn.info.server_version >= 140000:
        settings["client_connection_check_interval"] = str(KEEPALIVE_INTERVAL * 1000)
    try:
        conn.execute(
            "SELECT " + ", ".join(["set_config(%s, %s, false)"] * len(settings)),
            [item for pair in settings.items() for item in pair],
        )
    except psycopg.Error as err:
        conn.close()
        raise LockUnavailable(
            f"the lock server {without_password(url)} refused the session: {one_line(err, url)}"
        ) from None
    return conn


def holder(conn, key: int) -> str:
    """Who holds the advisory lock ``key``, as its session names itself; "unknown" when none is seen."""
    import psycopg

    try:
        row = conn.execute(HOLDER, ((key >> 32) & 0xFFFFFFFF, key & 0xFFFFFFFF)).fetchone()
    except psycopg.Error:
        return "holder unknown"
    if row is None:
        return "holder unknown"
    name, address, since = row  # another account's session shows its name only (pg_read_all_stats shows all)
    said = [f"held by {(name or '').partition(': ')[2] or name or 'a session of another account'}"]
    said += [f"from {address}"] if address else []
    said += [f"connected {since:%Y-%m-%dT%H:%M:%S%z}"] if since else []
    return ", ".join(said)


@contextlib.contextmanager
def advisory_lock(url: str, store: str, name: str, wait: float) -> Iterator[Held]:
    """Hold the advisory lock ``name`` of the tracking store ``store`` on the server at ``url``,
    waiting at most ``wait`` seconds: :class:`LockBusy` after the wait, naming the holder."""
    import psycopg

    key, server, what = lock_key(store, name), without_password(url), f"the {name} lock of {store_identity(store)}"
    conn = connect(url, name)
    try:
        deadline = time.monotonic() + wait
        while not conn.execute("SELECT pg_try_advisory_lock(%s)", (key,)).fetchone()[0]:
            if time.monotonic() >= deadline:
                raise LockBusy(
                    f"another pipeline run holds {what} ({holder(conn, key)}; lock server {server}); waited {wait:g} s"
                )
            time.sleep(POLL)
    except psycopg.Error as err:
        conn.close()
        raise LockUnavailable(f"the lock server {server} was lost while waiting: {one_line(err, url)}") from None
    except BaseException:
        conn.close()
        raise

    def check() -> None:
        try:
            conn.execute("SELECT 1")
        except psycopg.Error as err:
            raise LockLost(
                f"the session holding {what} on the lock server {server} ended ({one_line(err, url)}); "
                "another host may hold it now"
            ) from None

    try:
        yield Held(name, shared=f"{store_identity(url)} key {key}", check=check)
    finally:
        try:
            conn.execute("SELECT pg_advisory_unlock(%s)", (key,))
        except psycopg.Error as err:
            log.error(
                "the session holding %s on %s ended before its holder was done: %s", what, server, one_line(err, url)
            )
        finally:
            conn.close()
