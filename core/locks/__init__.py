"""The locks that order pipeline work against one tracking store; everything that takes one
comes through :func:`store_lock`.

- ``pipeline``: held by ``ops.retrain`` for a whole run, so two scheduled runs
  never both train and promote;
- ``gate``: held by ``evaluate``, ``ops.rollback`` and ``ops.promote`` while they read
  the champion and move aliases, so that decisions are made one after another; under
  it, a change of the registry that a killed process left half made is undone first
  (:func:`settle`, ``core.registry.recover``);
- ``init``: held by ``ops.retrain`` while it creates a new SQLite store;
- ``drift``: held while a drift check is recorded (``core.drift_record``), so that the
  checks of one version go to one run.

Where they are held (:func:`lock_url`):

- on a PostgreSQL server every host reaches (``core.locks.postgres``): the one named by
  ``PIPELINE_LOCK_URL``, else the tracking store itself when it is a ``postgresql://``
  database (every host already reaches it; a tracking server's own database is not
  implied: its clients may have no account there). The lock then holds across hosts.
- otherwise in files (``core.locks.files``) beside an SQLite database, or in
  ``$PIPELINE_LOCK_DIR`` (default ``.locks/`` in the project) for a tracking server; a
  file lock holds among the processes of one host.
"""

from __future__ import annotations

import contextlib
import os
from collections.abc import Iterator

from core.contracts import tracking_uri
from core.locks.files import file_lock, lock_dir, lock_path
from core.locks.held import HOST_GATE, Held, LockBusy, LockLost, LockUnavailable
from core.locks.postgres import is_postgres

__all__ = [
    "GATE_LOCK_WAIT",
    "HOST_GATE",
    "LOCK_URL_ENV",
    "Held",
    "LockBusy",
    "LockLost",
    "LockUnavailable",
    "file_lock",
    "gate_lock",
    "lock_dir",
    "lock_path",
    "lock_url",
    "settle",
    "store_lock",
]

# Seconds to wait for the gate lock: a decision holds it for a second or two.
GATE_LOCK_WAIT = 60.0
# The PostgreSQL server holding the locks of every host: postgresql://[user[:password]@]host[:port]/database
LOCK_URL_ENV = "PIPELINE_LOCK_URL"


def lock_url(store: str) -> str | None:
    """The PostgreSQL server holding the locks of the tracking store ``store``: ``$PIPELINE_LOCK_URL``,
    else ``store`` itself when it is a PostgreSQL database; None: file locks, on this host."""
    configured = os.environ.get(LOCK_URL_ENV, "").strip()
    if configured:
        return configured
    return store if is_postgres(store) else None


@contextlib.contextmanager
def store_lock(name: str, wait: float, store: str | None = None) -> Iterator[Held]:
    """Hold lock ``name`` of the tracking store ``store`` (default: the current one), waiting at
    most ``wait`` seconds: ``LockBusy`` after the wait, naming the holder; ``LockUnavailable``
    when the lock server cannot be reached (one line, without the URL's password)."""
    store = store or tracking_uri()
    url = lock_url(store)
    if url is None:
        with file_lock(lock_path(store, name), wait=wait):
            yield Held(name)
        return
    from core.locks.postgres import advisory_lock

    with advisory_lock(url, store, name, wait) as held:
        yield held


def gate_lock(wait: float = GATE_LOCK_WAIT):
    """The lock held while the champion is read and aliases move (``evaluate``,
    ``ops.rollback``, ``ops.promote``), for the current tracking store."""
    return store_lock("gate", wait)


def settle(client, name: str, wait: float = GATE_LOCK_WAIT) -> str | None:
    """Undo a change of registered model ``name`` that a killed process left half made
    (``core.registry.recover``), under the gate lock; one line saying what was undone, or
    None. ``LockBusy`` when a decision holds the lock all of ``wait``: it is then alive."""
    from core.registry import recover

    with gate_lock(wait) as held:
        return recover(client, name, held)
