"""``make serve``: MLflow's scoring server for a registered model, on loopback, following its alias.

    python -m serving.server [--model-uri models:/iris-classifier@champion] [--host 127.0.0.1] [--port 5001]
                             [--poll-interval 10] [--webhook-secret-file FILE] [--workers 1]
    uvicorn --factory serving.server:create_app --workers 4   # configured by SERVING_* variables

A server started on an alias (the default, ``models:/iris-classifier@champion``)
serves whatever version the alias points at: it reads the alias every
``--poll-interval`` seconds (and at once on a signed MLflow webhook, ``POST
/webhooks/mlflow``), loads and checks a new version in the background and swaps it
in between requests (:mod:`serving.follower`; the app in front, ``/status`` and the
``X-Model-Name`` / ``X-Model-Version`` headers: :mod:`serving.front`). A version URI
(``models:/iris-classifier/3``) is pinned and never polled. With ``--workers N``,
each uvicorn worker loads and follows the alias by itself.

The app is MLflow's own (``mlflow.pyfunc.scoring_server.init``, the FastAPI app
that ``mlflow models serve --env-manager local`` runs under uvicorn): the same
``/invocations``, ``/ping``, ``/health`` and ``/version``, the same request
formats (``dataframe_split``, ``dataframe_records``, ``instances``, ``inputs``,
CSV). One middleware (:func:`guarded`) in front of it:

- reads the body of each ``POST /invocations`` up to ``MAX_BODY_BYTES`` and answers
  413 beyond, reading no further (:class:`serving.front.BoundedBody`);
- checks each ``POST /invocations`` before MLflow parses it and refuses what MLflow
  would answer with a 500, answer by quoting the whole body back, or misread, and
  what it would take without bound in rows or memory (:mod:`serving.request_checks`
  lists what);
- rewrites every answer of 400 and above into MLflow's JSON shape
  (``{"error_code": ..., "message": ...}``; MLflow's 415s and 504 are plain text),
  without a stack trace (MLflow attaches its traceback, ``stack_trace``, to a CSV
  body it cannot parse; here it goes to the server's log), without MLflow's echoes
  of the request's data (``Failed to predict data '<the whole input>'``, ``Failed
  to enforce schema of data '<the whole input>'``), its message cut to
  ``MAX_MESSAGE_CHARS``;
- answers an exception that escapes MLflow's app with a 500 in the same shape,
  the traceback in the log;
- keeps prediction answers strict JSON: Python's ``json`` writes ``-Infinity``,
  which strict parsers reject, for the log of a zero probability
  (``predict_log_proba`` of a tree model, say); it is sent as the most negative
  double, :data:`LOG_ZERO` (``exp`` of it is 0.0). The model itself refuses inputs
  whose outputs would be NaN or infinite otherwise.
"""

from __future__ import annotations

import argparse
import asyncio
import json
import logging
import os
import re
import sys
import tempfile
from collections.abc import Sequence
from dataclasses import dataclass

from mlflow.exceptions import MlflowException

from core import contracts
from core.access import EXIT_DENIED, explain, model_name
from core.errors import StepError, without_data
from serving import webhook
from serving.follower import DEFAULT_POLL_INTERVAL, Follower
from serving.front import BoundedBody, Front
from serving.model_check import ModelCheckFailed
from serving.request_checks import JSON_TYPE, TEXT_TYPES, Refused, capped, check_request, numeric_columns
from serving.workers import SHARED_DIR_ENV, Shared

log = logging.getLogger("serving.server")

MAX_LOGGED_TRACE_CHARS = 20_000  # its last line may quote a value megabytes long
LOG_ZERO = -sys.float_info.max  # how log(0) = -inf is sent

# MLflow appends a note about its 1.x request format to every "which input field?" error.
PROTOCOL_NOTE = re.compile(r"\s*IMPORTANT: The MLflow Model scoring protocol has changed.*", re.DOTALL)


def client_message(message: str) -> str:
    """MLflow's message without the data it echoes: its ``Failed to predict data '<input>'``
    prefix, the ``of data '<input>'`` of a schema error, and its note on the 1.x protocol."""
    return PROTOCOL_NOTE.sub("", without_data(message))


def error_body(error_code: str, message: str) -> bytes:
    return json.dumps({"error_code": error_code, "message": capped(message)}).encode()


def _strict_constant(name: str) -> float:
    if name == "-Infinity":
        return LOG_ZERO
    raise ValueError(f"the model returned {name}, which JSON cannot carry")


def strict_predictions(body: bytes) -> bytes:
    """A prediction answer as strict JSON: ``-Infinity`` (a log of 0) becomes :data:`LOG_ZERO`;
    ``NaN`` or ``Infinity`` raise ValueError (the model refuses inputs that produce them)."""
    if b"Infinity" not in body and b"NaN" not in body:  # the common case: nothing to parse
        return body
    return json.dumps(json.loads(body, parse_constant=_strict_constant), allow_nan=False).encode()


