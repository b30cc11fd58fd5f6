"""The ASGI app ``make serve`` runs: in front of the served version's scoring app.

- every request is answered by the version :attr:`Follower.current` named when the
  request started (read once: a swap during the request does not move it), and every
  answer, ``/status`` and refusals included, carries that version's
  ``X-Model-Name`` and ``X-Model-Version`` headers;
- ``GET /status``: the follower's report (:meth:`serving.follower.Follower.status`)
  and whether webhooks are accepted;
- ``POST /webhooks/mlflow``: a signed MLflow webhook (:mod:`serving.webhook`); one
  about the followed alias wakes the follower, which reads the alias at once. 401 or
  403 (nothing read, nothing loaded) for a call unsigned or badly signed, or for any
  call when the server has no secret;
- anything else goes to MLflow's scoring app of that version (``/invocations``,
  ``/ping``, ``/health``, ``/version``, and its 404s and 405s), unchanged;
- the ASGI lifespan starts and stops the follower's thread (in each worker).
"""

from __future__ import annotations

import asyncio
import json
import logging

from serving import webhook
from serving.follower import Follower
from serving.request_checks import MAX_BODY_BYTES, too_large

log = logging.getLogger("serving.front")

STATUS_PATH = "/status"
MAX_WEBHOOK_BYTES = 64 * 1024  # MLflow's payloads are a few hundred bytes
ERROR_CODES = {
    400: "BAD_REQUEST",
    401: "UNAUTHENTICATED",
    403: "PERMISSION_DENIED",
    405: "BAD_REQUEST",
    413: "BAD_REQUEST",
}


class Answer:
    """A small JSON answer, as an ASGI app."""

    def __init__(self, status: int, payload: dict):
        self.status, self.body = status, json.dumps(payload).encode()

    @classmethod
    def error(cls, status: int, message: str) -> Answer:
        return cls(status, {"error_code": ERROR_CODES.get(status, "BAD_REQUEST"), "message": message})

    async def __call__(self, scope, receive, send) -> None:
        await send(
            {
                "type": "http.response.start",
                "status": self.status,
                "headers": [(b"content-type", b"application/json"), (b"content-length", str(len(self.body)).encode())],
            }
        )
        await send({"type": "http.response.body", "body": self.body})


async def read_body(receive, limit: int) -> bytes | None:
    """The request's body, or None once it exceeds ``limit`` bytes (the rest is not read)."""
    chunks, size = [], 0
    while True:
        message = await receive()
        if message["type"] == "http.disconnect":
            return b"".join(chunks)
        chunk = message.get("body", b"")
        size += len(chunk)
        if size > limit:
            return None
        chunks.append(chunk)
        if not message.get("more_body", False):
            return b"".join(chunks)


class BoundedBody:
    """ASGI middleware of the scoring app (serving.server.guarded): the body of a ``POST
    /invocations`` read up to ``MAX_BODY_BYTES`` and handed on whole, or a 413 (a larger
    ``Content-Length`` refused unread; the rest of a longer body is not read)."""

    def __init__(self, app):
        self.app = app

    async def __call__(self, scope, receive, send) -> None:
        if scope["type"] != "http" or scope["path"] != "/invocations" or scope["method"] != "POST":
            await self.app(scope, receive, send)
            return
        declared = dict(scope.get("headers", ())).get(b"content-length", b"")
        too_long = declared.isdigit() and int(declared) > MAX_BODY_BYTES
        body = None if too_long else await read_body(receive, MAX_BODY_BYTES)
        if body is None:
            refusal = too_large(f"more than {MAX_BODY_BYTES:,} bytes")
            log.info("POST /invocations -> %d: %s", refusal.status, refusal.message)
            await Answer.error(refusal.status, refusal.message)(scope, receive, send)
            return
        handed = False

        async def replay():
            nonlocal handed
            if handed:
                return await receive()
            handed = True
            return {"type": "http.request", "body": body, "more_body": False}

        await self.app(scope, replay, send)


class Front:
    """The served version's scoring app behind ``/status`` and the webhook (module docstring)."""

    def __init__(self, follower: Follower, secret: str | None):
        self.follower, self.secret = follower, secret

    async def __call__(self, scope, receive, send) -> None:
        if scope["type"] == "lifespan":
            await self._lifespan(receive, send)
            return
        served = self.follower.current  # this request's version, whatever is swapped in meanwhile
        if scope["type"] != "http":
            await served.app(scope, receive, send)
            return
        headers = served.headers

        async def send_with_version(message) -> None:
            if message["type"] == "http.response.start":
                message = {**message, "headers": [*message.get("headers", ()), *headers]}
            await send(message)

        path, method = scope["path"], scope["method"]
        if path == STATUS_PATH:
            answer = Answer(200, self.status()) if method == "GET" else Answer.error(405, "Method Not Allowed")
        elif path == webhook.PATH:
            answer = (
                await self._webhook(scope, receive) if method == "POST" else Answer.error(405, "Method Not Allowed")
            )
        else:
            await served.app(scope, receive, send_with_version)
            return
        await answer(scope, receive, send_with_version)

    def status(self) -> dict:
        """This worker's report; with several workers, each one's under ``workers``."""
        own = {**self.follower.status(), "webhooks": self.secret is not None}
        shared = self.follower.shared
        return own | {"workers": shared.statuses() if shared is not None else [self.follower.worker_status()]}

    async def _webhook(self, scope, receive) -> Answer:
        from starlette.datastructures import Headers

        if self.secret is None:
            return self._refused(
                403,
                f"webhooks are not enabled on this server: start it with {webhook.SECRET_ENV} or --webhook-secret-file",
            )
        body = await read_body(receive, MAX_WEBHOOK_BYTES)
        if body is None:
            return self._refused(413, f"the body is larger than {MAX_WEBHOOK_BYTES} bytes")
        try:
            payload = webhook.verify(self.secret, Headers(scope=scope), body)
        except webhook.WebhookRefused as refusal:
            return self._refused(refusal.status, refusal.message)
        target = self.follower.target
        if target is None:
            return Answer(200, {"accepted": True, "check": "none: this server serves a pinned version"})
        if not webhook.concerns(payload, *target):
            return Answer(
                200, {"accepted": True, "check": f"none: the call is not about alias {target[1]!r} of {target[0]!r}"}
            )
        self.follower.wake()
        return Answer(202, {"accepted": True, "check": "the alias is read now"})

    @staticmethod
    def _refused(status: int, message: str) -> Answer:
        log.warning("%s -> %d: %s", webhook.PATH, status, message)
        return Answer.error(status, message)

    async def _lifespan(self, receive, send) -> None:
        while True:
            message = await receive()
            if message["type"] == "lifespan.startup":
                self.follower.start()
                await send({"type": "lifespan.startup.complete"})
            elif message["type"] == "lifespan.shutdown":
                await asyncio.to_thread(self.follower.stop)
                await send({"type": "lifespan.shutdown.complete"})
                return
