"""MLflow's registry webhooks, as ``make serve`` receives them: the signature check, and
registering the server with a tracking server.

A tracking server (``mlflow server`` on a SQL backend store) calls a webhook when a
client moves an alias through it (events ``model_version_alias.created`` and
``model_version_alias.deleted``). ``POST /webhooks/mlflow`` on the scoring server
(serving/server.py) takes that call as a hint only: it makes the server read the
alias at once instead of at its next poll, and the registry, not the call, says
which version to load. So a call is accepted only when signed with the shared
secret, and an accepted call changes nothing by itself.

MLflow signs as Standard Webhooks do (``mlflow/webhooks/delivery.py``): headers
``X-MLflow-Delivery-Id``, ``X-MLflow-Timestamp`` (Unix seconds) and
``X-MLflow-Signature: v1,<base64 HMAC-SHA256 of "<delivery id>.<timestamp>.<body>">``.
:func:`verify` refuses a call without them (401), with another signature or a timestamp
more than :data:`MAX_AGE_SECONDS` away from now (403, so an old call cannot be replayed
later), and a body that is not a JSON object or is nested deeper than
:data:`serving.bounded_json.MAX_JSON_DEPTH` (400).

Register a scoring server with the tracking server (once; the tracking server needs
``MLFLOW_WEBHOOK_ALLOWED_SCHEMES=http,https`` for a plain-http URL and
``MLFLOW_WEBHOOK_ALLOW_PRIVATE_IPS=true`` for a loopback or private address)::

    SERVING_WEBHOOK_SECRET=... python -m serving.webhook http://10.0.0.5:5001/webhooks/mlflow
"""

from __future__ import annotations

import argparse
import base64
import hashlib
import hmac
import os
import re
import time
from collections.abc import Mapping, Sequence
from pathlib import Path
from urllib.parse import urlsplit

from serving.bounded_json import Refused, load_json

PATH = "/webhooks/mlflow"
SECRET_ENV = "SERVING_WEBHOOK_SECRET"
SECRET_FILE_ENV = "SERVING_WEBHOOK_SECRET_FILE"
# MLflow's header names and signature version (mlflow.webhooks.constants).
DELIVERY_ID_HEADER = "X-MLflow-Delivery-Id"
TIMESTAMP_HEADER = "X-MLflow-Timestamp"
SIGNATURE_HEADER = "X-MLflow-Signature"
SIGNATURE_VERSION = "v1"
MAX_AGE_SECONDS = 300  # a signed call older (or newer) than this is refused: no replay later
ALIAS_ENTITY = "model_version_alias"
ALIAS_EVENTS = ("model_version_alias.created", "model_version_alias.deleted")


class WebhookRefused(Exception):
    """A call refused: the HTTP status (401, 403 or 400) and why."""

    def __init__(self, status: int, message: str):
        super().__init__(message)
        self.status, self.message = status, message


def read_secret(secret_file: str | None = None) -> str | None:
    """The shared secret: the content of ``secret_file`` (or of the file named by
    ``SERVING_WEBHOOK_SECRET_FILE``), else ``SERVING_WEBHOOK_SECRET``; None when neither is set.
    An empty secret is refused (every call would then be signed with a known key)."""
    path = secret_file or os.environ.get(SECRET_FILE_ENV)
    secret = Path(path).read_text().strip() if path else os.environ.get(SECRET_ENV)
    if secret is not None and not secret.strip():
        raise ValueError(f"the webhook secret ({path or SECRET_ENV}) is empty")
    return secret


def signature(secret: str, delivery_id: str, timestamp: str, body: bytes) -> str:
    """MLflow's signature of a call: ``v1,`` and the base64 HMAC-SHA256 of
    ``<delivery id>.<timestamp>.<body>`` with ``secret``."""
    signed = delivery_id.encode() + b"." + timestamp.encode() + b"." + body
    digest = hmac.new(secret.encode(), signed, hashlib.sha256).digest()
    return f"{SIGNATURE_VERSION},{base64.b64encode(digest).decode()}"


