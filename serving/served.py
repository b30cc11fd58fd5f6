"""A version ``make serve`` answers with: loaded with its files checked, checked, its scoring
app built (:func:`load_served`), and how its answers name it (``X-Model-Name`` and
``X-Model-Version`` headers)."""

from __future__ import annotations

import time
from collections.abc import Callable
from dataclasses import dataclass
from datetime import datetime, timezone
from typing import Any
from urllib.parse import quote

from core.integrity import load_verified, resolve
from serving.model_check import check_model

NAME_HEADER = "X-Model-Name"
VERSION_HEADER = "X-Model-Version"


def iso(timestamp: float) -> str:
    return datetime.fromtimestamp(timestamp, timezone.utc).isoformat(timespec="milliseconds")


def header_value(text: str) -> bytes:
    """``text`` as an HTTP header value: as it is if printable ASCII, else percent-encoded."""
    return (text if text.isascii() and text.isprintable() else quote(text)).encode("ascii")


@dataclass(frozen=True)
class Served:
    """One loaded, checked model version and the scoring app that answers with it."""

    name: str  # the registered model's name; a logged model's id when it is not registered
    version: str | None  # None for a logged model that is not a registered version
    uri: str  # exactly this model: models:/<name>/<version> or models:/m-<id>
    model_id: str
    app: Any  # the ASGI app answering with this model
    loaded_at: float
    load_seconds: float

    @property
    def headers(self) -> list[tuple[bytes, bytes]]:
        """What every answer produced by this model carries: its name and version."""
        found = [(NAME_HEADER.lower().encode(), header_value(self.name))]
        if self.version is not None:
            found.append((VERSION_HEADER.lower().encode(), header_value(self.version)))
        return found

    def describe(self) -> dict:
        return {
            "name": self.name,
            "version": self.version,
            "uri": self.uri,
            "model_id": self.model_id,
            "loaded_at": iso(self.loaded_at),
            "load_seconds": round(self.load_seconds, 3),
        }


def load_served(model_uri: str, build_app: Callable[[Any], Any]) -> Served:
    """Load ``model_uri`` verified (``core.integrity``), check it (``serving.model_check``)
    and build its app with ``build_app(model)``. Raises what the load or the check raised."""
    started = time.monotonic()
    exact, version, model_id = resolve(model_uri)  # an alias is read once: what is checked is what is served
    model = load_verified(exact)
    check_model(model)
    name = exact.removeprefix("models:/").rpartition("/")[0] if version is not None else model_id
    return Served(name, version, exact, model_id, build_app(model), time.time(), time.monotonic() - started)
