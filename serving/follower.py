"""Following an alias: which model version ``make serve`` answers with, and moving to the
version the alias points at without a failed or delayed request.

A server started on ``models:/<name>@<alias>`` serves that alias, not the version it
pointed at when the server started. A background thread reads the alias every
``poll_interval`` seconds (one registry read, on SQLite or an ``http://`` tracking
server), or at once when woken (:meth:`Follower.wake`: a signed MLflow webhook, see
:mod:`serving.webhook`). When the alias points at another version, that thread:

1. loads exactly that version, ``models:/<name>/<version>``, through
   ``core.integrity.load_verified`` (its files checked against their record);
2. checks it (:func:`serving.model_check.check_model`: each method it offers on its
   logged input example);
3. builds its scoring app and swaps it in: one assignment of :attr:`Follower.current`,
   which each request reads once when it starts. A request in flight finishes on the
   version it started on; no request waits for a load (requests answered during one
   share the interpreter with it: bench/swap.py measures their latency).

The alias is read as it was before a change of the registry under way (a gate decision,
a rollback: ``core.registry``); while one is, it is read again every
:data:`PENDING_RECHECK` seconds, as the change's end sends no webhook.

A version that fails 1 or 2 is not swapped in: the server keeps answering with the
version it has, logs why, reports it (:meth:`Follower.status`), and tries that version
again only when the alias moves again (away and back counts). A registry that cannot be
read is reported too, and read again at the next poll. The report, which any caller
of ``/status`` reads, gives errors other than this project's refusals by kind only
(:func:`shown`). A server started on anything else (``models:/<name>/3``,
``models:/m-<id>``) is pinned: nothing is polled, ever.
"""

from __future__ import annotations

import logging
import os
import threading
import time
from collections.abc import Callable
from typing import Any

from mlflow.exceptions import MlflowException

from core.access import explain, refusal_of
from core.integrity import UntrustedModel
from core.registry import alias_read
from serving.model_check import ModelCheckFailed
from serving.served import Served, iso, load_served
from serving.workers import WAKE_CHECK_SECONDS, Shared

log = logging.getLogger("serving.follower")

DEFAULT_POLL_INTERVAL = 10.0  # seconds
# A change of the registry under way (core.registry) is read as the state before it; its
# end moves no alias and so sends no webhook: the alias is read again this often until the
# change is over, for PENDING_PATIENCE seconds, then every PENDING_SLOW_RECHECK.
PENDING_RECHECK = 0.5  # seconds
PENDING_PATIENCE = 60.0
PENDING_SLOW_RECHECK = 10.0


def shown(err: BaseException) -> str:
    """What ``GET /status`` (open to any caller) says of ``err``: this project's refusals of a
    version (its files differ from their record, its check failed) as they are; anything else
    (MLflow's or the store's text, which may name addresses, accounts and paths) by its kind
    only. The server's log has it whole."""
    if isinstance(err, (UntrustedModel, ModelCheckFailed)):
        return getattr(err, "message", None) or str(err)
    refused = refusal_of(err)
    if refused is not None:
        return f"the tracking server refused this server's account (HTTP {refused.status}); see the server's log"
    return f"{type(err).__name__}; see the server's log"


def parse_alias(model_uri: str) -> tuple[str, str] | None:
    """(registered model name, alias) of ``models:/<name>@<alias>``; None for any other URI."""
    body = model_uri.removeprefix("models:/") if model_uri.startswith("models:/") else ""
    name, at, alias = body.rpartition("@")
    return (name, alias) if at and name and alias and "/" not in body else None


def read_alias(name: str, alias: str) -> tuple[str | None, bool]:
    """The alias's version as it was before a registry change under way, and whether one is
    (``core.registry.alias_read``)."""
    from mlflow import MlflowClient

    return alias_read(MlflowClient(), name, alias)


