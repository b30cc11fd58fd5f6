"""What ``make serve`` (serving/server.py) refuses before MLflow's scoring app parses a
``POST /invocations``: requests that app would answer with a 500, with a 400 that
quotes the whole body back, or with a prediction made from misread input.

- no ``Content-Type`` (415; MLflow fails on it with a 500), a ``Content-Encoding``
  other than identity (415: MLflow would read gzip bytes as text);
- a JSON or CSV body that is not UTF-8 (400; MLflow quotes every byte back);
- a body that is not JSON (400 naming line and column; MLflow quotes it whole), or
  nested deeper than :data:`MAX_JSON_DEPTH` (400; MLflow fails with a 500 on a
  depth Python's parser cannot recurse to);
- a column named twice: ``dataframe_split`` columns, a key twice in one JSON object
  (``json`` keeps the last), a CSV header (pandas renames the second ``<name>.1``,
  which the model then ignores); MLflow answers the first with an error about
  ``'DataFrame' object has no attribute 'dtype'``;
- ``params`` that is not a JSON object;
- ``true``/``false`` (CSV: ``True``/``False``) in a column the signature declares
  numeric: MLflow's parser casts them to 1.0 and 0.0 before the model sees them.

Every refusal is :class:`Refused`: a status, MLflow's error code and a message that
names the row, the column or the position, and quotes at most a few hundred characters.
"""

from __future__ import annotations

import csv
import io
import json
import re

# What MLflow's scoring server reads and how it names the parts of a JSON body
# (mlflow.pyfunc.scoring_server); repeated here so that importing this module
# does not import MLflow.
JSON_TYPE = "application/json"
CSV_TYPE = "text/csv"
INPUT_KEYS = ("dataframe_split", "dataframe_records", "instances", "inputs")
PARAMS_KEY = "params"
NUMERIC_TYPES = ("double", "float", "long", "integer")  # MLflow DataType names

MAX_MESSAGE_CHARS = 500  # an error message, as sent (JSON-escaped); quoted input beyond it is cut
MAX_JSON_DEPTH = 32  # a request needs 4 levels ({"dataframe_split": {"data": [[...]]}})

# What pandas.read_csv takes as a boolean (its default true_values and false_values).
PANDAS_BOOLEANS = frozenset({"True", "TRUE", "true", "False", "FALSE", "false"})
CSV_BOOLEAN = re.compile(rb"true|false", re.IGNORECASE)
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


def json_depth(body: bytes) -> int:
    """The deepest nesting of arrays and objects in ``body``, valid JSON (its strings,
    brackets and all, are skipped; on valid JSON that regex scan is linear)."""
    import numpy as np

    brackets = np.frombuffer(JSON_STRING.sub(b"", body).translate(None, NOT_A_BRACKET), dtype=np.uint8)
    steps = np.where((brackets == ord("[")) | (brackets == ord("{")), 1, -1)
    return int(np.cumsum(steps).max(initial=0))


def quoted(name: object) -> str:
    """``name`` as a message shows it: its repr, cut to a few hundred characters."""
    return capped(repr(name), 200)


def named_twice(column: str, where: str) -> Refused:
    return Refused(400, "INVALID_PARAMETER_VALUE",
                   f"Column {quoted(column)} appears twice in {where}; each column must be named once.")


def boolean_for_number(row: int, column: str, shown: str) -> Refused:
    return Refused(400, "INVALID_PARAMETER_VALUE",
                   f"Input row {row} has the boolean {shown} in column {quoted(column)}, which takes "
                   "numbers; booleans are not read as 1 or 0.")


def utf8(body: bytes, kind: str) -> str:
    """``body`` decoded, or a refusal naming the first byte that is not UTF-8 (MLflow quotes them all)."""
    try:
        return body.decode("utf-8")
    except UnicodeDecodeError as err:
        raise Refused(400, "BAD_REQUEST",
                      f"Invalid input: the body is not UTF-8 text (byte 0x{body[err.start]:02x} at position "
                      f"{err.start}). Send {kind} encoded as UTF-8, uncompressed.") from None


def _unique_keys(pairs: list[tuple[str, object]]) -> dict:
    """A JSON object, refused if it names a key twice (``json`` would keep the last silently)."""
    result = dict(pairs)
    if len(result) != len(pairs):
        seen: set[str] = set()
        twice = next(key for key, _ in pairs if key in seen or seen.add(key))
        raise Refused(400, "INVALID_PARAMETER_VALUE",
                      f"Key {quoted(twice)} appears twice in one JSON object; column names and keys "
                      "must be unique.")
    return result


def first_duplicate(names: list) -> str | None:
    """The first name ``names`` has twice; names that are not strings are left to MLflow."""
    seen: set[str] = set()
    for name in names:
        if isinstance(name, str):
            if name in seen:
                return name
            seen.add(name)
    return None


