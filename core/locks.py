"""File locks that order pipeline work against one tracking store on one host.

- ``pipeline``: held by ``ops.retrain`` for a whole run, so two scheduled runs
  never both train and promote;
- ``gate``: held by ``evaluate``, ``ops.rollback`` and ``ops.promote`` while they read
  the champion and move aliases, so that decisions are made one after another; under
  it, a change of the registry that a killed process left half made is undone first
  (:func:`settle`, ``core.registry.recover``).

Locks sit beside an SQLite database, or in ``$PIPELINE_LOCK_DIR`` (default
``.locks/`` in the project) for a tracking server. A file lock holds among the
processes of one host; several hosts sharing a server need their scheduler to
run one retrain at a time.
"""

from __future__ import annotations

import contextlib
import fcntl
import hashlib
import os
import time
from collections.abc import Iterator
from pathlib import Path

from core.contracts import PROJECT_DIR, sqlite_path, tracking_uri

# Seconds to wait for the gate lock: a decision holds it for a second or two.
GATE_LOCK_WAIT = 60.0


class LockBusy(RuntimeError):
    """The lock stayed taken for the whole wait."""


def lock_dir() -> Path:
    return Path(os.environ.get("PIPELINE_LOCK_DIR") or PROJECT_DIR / ".locks")


def lock_path(tracking_uri: str, name: str = "pipeline") -> Path:
    """The lock file ``name`` for the store at ``tracking_uri``."""
    db = sqlite_path(tracking_uri)
    if db is not None:
        return db.with_name(f"{db.name}.{name}.lock")
    store = hashlib.sha256(tracking_uri.encode()).hexdigest()[:16]
    return lock_dir() / f"{name}-{store}.lock"


@contextlib.contextmanager
def file_lock(path: Path, wait: float) -> Iterator[None]:
    """Hold an exclusive ``flock`` on ``path``, waiting at most ``wait`` seconds.

    The kernel releases it when the process dies, so a killed run leaves no stale lock.
    """
    path.parent.mkdir(parents=True, exist_ok=True)
    with open(path, "a+") as handle:
        deadline = time.monotonic() + wait
        while True:
            try:
                fcntl.flock(handle, fcntl.LOCK_EX | fcntl.LOCK_NB)
                break
            except BlockingIOError:
                if time.monotonic() >= deadline:
                    handle.seek(0)
                    holder = handle.read().strip() or "unknown"
                    raise LockBusy(f"another pipeline run holds {path} ({holder}); waited {wait:g} s") from None
                time.sleep(0.2)
        handle.seek(0)
        handle.truncate()
        handle.write(f"pid {os.getpid()} since {time.strftime('%Y-%m-%dT%H:%M:%S')}\n")
        handle.flush()
        try:
            yield
        finally:
            handle.truncate(0)
            fcntl.flock(handle, fcntl.LOCK_UN)


def gate_lock(wait: float = GATE_LOCK_WAIT):
    """The lock held while the champion is read and aliases move (``evaluate``,
    ``ops.rollback``, ``ops.promote``), for the current tracking store."""
    return file_lock(lock_path(tracking_uri(), "gate"), wait=wait)


def settle(client, name: str, wait: float = GATE_LOCK_WAIT) -> str | None:
    """Undo a change of registered model ``name`` that a killed process left half made
    (``core.registry.recover``), under the gate lock; one line saying what was undone, or
    None. ``LockBusy`` when a decision holds the lock all of ``wait``: it is then alive."""
    from core.registry import recover

    with gate_lock(wait):
        return recover(client, name)
