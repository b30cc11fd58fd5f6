"""File locks (``flock``): held among the processes of one host, released by the kernel
when their holder dies. The default lock of ``core.locks``."""

from __future__ import annotations

import contextlib
import fcntl
import hashlib
import os
import time
from collections.abc import Iterator
from pathlib import Path

from core.contracts import PROJECT_DIR, sqlite_path
from core.locks.held import LockBusy


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
