"""Every JSON body ``make serve`` reads (``POST /invocations``, MLflow's webhooks) is
parsed by :func:`load_json`, which refuses, with a 400 naming where:

- nesting deeper than :data:`MAX_JSON_DEPTH` (Python's parser fails near 1,000 levels
  with a RecursionError, which MLflow answers with a 500);
- an integer beyond the range of a double (Python refuses to convert more than 4,300
  digits with a ValueError, which MLflow answers with a 500; the model computes in
  doubles).

Its refusal, :class:`Refused`, carries the HTTP status, MLflow's error code and a
message cut by :func:`capped`.
"""

from __future__ import annotations

import json
import re
import sys

MAX_MESSAGE_CHARS = 500  # an error message, as sent (JSON-escaped); quoted input beyond it is cut
MAX_JSON_DEPTH = 32  # a request needs 4 levels ({"dataframe_split": {"data": [[...]]}})
MAX_INT_DIGITS = len(str(int(sys.float_info.max)))  # 309: no longer integer fits in a double
JSON_STRING = re.compile(rb'"[^"\\]*(?:\\.[^"\\]*)*"', re.DOTALL)
NOT_A_BRACKET = bytes(set(range(256)) - set(b"[]{}"))  # to delete with bytes.translate


class Refused(Exception):
    """A request refused before MLflow sees it: the HTTP status, MLflow's error code, a message."""

    def __init__(self, status: int, error_code: str, message: str):
        super().__init__(message)
        self.status, self.error_code, self.message = status, error_code, message


def capped(message: str, limit: int = MAX_MESSAGE_CHARS) -> str:
    """``message`` cut so that it takes at most about ``limit`` characters once JSON-escaped
    (a quoted value may be megabytes long, or all escapes), saying how much was cut."""
    if len(json.dumps(message)) - 2 <= limit:
        return message
    keep = limit
    while keep and len(json.dumps(message[:keep])) - 2 > limit:
        keep //= 2
    return f"{message[:keep]}... ({len(message) - keep} more characters not shown)"


class _HugeInteger:
    """Where ``json`` met an integer beyond a double's range (kept instead of converting it)."""

    def __init__(self, digits: int):
        self.digits = digits


def _bounded_int(text: str) -> int | _HugeInteger:
    """``json``'s integer parser, up to a double's range: converting thousands of digits
    is slow, and past 4,300 Python refuses with a ValueError that is not a JSONDecodeError."""
    digits = len(text) - text.startswith("-")
    if digits > MAX_INT_DIGITS or abs(value := int(text)) > sys.float_info.max:
        return _HugeInteger(digits)
    return value


def _step(path: str, key: str | int) -> str:
    if isinstance(key, int):
        return f"{path}[{key}]"
    if key.isidentifier():
        return f"{path}.{key}" if path else key
    return f"{path}[{json.dumps(key)}]"


def _where(value: object, target: object, path: str = "") -> str | None:
    """The path (``params.x``, ``dataframe_split.data[0][1]``) to ``target`` inside
    ``value``, parsed JSON nested at most :data:`MAX_JSON_DEPTH` deep."""
    if value is target:
        return path or "the top of the body"
    items = value.items() if isinstance(value, dict) else enumerate(value) if isinstance(value, list) else ()
    for key, item in items:
        if (found := _where(item, target, _step(path, key))) is not None:
            return found
    return None


def load_json(body: bytes | str, **hooks) -> object:
    """``body`` parsed (``hooks``: ``json.loads``'s), or :class:`Refused` (400) for what the
    module docstring lists; ``json.JSONDecodeError`` for a body that is not JSON."""
    huge: list[_HugeInteger] = []

    def bounded_int(digits: str) -> int | _HugeInteger:
        value = _bounded_int(digits)
        if isinstance(value, _HugeInteger):
            huge.append(value)
        return value

    try:
        payload = json.loads(body, parse_int=bounded_int, **hooks)
    except RecursionError:  # Python's parser gives up near 1,000 levels
        raise Refused(
            400, "BAD_REQUEST", f"Invalid input: the JSON body is nested deeper than {MAX_JSON_DEPTH} levels."
        ) from None
    if (depth := json_depth(body if isinstance(body, bytes) else body.encode())) > MAX_JSON_DEPTH:
        raise Refused(
            400,
            "BAD_REQUEST",
            f"Invalid input: the JSON body is nested {depth} levels deep; the limit is {MAX_JSON_DEPTH}.",
        )
    if huge:
        raise Refused(
            400,
            "INVALID_PARAMETER_VALUE",
            f"Invalid input: the integer at {capped(_where(payload, huge[0]) or 'the body', 200)} "
            f"has {huge[0].digits:,} digits, beyond the range of a double (magnitude up to "
            f"{sys.float_info.max:.4g}); send it as a number a double can hold.",
        )
    return payload


def json_depth(body: bytes) -> int:
    """The deepest nesting of arrays and objects in ``body``, valid JSON (its strings,
    brackets and all, are skipped; on valid JSON that regex scan is linear)."""
    import numpy as np

    brackets = np.frombuffer(JSON_STRING.sub(b"", body).translate(None, NOT_A_BRACKET), dtype=np.uint8)
    steps = np.where((brackets == ord("[")) | (brackets == ord("{")), 1, -1)
    return int(np.cumsum(steps).max(initial=0))
