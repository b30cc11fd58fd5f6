"""What ``make serve`` (serving/server.py) refuses before MLflow's scoring app parses a
``POST /invocations``: requests that app would answer with a 500, with a 400 that
quotes the whole body back, or with a prediction made from misread input.

- no ``Content-Type``, a ``Content-Encoding`` other than identity, or Parquet (415:
  what a Parquet body takes once read cannot be known before reading it);
- a body over :data:`MAX_BODY_BYTES` (413, before it is read whole) or over
  :data:`MAX_ROWS` rows (413): JSON and CSV bounded before MLflow parses them;
- a body that is not UTF-8, not JSON (naming line and column), nested too deep, or
  holding an integer beyond a double (400; :mod:`serving.bounded_json`);
- a ``dataframe_split`` column name that is not a string, a column named twice (in
  ``dataframe_split``, one JSON object or a CSV header), ``params`` not an object (400);
- ``true``/``false`` in a numeric column (MLflow would cast them to 1.0 and 0.0), a
  JSON number in a ``string`` column (scored as an unseen category) (400). A CSV cell
  has no type: MLflow reads ``1`` in a text column as the text ``"1"``; not refused.

Every refusal is :class:`~serving.bounded_json.Refused`: a status, MLflow's error code and
a message naming the row, the column or the position, quoting a few hundred characters.
"""

from __future__ import annotations

import csv
import io
import json
import re

from serving.bounded_json import Refused, capped, load_json

# What MLflow's scoring server reads and how it names the parts of a JSON body
# (mlflow.pyfunc.scoring_server); repeated here so that importing this module
# does not import MLflow.
JSON_TYPE = "application/json"
CSV_TYPE = "text/csv"
PARQUET_TYPE = "application/vnd.apache.parquet"
INPUT_KEYS = ("dataframe_split", "dataframe_records", "instances", "inputs")
PARAMS_KEY = "params"
NUMERIC_TYPES = ("double", "float", "long", "integer")  # MLflow DataType names
TEXT_TYPES = ("string",)

MAX_BODY_BYTES = 16 * 1024 * 1024  # about 500,000 rows of this model's two features as JSON
MAX_ROWS = 100_000  # rows per request; files of any size: python -m serving.batch
PANDAS_BOOLEANS = frozenset({"True", "TRUE", "true", "False", "FALSE", "false"})  # read_csv's booleans
CSV_BOOLEAN = re.compile(rb"true|false", re.IGNORECASE)


def too_large(what: str) -> Refused:
    return Refused(
        413,
        "BAD_REQUEST",
        f"The request is too large: {what}. Send at most {MAX_ROWS:,} rows and "
        f"{MAX_BODY_BYTES:,} bytes per request; score larger files with python -m serving.batch.",
    )


def json_rows(payload: dict) -> int:
    """The number of rows in a request's input, in whichever of MLflow's layouts it comes."""
    rows = 0
    for key in INPUT_KEYS:
        data = payload.get(key)
        if key == "dataframe_split" and isinstance(data, dict):
            data = data.get("data")
        if isinstance(data, dict):  # a dict of columns
            data = max((values for values in data.values() if isinstance(values, list)), key=len, default=[])
        if isinstance(data, list):
            rows = max(rows, len(data))
    return rows


def quoted(name: object) -> str:
    """``name`` as a message shows it: its repr, cut to a few hundred characters."""
    return capped(repr(name), 200)


def named_twice(column: str, where: str) -> Refused:
    return Refused(
        400,
        "INVALID_PARAMETER_VALUE",
        f"Column {quoted(column)} appears twice in {where}; each column must be named once.",
    )


def boolean_for_number(row: int, column: str, shown: str) -> Refused:
    return Refused(
        400,
        "INVALID_PARAMETER_VALUE",
        f"Input row {row} has the boolean {shown} in column {quoted(column)}, which takes "
        "numbers; booleans are not read as 1 or 0.",
    )


def number_for_text(row: int, column: str, shown: str) -> Refused:
    return Refused(
        400,
        "INVALID_PARAMETER_VALUE",
        f"Column {quoted(column)} takes text: input row {row} has the number {capped(shown, 40)}; "
        "send it as a JSON string.",
    )


