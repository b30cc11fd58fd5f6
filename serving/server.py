"""``make serve``: MLflow's scoring server for a registered model, on loopback.

    python -m serving.server [--model-uri models:/iris-classifier@champion] [--host 127.0.0.1] [--port 5001]

The app is MLflow's own (``mlflow.pyfunc.scoring_server.init``, the FastAPI app
that ``mlflow models serve --env-manager local`` runs under uvicorn): the same
``/invocations``, ``/ping``, ``/health`` and ``/version``, the same request
formats and errors, with two differences in 4xx answers: they never carry a
stack trace (MLflow attaches its traceback, ``stack_trace``, to a CSV body it
cannot parse, before the model sees it; here it goes to the server's log), and
their message does not echo the request's data back (MLflow prefixes the
model's error with ``Failed to predict data '<the whole input>'``).
"""

from __future__ import annotations

import argparse
import json
import logging
from collections.abc import Sequence

from core import contracts

log = logging.getLogger("serving.server")


ECHO_PREFIX = "Failed to predict data '"
ECHO_END = ". \nError: "


def client_message(message: str) -> str:
    """MLflow's message without its echo of the input data, when it has one."""
    if message.startswith(ECHO_PREFIX) and ECHO_END in message:
        return message.rpartition(ECHO_END)[2]
    return message


def without_client_stack_traces(app):
    """Add to MLflow's scoring ``app`` a middleware that moves ``stack_trace`` out of
    every 4xx JSON answer into the server log, and drops the data echo from its message."""
    from fastapi import Request
    from fastapi.responses import Response

    @app.middleware("http")
    async def strip_stack_trace(request: Request, call_next):
        response = await call_next(request)
        media_type = response.headers.get("content-type", "")
        if not (400 <= response.status_code < 500 and media_type.startswith("application/json")):
            return response
        body = b"".join([chunk async for chunk in response.body_iterator])
        try:
            payload = json.loads(body)
        except ValueError:
            payload = None
        if isinstance(payload, dict):
            if "stack_trace" in payload:
                log.warning("%s %s -> %d: %s\n%s", request.method, request.url.path, response.status_code,
                            payload.get("message", ""), payload.pop("stack_trace"))
            if isinstance(payload.get("message"), str):
                payload["message"] = client_message(payload["message"])
            body = json.dumps(payload).encode()
        return Response(content=body, status_code=response.status_code, media_type="application/json")

    return app


def build_app(model_uri: str):
    """Load ``model_uri`` and return MLflow's scoring app for it, without client stack traces."""
    import mlflow
    from mlflow.pyfunc import scoring_server

    return without_client_stack_traces(scoring_server.init(mlflow.pyfunc.load_model(model_uri)))


def main(argv: Sequence[str] | None = None) -> None:
    import uvicorn
    from mlflow.exceptions import MlflowException

    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--model-uri", default=contracts.CHAMPION_URI, help=f"default {contracts.CHAMPION_URI}")
    parser.add_argument("--host", default="127.0.0.1", help="default loopback only")
    parser.add_argument("--port", type=int, default=5001)
    args = parser.parse_args(argv)
    contracts.configure_logging()
    contracts.configure_tracking()
    try:
        app = build_app(args.model_uri)
    except MlflowException as err:
        parser.exit(1, f"serve: cannot load {args.model_uri}: {err.message}\n")
    uvicorn.run(app, host=args.host, port=args.port)


if __name__ == "__main__":
    main()
