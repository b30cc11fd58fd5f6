"""Background traffic and registry watching for tests of a server that follows an alias:
a bounded loop of requests recording which version answered each, and a watcher
recording when the alias moved."""

from __future__ import annotations

import threading
import time
from dataclasses import dataclass

import requests
from mlflow import MlflowClient

from core.registry import alias_target

FEATURES = ["petal length (cm)", "petal width (cm)"]
ROWS = [[1.4, 0.2], [4.7, 1.4], [6.0, 2.5]]
METHODS = ("predict", "predict_proba", "predict_log_proba")


@dataclass(frozen=True)
class Answer:
    started: float  # time.monotonic() when the request was sent
    finished: float
    status: int | None  # None: no answer at all (the error is in ``text``)
    version: str | None  # X-Model-Version
    method: str
    text: str


class Load(threading.Thread):
    """Requests to ``base``'s /invocations, the three methods in turn over one keep-alive
    connection, until :meth:`stop`, ``max_requests`` or ``max_seconds`` (whichever first)."""

    def __init__(self, base: str, max_requests: int = 20_000, max_seconds: float = 600, pause: float = 0.02):
        super().__init__(daemon=True)
        self.base, self.max_requests, self.max_seconds, self.pause = base, max_requests, max_seconds, pause
        self.answers: list[Answer] = []
        self._stop_event = threading.Event()

    def run(self) -> None:
        deadline = time.monotonic() + self.max_seconds
        with requests.Session() as session:
            for count in range(self.max_requests):
                if self._stop_event.is_set() or time.monotonic() > deadline:
                    return
                method = METHODS[count % len(METHODS)]
                body = {"dataframe_split": {"columns": FEATURES, "data": ROWS}, "params": {"predict_method": method}}
                started = time.monotonic()
                try:
                    response = session.post(f"{self.base}/invocations", json=body, timeout=30)
                    self.answers.append(
                        Answer(
                            started,
                            time.monotonic(),
                            response.status_code,
                            response.headers.get("X-Model-Version"),
                            method,
                            response.text,
                        )
                    )
                except requests.RequestException as err:
                    self.answers.append(Answer(started, time.monotonic(), None, None, method, repr(err)))
                self._stop_event.wait(self.pause)  # pacing, so that the machine stays usable

    def stop(self) -> list[Answer]:
        self._stop_event.set()
        self.join(60)
        return self.answers

    def first_from(self, version: str, after: float) -> Answer | None:
        """The first answer by ``version`` to a request sent after ``after``."""
        return next((a for a in list(self.answers) if a.started >= after and a.version == version), None)

    def versions_in_order(self) -> list[str | None]:
        """The versions that answered, each run of the same version once."""
        seen: list[str | None] = []
        for answer in self.answers:
            if not seen or seen[-1] != answer.version:
                seen.append(answer.version)
        return seen


class AliasWatcher(threading.Thread):
    """Reads ``alias`` of ``name`` in the store at ``tracking_uri`` every ``interval`` seconds;
    ``moves`` lists (time.monotonic() and time.time() when first seen, version)."""

    def __init__(
        self, tracking_uri: str, name: str, alias: str = "champion", interval: float = 0.05, max_seconds: float = 600
    ):
        super().__init__(daemon=True)
        self.client, self.name, self.alias = MlflowClient(tracking_uri=tracking_uri), name, alias
        self.interval, self.max_seconds = interval, max_seconds
        self.moves: list[tuple[float, float, str | None]] = []
        self._stop_event = threading.Event()

    def run(self) -> None:
        deadline = time.monotonic() + self.max_seconds
        while not self._stop_event.is_set() and time.monotonic() < deadline:
            version = alias_target(self.client, self.name, self.alias)
            if not self.moves or self.moves[-1][2] != version:
                self.moves.append((time.monotonic(), time.time(), version))
            self._stop_event.wait(self.interval)

    def moved_to(self, version: str, after: float = 0.0) -> tuple[float, float] | None:
        """When (monotonic, wall clock) the alias was first seen on ``version`` after ``after`` (monotonic)."""
        return next(((when, wall) for when, wall, seen in list(self.moves) if seen == version and when >= after), None)

    def stop(self) -> None:
        self._stop_event.set()
        self.join(30)