def verify(secret: str, headers: Mapping[str, str], body: bytes, now: float | None = None) -> dict:
    """The call's JSON payload if it is signed with ``secret`` within :data:`MAX_AGE_SECONDS`
    of ``now``; else :class:`WebhookRefused` (401 unsigned, 403 wrong or stale, 400 not JSON or
    nested too deep)."""
    sent = headers.get(SIGNATURE_HEADER)
    delivery_id, timestamp = headers.get(DELIVERY_ID_HEADER), headers.get(TIMESTAMP_HEADER)
    if not sent or not delivery_id or not timestamp:
        raise WebhookRefused(
            401, f"unsigned call: {SIGNATURE_HEADER}, {DELIVERY_ID_HEADER} and {TIMESTAMP_HEADER} are required"
        )
    try:
        age = abs((time.time() if now is None else now) - int(timestamp))
    except ValueError:
        raise WebhookRefused(403, f"{TIMESTAMP_HEADER} is not a Unix time in seconds") from None
    if age > MAX_AGE_SECONDS:
        raise WebhookRefused(
            403, f"the call is signed {age:.0f} s away from now; at most {MAX_AGE_SECONDS} s are accepted"
        )
    expected = signature(secret, delivery_id, timestamp, body)
    # Standard Webhooks allows several space-separated signatures (while a secret is rotated).
    if not any(hmac.compare_digest(candidate, expected) for candidate in sent.split()):
        raise WebhookRefused(403, "the signature does not match this server's secret")
    try:
        payload = load_json(body)
    except Refused as refusal:
        raise WebhookRefused(400, refusal.message) from None
    except ValueError:
        payload = None
    if not isinstance(payload, dict):
        raise WebhookRefused(400, "the body is not a JSON object")
    return payload


def concerns(payload: dict, name: str, alias: str) -> bool:
    """Whether a verified payload reports a move of ``alias`` on registered model ``name``."""
    data = payload.get("data")
    return (
        payload.get("entity") == ALIAS_ENTITY
        and isinstance(data, dict)
        and data.get("name") == name
        and data.get("alias") == alias
    )


def register(url: str, secret: str, name: str | None = None, client=None) -> str:
    """Create (or update, by ``name``) a webhook on the tracking server of ``client`` (default:
    the one MLflow is pointed at), calling ``url`` on alias events, signed with ``secret``;
    return its id."""
    from mlflow import MlflowClient

    client = client or MlflowClient()
    # MLflow's rule for names: letters, digits, '.', '_', '-', fewer than 63 characters.
    name = name or re.sub(r"[^A-Za-z0-9._-]+", "-", f"serving-{urlsplit(url).netloc}")[:62].strip("-._")
    events = list(ALIAS_EVENTS)
    page = client.list_webhooks()
    while True:
        for existing in page:
            if existing.name == name:
                return client.update_webhook(existing.webhook_id, url=url, events=events, secret=secret).webhook_id
        if not page.token:
            break
        page = client.list_webhooks(page_token=page.token)
    return client.create_webhook(
        name, url, events, secret=secret, description="make serve: read the alias now"
    ).webhook_id


def main(argv: Sequence[str] | None = None) -> None:
    from core import contracts
    from core.access import explained

    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("url", help=f"the scoring server's webhook URL, ending in {PATH}")
    parser.add_argument(
        "--secret-file", help=f"file holding the secret (default: ${SECRET_FILE_ENV}, then ${SECRET_ENV})"
    )
    parser.add_argument("--name", help="the webhook's name in the registry (default: serving-<host>-<port>)")
    args = parser.parse_args(argv)
    secret = read_secret(args.secret_file)
    if not secret:
        parser.exit(2, f"serving.webhook: no secret: set {SECRET_ENV} or pass --secret-file\n")
    contracts.configure_tracking()
    with explained("serving.webhook", after="no webhook registered"):
        webhook_id = register(args.url, secret, args.name)
    print(f"webhook {webhook_id}: {', '.join(ALIAS_EVENTS)} -> {args.url}")


if __name__ == "__main__":
    main()
