"""What a lock gives its holder, and how taking one fails (``core.locks``)."""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass

from core.errors import StepError


class LockBusy(RuntimeError):
    """The lock stayed taken for the whole wait."""


class LockUnavailable(StepError):
    """The lock cannot be taken at all: its server cannot be reached, or ``PIPELINE_LOCK_URL``
    is not a PostgreSQL URL (one line, naming the URL without its password)."""


class LockLost(LockUnavailable):
    """The session holding the lock ended while its holder was at work: another host may hold it now."""


def _kept() -> None:
    """A file lock cannot be lost while its process lives."""


@dataclass(frozen=True)
class Held:
    """A lock this process holds.

    ``shared``: for a lock every host takes, which one (recorded with a registry change
    made under it, ``core.registry``); None for a file lock, shared only by the processes
    of this host. ``check()`` raises :class:`LockLost` when the lock may have been lost
    since it was taken; a registry change calls it before each write.
    """

    name: str
    shared: str | None = None
    check: Callable[[], None] = _kept


# The gate lock as held by a caller that took it as a file lock: shared by this host only.
HOST_GATE = Held("gate")
