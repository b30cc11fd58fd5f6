"""The webhook's signature check (serving/webhook.py) against MLflow's own signing, and what
it refuses: unsigned, wrongly signed, stale, altered and unreadable calls."""

from __future__ import annotations

import json
import time

import pytest

from serving import webhook

SECRET = "a shared secret"
BODY = json.dumps(
    {
        "entity": "model_version_alias",
        "action": "created",
        "timestamp": "2026-11-27T10:00:00+00:00",
        "data": {"name": "iris-classifier", "alias": "champion", "version": "3"},
    }
).encode()


def signed(body: bytes = BODY, secret: str = SECRET, timestamp: float | None = None) -> dict[str, str]:
    """Headers as MLflow's delivery sends them, signed by MLflow's own function."""
    from mlflow.webhooks.delivery import _generate_hmac_signature  # MLflow's, to prove ours matches it

    stamp = str(int(time.time() if timestamp is None else timestamp))
    return {
        webhook.DELIVERY_ID_HEADER: "d-1",
        webhook.TIMESTAMP_HEADER: stamp,
        webhook.SIGNATURE_HEADER: _generate_hmac_signature(secret, "d-1", stamp, body.decode()),
    }


def test_a_call_signed_as_mlflow_signs_is_accepted():
    assert webhook.verify(SECRET, signed(), BODY)["data"]["version"] == "3"
    assert webhook.signature(SECRET, "d-1", "17", BODY) == signed(timestamp=17)[webhook.SIGNATURE_HEADER]
    two = signed() | {webhook.SIGNATURE_HEADER: "v1,old " + signed()[webhook.SIGNATURE_HEADER]}
    assert webhook.verify(SECRET, two, BODY)  # one of several signatures (a secret being rotated)


NOW = 1_800_000_000  # the server's clock in these cases: signing times are relative to it
REFUSED = {  # headers, body, status, message
    "no headers": ({}, BODY, 401, "unsigned call"),
    "no signature": (
        {k: v for k, v in signed(timestamp=NOW).items() if k != webhook.SIGNATURE_HEADER},
        BODY,
        401,
        "unsigned call",
    ),
    "another secret": (
        signed(secret="another secret", timestamp=NOW),
        BODY,
        403,
        "does not match this server's secret",
    ),
    "body changed": (signed(timestamp=NOW), BODY.replace(b'"3"', b'"4"'), 403, "does not match"),
    "an hour old": (signed(timestamp=NOW - 3600), BODY, 403, "signed 3600 s away from now"),
    "not a time": (signed(timestamp=NOW) | {webhook.TIMESTAMP_HEADER: "yesterday"}, BODY, 403, "not a Unix time"),
    "not an object": (signed(b"[1]", timestamp=NOW), b"[1]", 400, "not a JSON object"),
    # 60 KB, within the server's webhook size limit; Python's parser fails near 1,000 levels
    "nested 30,000 deep": (
        signed(b"[" * 30_000 + b"]" * 30_000, timestamp=NOW),
        b"[" * 30_000 + b"]" * 30_000,
        400,
        "the JSON body is nested deeper than 32 levels",
    ),
    "nested 40 deep": (
        signed(b"[" * 40 + b"]" * 40, timestamp=NOW),
        b"[" * 40 + b"]" * 40,
        400,
        "the JSON body is nested 40 levels deep; the limit is 32",
    ),
}


@pytest.mark.parametrize("case", list(REFUSED))
def test_a_call_not_signed_with_the_secret_is_refused(case):
    headers, body, status, message = REFUSED[case]
    with pytest.raises(webhook.WebhookRefused, match=message) as refused:
        webhook.verify(SECRET, headers, body, now=NOW)
    assert refused.value.status == status
    assert webhook.verify(SECRET, signed(timestamp=NOW - 299), BODY, now=NOW)  # within 5 minutes


def test_only_the_followed_alias_of_the_followed_model_concerns_the_server():
    payload = json.loads(BODY)
    assert webhook.concerns(payload, "iris-classifier", "champion")
    assert not webhook.concerns(payload, "iris-classifier", "challenger")
    assert not webhook.concerns(payload, "other", "champion")
    assert not webhook.concerns(payload | {"entity": "model_version_tag"}, "iris-classifier", "champion")
    assert not webhook.concerns({"entity": "model_version_alias", "data": "x"}, "iris-classifier", "champion")


def test_the_secret_comes_from_a_file_or_the_environment(tmp_path, monkeypatch):
    monkeypatch.delenv(webhook.SECRET_ENV, raising=False)
    monkeypatch.delenv(webhook.SECRET_FILE_ENV, raising=False)
    assert webhook.read_secret() is None
    monkeypatch.setenv(webhook.SECRET_ENV, "from env")
    assert webhook.read_secret() == "from env"
    (tmp_path / "secret").write_text("from file\n")
    assert webhook.read_secret(str(tmp_path / "secret")) == "from file"
    (tmp_path / "empty").write_text("\n")
    with pytest.raises(ValueError, match="is empty"):
        webhook.read_secret(str(tmp_path / "empty"))