def utf8(body: bytes, kind: str) -> str:
    """``body`` decoded, or a refusal naming the first byte that is not UTF-8 (MLflow quotes them all)."""
    try:
        return body.decode("utf-8")
    except UnicodeDecodeError as err:
        raise Refused(
            400,
            "BAD_REQUEST",
            f"Invalid input: the body is not UTF-8 text (byte 0x{body[err.start]:02x} at position "
            f"{err.start}). Send {kind} encoded as UTF-8, uncompressed.",
        ) from None


def _unique_keys(pairs: list[tuple[str, object]]) -> dict:
    """A JSON object, refused if it names a key twice (``json`` would keep the last silently)."""
    result = dict(pairs)
    if len(result) != len(pairs):
        seen: set[str] = set()
        twice = next(key for key, _ in pairs if key in seen or seen.add(key))
        raise Refused(
            400,
            "INVALID_PARAMETER_VALUE",
            f"Key {quoted(twice)} appears twice in one JSON object; column names and keys must be unique.",
        )
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


def _cells(payload: dict):
    """(row, column, value) of every cell of the input, in any of MLflow's JSON layouts:
    split rows, records, or a dict of columns."""
    for key in INPUT_KEYS:
        data = payload.get(key)
        if key == "dataframe_split":
            if not (
                isinstance(data, dict) and isinstance(data.get("columns"), list) and isinstance(data.get("data"), list)
            ):
                continue
            yield from (
                (row, column, value)
                for row, values in enumerate(data["data"])
                if isinstance(values, list)
                for column, value in zip(data["columns"], values, strict=False)
            )
        elif isinstance(data, list):  # records
            yield from (
                (row, column, value)
                for row, record in enumerate(data)
                if isinstance(record, dict)
                for column, value in record.items()
            )
        elif isinstance(data, dict):  # a dict of columns
            yield from (
                (row, column, value)
                for column, values in data.items()
                for row, value in enumerate(values if isinstance(values, list) else [values])
            )


def _wrong_kind(payload: dict, numeric: frozenset[str], strings: frozenset[str]) -> Refused | None:
    """The refusal of the first ``true``/``false`` sent for a numeric column, or number sent
    for a text column."""
    for row, column, value in _cells(payload):
        if not isinstance(column, str):
            continue
        if isinstance(value, bool) and column in numeric:
            return boolean_for_number(row, column, json.dumps(value))
        if isinstance(value, (int, float)) and not isinstance(value, bool) and column in strings:
            return number_for_text(row, column, json.dumps(value))
    return None


def check_json(body: bytes, numeric: frozenset[str], strings: frozenset[str] = frozenset()) -> None:
    """Refuse a JSON body MLflow would answer with a 500, echo whole, or misread."""
    text = utf8(body, "JSON")
    try:
        payload = load_json(text, object_pairs_hook=_unique_keys)
    except json.JSONDecodeError as err:
        raise Refused(
            400,
            "BAD_REQUEST",
            f"Invalid input: the body is not valid JSON: {err.msg} at line {err.lineno}, "
            f"column {err.colno} (character {err.pos}).",
        ) from None
    if not isinstance(payload, dict):
        return  # MLflow's own 400 names what it got
    if (rows := json_rows(payload)) > MAX_ROWS:
        raise too_large(f"{rows:,} rows")
    params = payload.get(PARAMS_KEY)
    if params is not None and not isinstance(params, dict):
        raise Refused(
            400,
            "INVALID_PARAMETER_VALUE",
            f'\'{PARAMS_KEY}\' must be a JSON object such as {{"predict_method": "predict"}}, '
            f"not {type(params).__name__}.",
        )
    split = payload.get("dataframe_split")
    if isinstance(split, dict) and isinstance(split.get("columns"), list):
        for position, name in enumerate(split["columns"]):
            if not isinstance(name, str):
                raise Refused(
                    400,
                    "INVALID_PARAMETER_VALUE",
                    f"dataframe_split's columns: the name at position {position} is the JSON "
                    f"{json_type(name)} {capped(json.dumps(name), 100)}; column names are strings.",
                )
        if (twice := first_duplicate(split["columns"])) is not None:
            raise named_twice(twice, "dataframe_split's columns")
    # No text column, and b"true"/b"false" absent: the common case, no value to look at
    if (strings or (numeric and (b"true" in body or b"false" in body))) and (
        refusal := _wrong_kind(payload, numeric, strings)
    ):
        raise refusal


