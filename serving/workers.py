"""What the worker processes of one ``make serve --workers N`` share: a directory.

uvicorn's workers are separate processes, each with its own follower
(:mod:`serving.follower`), and a request (a webhook call, ``GET /status``) reaches
just one of them. Through a directory (``SERVING_SHARED_DIR``, made by
``serving.server`` for the life of the server):

- each worker writes its status there after every check (``worker-<pid>.json``,
  replaced whole), so ``/status`` from any worker lists every live worker's version;
- the worker that receives a webhook touches ``wake``; every follower looks at its
  time every :data:`WAKE_CHECK_SECONDS` and reads the alias at once when it changed.
"""

from __future__ import annotations

import json
import os
import time
from pathlib import Path

SHARED_DIR_ENV = "SERVING_SHARED_DIR"
WAKE_CHECK_SECONDS = 0.25  # how often a follower looks for a webhook another worker received
WAKE_FILE = "wake"


def pid_alive(pid: int) -> bool:
    try:
        os.kill(pid, 0)
    except ProcessLookupError:
        return False
    except PermissionError:  # alive, another user's (a pid reused since)
        return True
    return True


class Shared:
    """The directory the workers of one server share (module docstring)."""

    def __init__(self, directory: str | Path):
        self.directory = Path(directory)
        self.own = self.directory / f"worker-{os.getpid()}.json"

    @classmethod
    def from_env(cls) -> Shared | None:
        directory = os.environ.get(SHARED_DIR_ENV)
        return cls(directory) if directory else None

    def publish(self, status: dict) -> None:
        """Write this worker's ``status`` (whole: a reader never sees half of it)."""
        partial = self.own.with_suffix(".partial")
        partial.write_text(json.dumps(status))
        os.replace(partial, self.own)

    def statuses(self) -> list[dict]:
        """The status of every live worker, by pid; files of workers that died are removed."""
        found = []
        for path in sorted(self.directory.glob("worker-*.json")):
            try:
                pid = int(path.stem.removeprefix("worker-"))
                status = json.loads(path.read_text())
            except (ValueError, OSError):  # being replaced, or not one of ours
                continue
            if pid_alive(pid):
                found.append(status)
            else:
                path.unlink(missing_ok=True)
        return found

    def signal_wake(self) -> None:
        """Tell every worker to read the alias now."""
        (self.directory / WAKE_FILE).write_text(str(time.time_ns()))

    def wake_mark(self) -> str:
        """A value that changes with each :meth:`signal_wake` ("" before the first)."""
        try:
            return (self.directory / WAKE_FILE).read_text()
        except FileNotFoundError:
            return ""

    def leave(self) -> None:
        self.own.unlink(missing_ok=True)