class Follower:
    """The version a server answers with, and the thread that moves it (module docstring)."""

    def __init__(
        self,
        model_uri: str,
        build_app: Callable[[Any], Any],
        poll_interval: float = DEFAULT_POLL_INTERVAL,
        read: Callable[[str, str], tuple[str | None, bool] | str | None] = read_alias,
        load: Callable[[str, Callable], Served] = load_served,
        shared: Shared | None = None,
    ):
        self.model_uri = model_uri
        self.target = parse_alias(model_uri)  # None: pinned
        self.poll_interval = poll_interval
        self._build_app, self._read, self._load = build_app, read, load
        self.shared = shared  # the other workers of this server, if any (serving.workers)
        self.current: Served | None = None
        self.last_seen: str | None = None  # the alias's version at the last check that read it
        self.last_check: dict | None = None
        self.last_refused: dict | None = None
        self._checking = threading.Lock()
        self._wake = threading.Event()
        self._stop = threading.Event()
        self._thread: threading.Thread | None = None
        self._wake_mark = ""  # the shared wake file's content when following started
        self._recheck_at: float | None = None  # when to read again a change seen under way
        self._pending_since: float | None = None

    def start_serving(self) -> Served:
        """Load and check the first version (an alias read now); raise if it cannot be served."""
        uri = self.model_uri
        if self.target is not None:
            name, alias = self.target
            self.last_seen = self._read_version(name, alias)
            if self.last_seen is None:
                raise MlflowException(f"registered model {name!r} has no alias {alias!r}")
            uri = f"models:/{name}/{self.last_seen}"
        self.current = self._load(uri, self._build_app)
        self._outcome("start", self.current.version, "loaded")
        log.info(
            "serving %s version %s (%s), loaded and checked in %.2f s",
            self.current.name,
            self.current.version,
            self.current.uri,
            self.current.load_seconds,
        )
        return self.current

    def check(self, trigger: str = "poll") -> str:
        """Read the alias once and, if it moved, load, check and swap in its version.
        Returns the outcome: ``pinned``, ``unreadable``, ``no_alias``, ``current``,
        ``not_retried`` (the version refused before), ``swapped`` or ``refused``."""
        if self.target is None:
            return "pinned"
        name, alias = self.target
        with self._checking:
            try:
                version = self._read_version(name, alias)
            except Exception as err:  # the registry is down or failing: keep serving, read again later
                why = explain(err, model=name) or err
                log.warning(
                    "cannot read alias %s of %s: %s; still serving version %s", alias, name, why, self.current.version
                )
                return self._outcome(trigger, None, "unreadable", f"cannot read the alias: {shown(err)}")
            if version is None:
                self.last_seen = None  # the alias set again later is a move, even to a refused version
                return self._outcome(
                    trigger,
                    None,
                    "no_alias",
                    f"registered model {name!r} has no alias {alias!r}; still serving version {self.current.version}",
                )
            if version == self.current.version:
                self.last_seen = version
                return self._outcome(trigger, version, "current")
            if version == self.last_seen:
                error = (self.last_refused or {}).get("error", "refused before")
                return self._outcome(
                    trigger,
                    version,
                    "not_retried",
                    f"version {version} was refused and is tried again only when the alias moves again: {error}",
                )
            self.last_seen = version
            return self._swap(trigger, name, version)

    def _swap(self, trigger: str, name: str, version: str) -> str:
        old = self.current
        try:
            new = self._load(f"models:/{name}/{version}", self._build_app)
        except (MlflowException, ModelCheckFailed) as err:
            if not isinstance(err, (UntrustedModel, ModelCheckFailed)):
                log.error("loading version %s of %s failed: %s", version, name, explain(err, model=name) or err)
            return self._refuse(trigger, version, shown(err))
        except Exception as err:  # a load that fails in any other way refuses the version just the same
            log.exception("loading version %s of %s failed", version, name)
            return self._refuse(trigger, version, shown(err))
        self.current = new  # the swap: requests that start from now on get the new version
        log.info(
            "now serving %s version %s (was version %s): loaded and checked in %.2f s",
            name,
            version,
            old.version,
            new.load_seconds,
        )
        return self._outcome(trigger, version, "swapped")

    def _refuse(self, trigger: str, version: str, error: str) -> str:
        log.error(
            "version %s of %s is not served: %s; still serving version %s",
            version,
            self.target[0],
            error,
            self.current.version,
        )
        self.last_refused = {"version": version, "at": iso(time.time()), "error": error}
        return self._outcome(trigger, version, "refused", error)

    def _record(self, trigger: str, version: str | None, outcome: str, error: str | None = None) -> dict:
        return {
            "at": iso(time.time()),
            "trigger": trigger,
            "alias_version": version,
            "outcome": outcome,
            "error": error,
        }

    def _outcome(self, trigger: str, version: str | None, outcome: str, error: str | None = None) -> str:
        self.last_check = self._record(trigger, version, outcome, error)
        if self.shared is not None:
            self.shared.publish(self.worker_status())
        return outcome

    def status(self) -> dict:
        """What ``GET /status`` answers: what is served, what is followed, the last check."""
        return {
            "model_uri": self.model_uri,
            "alias": self.target[1] if self.target else None,
            "following": self.target is not None,
            "poll_interval_seconds": self.poll_interval if self.target else None,
        } | self.worker_status()

    def _read_version(self, name: str, alias: str) -> str | None:
        """Read the alias; when a registry change is under way, plan to read it again soon."""
        try:
            found = self._read(name, alias)
        except Exception:
            if self._recheck_at is not None:  # a change was under way: look again, not at once
                self._plan_recheck()
            raise
        version, pending = found if isinstance(found, tuple) else (found, False)
        if not pending:
            self._pending_since = self._recheck_at = None
        else:
            self._plan_recheck()
        return version

    def _plan_recheck(self) -> None:
        """Read again soon while a change is under way; after PENDING_PATIENCE, at
        PENDING_SLOW_RECHECK (a webhook-only server gets no word of its end)."""
        now = time.monotonic()
        self._pending_since = self._pending_since or now
        patient = now - self._pending_since < PENDING_PATIENCE
        self._recheck_at = now + (PENDING_RECHECK if patient else PENDING_SLOW_RECHECK)

    def worker_status(self) -> dict:
        """This worker's part of :meth:`status`: its pid, version and last check."""
        return {
            "pid": os.getpid(),
            "served": self.current.describe() if self.current else None,
            "last_check": self.last_check,
            "last_refused": self.last_refused,
        }

    def wake(self) -> None:
        """Read the alias now rather than at the next poll (a webhook said it moved), in
        every worker of this server."""
        if self.shared is not None:
            self.shared.signal_wake()
        self._wake.set()

    def start(self) -> None:
        """Start following (nothing to do for a pinned model)."""
        if self.target is None or self._thread is not None:
            return
        # Read here, not in the thread, which may start late: a wake another worker signals
        # in between would otherwise be taken for the state before it, and missed.
        self._wake_mark = self.shared.wake_mark() if self.shared else ""
        self._thread = threading.Thread(target=self._run, name="alias-follower", daemon=True)
        self._thread.start()

    def stop(self, timeout: float = 5.0) -> None:
        self._stop.set()
        self._wake.set()
        if self._thread is not None:
            self._thread.join(timeout)
        if self.shared is not None:
            self.shared.leave()

    def _run(self) -> None:
        mark = self._wake_mark
        next_poll = time.monotonic() + self.poll_interval
        while not self._stop.is_set():
            # Without other workers, sleep until the next poll or a wake; with them, also look
            # every WAKE_CHECK_SECONDS for a webhook another worker received.
            waits = [next_poll - time.monotonic()] if self.poll_interval > 0 else []
            waits += [WAKE_CHECK_SECONDS] if self.shared else []
            waits += [self._recheck_at - time.monotonic()] if self._recheck_at is not None else []
            woken = self._wake.wait(max(0.0, min(waits)) if waits else None)
            if self._stop.is_set():
                return
            if self.shared is not None and (seen := self.shared.wake_mark()) != mark:
                mark, woken = seen, True
            due = self._recheck_at is not None and time.monotonic() >= self._recheck_at
            if not woken and not due and (self.poll_interval <= 0 or time.monotonic() < next_poll):
                continue
            self._wake.clear()  # a wake from now on is answered by another check after this one
            try:
                self.check("webhook" if woken else "pending" if due else "poll")
            except Exception:  # a bug here must not stop the following: logged, and the next poll runs
                log.exception("checking alias %s of %s failed", self.target[1], self.target[0])
            next_poll = time.monotonic() + self.poll_interval