def error_answer(status: int, body: bytes, media_type: str, where: str) -> bytes:
    """An answer of 400 or above as ``{"error_code", "message", ...}``: MLflow's JSON without
    ``stack_trace`` (logged instead) and without data echoes, or a plain-text answer wrapped."""
    from mlflow.exceptions import HTTP_STATUS_TO_ERROR_CODE

    default_code = HTTP_STATUS_TO_ERROR_CODE.get(status, "BAD_REQUEST" if status < 500 else "INTERNAL_ERROR")
    payload = None
    if media_type.startswith(JSON_TYPE):
        try:
            payload = json.loads(body)
        except ValueError:
            payload = None
    if not isinstance(payload, dict):
        text = body.decode("utf-8", "replace").strip() or f"HTTP {status}"
        return error_body(default_code, client_message(text))
    if "stack_trace" in payload:
        log.warning(
            "%s -> %d: %s\n%s",
            where,
            status,
            capped(str(payload.get("message", ""))),
            capped(str(payload.pop("stack_trace")), MAX_LOGGED_TRACE_CHARS),
        )
    message = payload.get("message", payload.get("detail", f"HTTP {status}"))
    payload["message"] = capped(client_message(message if isinstance(message, str) else json.dumps(message)))
    payload.pop("detail", None)
    payload.setdefault("error_code", default_code)
    return json.dumps(payload).encode()


def guarded(app, input_schema):
    """Put in front of MLflow's scoring ``app`` the checks and rewrites the module docstring lists;
    ``input_schema``: the model's, whose numeric columns refuse booleans and text columns numbers."""
    from fastapi import Request
    from fastapi.responses import Response

    numeric, text = numeric_columns(input_schema), numeric_columns(input_schema, TEXT_TYPES)

    @app.middleware("http")
    async def guard(request: Request, call_next):
        where = f"{request.method} {request.url.path}"
        scoring = request.url.path == "/invocations" and request.method == "POST"
        if scoring:
            body = await request.body()  # Starlette hands the same body on to MLflow
            try:
                # Off the event loop, as MLflow parses: a large body takes a while.
                await asyncio.to_thread(check_request, request.headers, body, numeric, text)
            except Refused as refusal:
                log.info("%s -> %d: %s", where, refusal.status, capped(refusal.message, 200))
                return Response(error_body(refusal.error_code, refusal.message), refusal.status, media_type=JSON_TYPE)
        try:
            response = await call_next(request)
            if response.status_code < 400 and not scoring:
                return response
            content = b"".join([chunk async for chunk in response.body_iterator])
            media_type = response.headers.get("content-type", "")
            if response.status_code >= 400:
                content = error_answer(response.status_code, content, media_type, where)
            elif media_type.startswith(JSON_TYPE):
                content = strict_predictions(content)
        except Exception:
            log.exception("%s failed", where)
            return Response(
                error_body("INTERNAL_ERROR", "The server failed on this request; its log has the details."),
                500,
                media_type=JSON_TYPE,
            )
        return Response(content=content, status_code=response.status_code, media_type=JSON_TYPE)

    app.add_middleware(BoundedBody)  # added last: the outermost, before ``guard`` reads the body
    return app


def scoring_app(model):
    """MLflow's scoring app answering with ``model`` (loaded and verified), guarded (:func:`guarded`)."""
    from mlflow.pyfunc import scoring_server

    return guarded(scoring_server.init(model), model.metadata.get_input_schema())


@dataclass(frozen=True)
class Options:
    """What a server (each worker of it) serves and how it follows it; passed to uvicorn's
    workers as the ``SERVING_*`` environment variables of :data:`ENVIRONMENT`."""

    model_uri: str = contracts.CHAMPION_URI
    poll_interval: float = DEFAULT_POLL_INTERVAL
    webhook_secret_file: str | None = None

    def to_env(self) -> dict[str, str]:
        values = {
            "model_uri": self.model_uri,
            "poll_interval": str(self.poll_interval),
            "webhook_secret_file": self.webhook_secret_file,
        }
        return {ENVIRONMENT[key]: value for key, value in values.items() if value is not None}

    @classmethod
    def from_env(cls) -> Options:
        model_uri = os.environ.get(ENVIRONMENT["model_uri"]) or contracts.CHAMPION_URI
        interval = float(os.environ.get(ENVIRONMENT["poll_interval"]) or DEFAULT_POLL_INTERVAL)
        return cls(model_uri, interval, os.environ.get(ENVIRONMENT["webhook_secret_file"]) or None)