def _boolean_in_numeric_column(payload: dict, numeric: frozenset[str]) -> tuple[int, str, bool] | None:
    """(row, column, value) of the first ``true``/``false`` sent for a numeric column, in any
    of MLflow's JSON layouts: split rows, records, or a dict of columns."""
    for key in INPUT_KEYS:
        data = payload.get(key)
        if key == "dataframe_split":
            if not (isinstance(data, dict) and isinstance(data.get("columns"), list)
                    and isinstance(data.get("data"), list)):
                continue
            cells = ((row, column, value) for row, values in enumerate(data["data"])
                     if isinstance(values, list) for column, value in zip(data["columns"], values))
        elif isinstance(data, list):  # records
            cells = ((row, column, value) for row, record in enumerate(data) if isinstance(record, dict)
                     for column, value in record.items())
        elif isinstance(data, dict):  # a dict of columns
            cells = ((row, column, value) for column, values in data.items()
                     for row, value in enumerate(values if isinstance(values, list) else [values]))
        else:
            continue
        for row, column, value in cells:
            if isinstance(value, bool) and isinstance(column, str) and column in numeric:
                return row, column, value
    return None


def check_json(body: bytes, numeric: frozenset[str]) -> None:
    """Refuse a JSON body MLflow would answer with a 500, echo whole, or misread."""
    text = utf8(body, "JSON")
    try:
        payload = json.loads(text, object_pairs_hook=_unique_keys)
    except json.JSONDecodeError as err:
        raise Refused(400, "BAD_REQUEST",
                      f"Invalid input: the body is not valid JSON: {err.msg} at line {err.lineno}, "
                      f"column {err.colno} (character {err.pos}).") from None
    except RecursionError:  # Python's parser gives up near 1,000 levels
        raise Refused(400, "BAD_REQUEST", f"Invalid input: the JSON body is nested deeper than "
                                          f"{MAX_JSON_DEPTH} levels.") from None
    if (depth := json_depth(body)) > MAX_JSON_DEPTH:
        raise Refused(400, "BAD_REQUEST",
                      f"Invalid input: the JSON body is nested {depth} levels deep; the limit is "
                      f"{MAX_JSON_DEPTH} (a request needs 4).")
    if not isinstance(payload, dict):
        return  # MLflow's own 400 names what it got
    params = payload.get(PARAMS_KEY)
    if params is not None and not isinstance(params, dict):
        raise Refused(400, "INVALID_PARAMETER_VALUE",
                      f"'{PARAMS_KEY}' must be a JSON object such as {{\"predict_method\": \"predict\"}}, "
                      f"not {type(params).__name__}.")
    split = payload.get("dataframe_split")
    if isinstance(split, dict) and isinstance(split.get("columns"), list):
        if (twice := first_duplicate(split["columns"])) is not None:
            raise named_twice(twice, "dataframe_split's columns")
    if numeric and (b"true" in body or b"false" in body):  # the common case: no value to look at
        if found := _boolean_in_numeric_column(payload, numeric):
            row, column, value = found
            raise boolean_for_number(row, column, json.dumps(value))


def check_csv(body: bytes, numeric: frozenset[str]) -> None:
    """Refuse a CSV body that is not UTF-8 (MLflow quotes the bytes), names a column twice
    (pandas would rename the second ``<name>.1`` and the model would ignore it), or has
    ``True``/``False`` in a numeric column (pandas reads them as 1.0 and 0.0)."""
    rows = (row for row in csv.reader(io.StringIO(utf8(body, "CSV"))) if row)  # pandas skips blank lines
    try:
        header = next(rows, [])
        if (twice := first_duplicate(header)) is not None:
            raise named_twice(twice, "the CSV header")
        numbers = [(position, name) for position, name in enumerate(header) if name in numeric]
        if not numbers or not CSV_BOOLEAN.search(body):  # the common case: no cell to look at
            return
        for row, cells in enumerate(rows):
            for position, name in numbers:
                if position < len(cells) and cells[position].strip() in PANDAS_BOOLEANS:
                    raise boolean_for_number(row, name, cells[position].strip())
    except csv.Error:
        return  # pandas' parse error, from MLflow, names the line


def check_request(headers, body: bytes, numeric: frozenset[str]) -> None:
    """Raise :class:`Refused` for a ``POST /invocations`` that MLflow's app would answer with
    a 500, a 400 quoting the whole body, or a prediction from misread input; else return.

    ``numeric``: the columns the model's signature declares as numbers.
    """
    encoding = headers.get("content-encoding", "").strip().lower()
    if encoding not in ("", "identity"):
        raise Refused(415, "BAD_REQUEST",
                      f"Content-Encoding {quoted(encoding)} is not supported; send the body uncompressed.")
    content_type = headers.get("content-type", "").strip()
    if not content_type:
        raise Refused(415, "BAD_REQUEST",
                      f"A Content-Type header is required: {JSON_TYPE} or {CSV_TYPE} "
                      "(with no other charset than utf-8).")
    mime, *parameters = (part.strip() for part in content_type.split(";"))
    if any(part.lower().startswith("charset=") and part[8:].lower() != "utf-8" for part in parameters):
        return  # MLflow's 415 names the charset
    if mime == JSON_TYPE:
        check_json(body, numeric)
    elif mime == CSV_TYPE:
        check_csv(body, numeric)


def numeric_columns(schema) -> frozenset[str]:
    """The input columns ``schema`` (an MLflow ``Schema``, or None) declares as numbers."""
    if schema is None or not schema.has_input_names():
        return frozenset()
    return frozenset(spec.name for spec in schema.inputs
                     if getattr(getattr(spec, "type", None), "name", None) in NUMERIC_TYPES)