def json_type(value: object) -> str:
    """The JSON name of ``value``'s type: array, object, number, boolean, null, string."""
    if isinstance(value, bool):
        return "boolean"
    names = {list: "array", dict: "object", int: "number", float: "number", str: "string"}
    return "null" if value is None else names.get(type(value), type(value).__name__)


def csv_rows(body: bytes) -> int:
    """The number of data rows of a CSV body, as pandas counts them (blank lines skipped, a
    quoted line break inside a cell); counted exactly only when its lines exceed
    :data:`MAX_ROWS`."""
    if body.count(b"\n") <= MAX_ROWS:
        return body.count(b"\n")  # at least the rows, header and blank lines left out
    try:
        return sum(1 for row in csv.reader(io.StringIO(utf8(body, "CSV"))) if row) - 1
    except csv.Error:
        return body.count(b"\n")


def check_csv(body: bytes, numeric: frozenset[str]) -> None:
    """Refuse a CSV body that is not UTF-8 (MLflow quotes the bytes), names a column twice
    (pandas would rename the second ``<name>.1`` and the model would ignore it), or has
    ``True``/``False`` in a numeric column (pandas reads them as 1.0 and 0.0)."""
    rows = (row for row in csv.reader(io.StringIO(utf8(body, "CSV"))) if row)  # pandas skips blank lines
    if (count := csv_rows(body)) > MAX_ROWS:
        raise too_large(f"{count:,} rows")
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


def check_request(headers, body: bytes, numeric: frozenset[str], strings: frozenset[str] = frozenset()) -> None:
    """Raise :class:`Refused` for a ``POST /invocations`` that MLflow's app would answer with
    a 500, a 400 quoting the whole body, or a prediction from misread input; else return.

    ``numeric``, ``strings``: the columns the model's signature declares as numbers, as strings.
    """
    encoding = headers.get("content-encoding", "").strip().lower()
    if encoding not in ("", "identity"):
        raise Refused(
            415, "BAD_REQUEST", f"Content-Encoding {quoted(encoding)} is not supported; send the body uncompressed."
        )
    content_type = headers.get("content-type", "").strip()
    if not content_type:
        raise Refused(
            415,
            "BAD_REQUEST",
            f"A Content-Type header is required: {JSON_TYPE} or {CSV_TYPE} (with no other charset than utf-8).",
        )
    if len(body) > MAX_BODY_BYTES:  # serving.server stops reading sooner; here for any other caller
        raise too_large(f"more than {MAX_BODY_BYTES:,} bytes")
    mime = parsed_as(content_type)
    if mime == PARQUET_TYPE:
        raise Refused(
            415,
            "BAD_REQUEST",
            f"Content-Type {PARQUET_TYPE} is not accepted: the memory a Parquet body takes once "
            f"read cannot be bounded before reading it. Send {JSON_TYPE} or {CSV_TYPE}, or score "
            "Parquet files with python -m serving.batch.",
        )
    if mime == JSON_TYPE:
        check_json(body, numeric, strings)
    elif mime == CSV_TYPE:
        check_csv(body, numeric)


def parsed_as(content_type: str) -> str | None:
    """The format MLflow's app parses a body of ``content_type`` as (JSON, CSV or Parquet),
    or None where it answers 415 without parsing: its own reading of the header
    (``mlflow.pyfunc.scoring_server.invocations``), where a parameter named twice counts
    once, the last one, and a name is matched exactly."""
    mime, *pairs = (part.strip() for part in content_type.split(";"))
    parameters = {key: value for key, _, value in (pair.partition("=") for pair in pairs)}
    if parameters.get("charset", "utf-8").lower() != "utf-8" or set(parameters) - {"charset"}:
        return None  # MLflow's 415 names the charset or the parameter
    return mime if mime in (JSON_TYPE, CSV_TYPE, PARQUET_TYPE) else None


def numeric_columns(schema, types=NUMERIC_TYPES) -> frozenset[str]:
    """The input columns ``schema`` (an MLflow ``Schema``, or None) declares as numbers
    (or as one of ``types``: :data:`TEXT_TYPES` for text)."""
    if schema is None or not schema.has_input_names():
        return frozenset()
    return frozenset(spec.name for spec in schema.inputs if getattr(getattr(spec, "type", None), "name", None) in types)