ENVIRONMENT = {
    "model_uri": "SERVING_MODEL_URI",
    "poll_interval": "SERVING_POLL_INTERVAL",
    "webhook_secret_file": webhook.SECRET_FILE_ENV,
}


def build_front(options: Options, secret: str | None) -> Front:
    """The app for ``options`` (webhooks signed with ``secret``, if any): its first version
    loaded and checked now (``MlflowException`` or ``ModelCheckFailed`` if it cannot be served)."""
    follower = Follower(options.model_uri, scoring_app, options.poll_interval, shared=Shared.from_env())
    follower.start_serving()
    return Front(follower, secret)


def create_app() -> Front:
    """The app factory each uvicorn worker calls, configured by ``SERVING_*`` (:class:`Options`).
    A model that cannot be served stops the worker with uvicorn's start-up failure status,
    which stops the whole server rather than restarting the worker again and again."""
    from uvicorn.config import STARTUP_FAILURE

    contracts.configure_logging()
    contracts.configure_tracking()
    options = Options.from_env()
    try:
        return build_front(options, webhook.read_secret(options.webhook_secret_file))
    except (MlflowException, ModelCheckFailed, ValueError, OSError) as err:
        reason = explain(err, model=model_name(options.model_uri)) or getattr(err, "message", None) or err
        log.error("cannot serve %s: %s", options.model_uri, reason)
        sys.exit(STARTUP_FAILURE)


def settle_alias(model_uri: str) -> None:
    """For a server on an alias: undo a registry change a killed process left half made
    (``core.locks.settle``), saying so, when the gate lock is free; while a decision
    holds it, the server reads the aliases as they were before it (``core.registry``)."""
    from mlflow import MlflowClient

    from core.locks import LockBusy, LockUnavailable, settle

    name, at, _ = model_uri.removeprefix("models:/").partition("@")
    if not (model_uri.startswith("models:/") and at):
        return
    try:
        undone = settle(MlflowClient(), name, wait=0)
    except LockBusy:
        return
    except (MlflowException, RuntimeError, StepError, LockUnavailable) as err:
        # the store's or the lock server's trouble, or an unreadable change record
        if explain(err, model=name) is None:  # a refusal: the load says it, in one line
            log.warning("could not check %s for an interrupted change: %s", name, getattr(err, "message", err))
        return
    if undone:
        print(f"serve: {undone}", file=sys.stderr, flush=True)


def main(argv: Sequence[str] | None = None) -> None:
    import uvicorn

    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--model-uri", default=contracts.CHAMPION_URI, help=f"default {contracts.CHAMPION_URI}")
    parser.add_argument("--host", default="127.0.0.1", help="default loopback only")
    parser.add_argument("--port", type=int, default=5001)
    parser.add_argument(
        "--poll-interval",
        type=float,
        default=DEFAULT_POLL_INTERVAL,
        help=f"seconds between reads of the alias (default {DEFAULT_POLL_INTERVAL:g}; 0: only when a webhook calls)",
    )
    parser.add_argument(
        "--webhook-secret-file",
        help=f"accept MLflow webhooks signed with the secret in this file (or ${webhook.SECRET_ENV})",
    )
    parser.add_argument("--workers", type=int, default=1, help="uvicorn worker processes (default 1)")
    args = parser.parse_args(argv)
    if args.poll_interval < 0 or args.workers < 1:
        parser.error("--poll-interval must be 0 or more and --workers at least 1")
    contracts.configure_logging()
    contracts.configure_tracking()
    options = Options(args.model_uri, args.poll_interval, args.webhook_secret_file)
    settle_alias(args.model_uri)
    try:
        secret = webhook.read_secret(args.webhook_secret_file)
    except (ValueError, OSError) as err:
        parser.exit(2, f"serve: the webhook secret cannot be read: {err}\n")
    try:  # here, once, even with several workers: a model that cannot be served fails with one line
        front = build_front(options, secret)
    except (MlflowException, ModelCheckFailed) as err:
        name = model_name(args.model_uri)
        refused = explain(err, model=name)
        if refused:
            needs = f"serve needs READ on registered model {name!r} and on the experiment of its runs"
            parser.exit(EXIT_DENIED, f"serve: cannot load {args.model_uri}: {refused}; {needs}\n")
        parser.exit(1, f"serve: cannot load {args.model_uri}: {getattr(err, 'message', None) or err}\n")
    if args.workers == 1:
        uvicorn.run(front, host=args.host, port=args.port)
        return
    del front  # each worker loads its own
    with tempfile.TemporaryDirectory(prefix="serving-workers-") as shared:
        os.environ.update(options.to_env() | {SHARED_DIR_ENV: shared})
        uvicorn.run("serving.server:create_app", factory=True, host=args.host, port=args.port, workers=args.workers)


if __name__ == "__main__":
    main()
