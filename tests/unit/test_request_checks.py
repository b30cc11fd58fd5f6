"""The server's request checks and answer rewrites as plain functions (serving/request_checks.py,
serving/bounded_json.py, serving/server.py), on the edge cases a running server is slow to reach."""

from __future__ import annotations

import json

import pandas as pd
import pytest

from serving.bounded_json import MAX_MESSAGE_CHARS, Refused, capped, json_depth
from serving.request_checks import MAX_BODY_BYTES, MAX_ROWS, check_request
from serving.server import LOG_ZERO, client_message, strict_predictions

JSON = {"content-type": "application/json"}


def test_json_depth_skips_brackets_inside_strings_and_escaped_quotes():
    assert json_depth(b'{"a": "[[[[{{", "b": [[1]]}') == 3
    assert json_depth(rb'["\"[[[", [2]]') == 2
    assert json_depth(b"1") == 0


def test_a_message_is_capped_once_escaped_whatever_it_quotes():
    for quoted in ("x" * 10**6, "\x00" * 10**5, "\U0001f600" * 10**5):
        message = capped(f"could not convert string to float: '{quoted}'")
        assert len(json.dumps(message)) <= MAX_MESSAGE_CHARS + 60
        assert message.startswith("could not convert") and "more characters not shown" in message
    assert capped("short") == "short"


def test_a_key_twice_anywhere_in_a_json_object_is_refused():
    body = b'{"inputs": [{"a": 1, "b": 2}, {"a": 1, "a": 2}]}'
    with pytest.raises(Refused, match="Key 'a' appears twice in one JSON object"):
        check_request(JSON, body, frozenset())


def test_a_boolean_is_refused_only_in_a_numeric_column():
    body = json.dumps({"dataframe_records": [{"flag": True, "x": 1.0}, {"flag": False, "x": False}]}).encode()
    check_request(JSON, body, frozenset())  # no numeric column declared: MLflow's to judge
    with pytest.raises(Refused, match="Input row 1 has the boolean false in column 'x'"):
        check_request(JSON, body, frozenset({"x"}))


def refusal(body: bytes | str, headers: dict[str, str] = JSON) -> Refused:
    with pytest.raises(Refused) as refused:
        check_request(headers, body.encode() if isinstance(body, str) else body, frozenset({"a", "b"}))
    return refused.value


HUGE = "9" * 4301  # past Python's limit of int-str conversion (4,300 digits)
INTEGERS = {  # body, where the message says the integer is
    "in data": (
        f'{{"dataframe_split": {{"columns": ["a", "b"], "data": [[1, 2], [3, -{HUGE}]]}}}}',
        "dataframe_split.data[1][1] has 4,301 digits",
    ),
    "in params": (
        f'{{"inputs": [{{"a": 1, "b": 2}}], "params": {{"predict_method": {HUGE}}}}}',
        "params.predict_method has 4,301 digits",
    ),
    "a key with a space": (f'{{"inputs": {{"a b": [{HUGE}]}}}}', 'inputs["a b"][0] has 4,301 digits'),
    "alone": (HUGE, "the top of the body has 4,301 digits"),
    "within 309 digits, beyond a double": ('{"inputs": {"a": [' + "9" * 309 + "]}}", "inputs.a[0] has 309 digits"),
}


@pytest.mark.parametrize("case", list(INTEGERS))
def test_an_integer_beyond_a_double_is_refused_naming_where(case):
    body, where = INTEGERS[case]
    refused = refusal(body)
    assert refused.status == 400 and f"Invalid input: the integer at {where}" in refused.message
    assert "beyond the range of a double" in refused.message and HUGE not in refused.message
    check_request(JSON, ('{"inputs": {"a": [' + "9" * 308 + "]}}").encode(), frozenset())  # a double holds it


@pytest.mark.parametrize(
    ("columns", "position", "shown"),
    [
        ([["a"], "b"], 0, 'the JSON array ["a"]'),
        (["a", None], 1, "the JSON null null"),
        (["a", 2], 1, "the JSON number 2"),
        (["a", {"b": 1}], 1, 'the JSON object {"b": 1}'),
    ],
)
def test_a_column_name_that_is_not_a_string_is_refused_naming_its_position(columns, position, shown):
    refused = refusal(json.dumps({"dataframe_split": {"columns": columns, "data": [[1, 2]]}}))
    assert refused.status == 400
    assert refused.message == (
        f"dataframe_split's columns: the name at position {position} is {shown}; column names are strings."
    )


@pytest.mark.parametrize(
    "content_type",
    [
        "application/vnd.apache.parquet",
        "application/vnd.apache.parquet; charset=utf-8",
        "application/vnd.apache.parquet; charset=latin-1; charset=UTF-8",
    ],
)
def test_parquet_is_refused_before_it_is_read(content_type):
    refused = refusal(b"PAR1" + b"\0" * 100 + b"PAR1", {"content-type": content_type})
    assert refused.status == 415
    assert "application/vnd.apache.parquet is not accepted" in refused.message
    assert "Send application/json or text/csv" in refused.message


def test_a_charset_named_twice_is_read_as_mlflow_reads_it_the_last_one():
    body = f'{{"inputs": {{"a": [{HUGE}]}}}}'
    assert refusal(body, {"content-type": "application/json; charset=latin-1; charset=utf-8"}).status == 400
    # MLflow answers these with a 415 of its own, without parsing: nothing to check
    for content_type in (
        "application/json; charset=utf-8; charset=latin-1",
        "application/json; Charset=utf-8",
        "application/json;",
        "application/vnd.apache.parquet; version=2",
        "text/plain",
    ):
        check_request({"content-type": content_type}, body.encode(), frozenset())


ROWS = {
    "dataframe_split": {"dataframe_split": {"columns": ["a"], "data": [[1]] * (MAX_ROWS + 1)}},
    "dataframe_records": {"dataframe_records": [{"a": 1}] * (MAX_ROWS + 1)},
    "inputs as columns": {"inputs": {"a": [1], "b": [1] * (MAX_ROWS + 1)}},
    "instances": {"instances": [[1]] * (MAX_ROWS + 1)},
}


@pytest.mark.parametrize("layout", [*ROWS, "CSV"])
def test_more_rows_than_the_limit_are_a_413(layout):
    if layout == "CSV":
        body, headers = "a\n" + "1\n\n" * (MAX_ROWS + 1), {"content-type": "text/csv"}
        check_request(headers, ("a\n" + "1\n" * MAX_ROWS).encode(), frozenset())
        check_request(headers, ('a\n"x\n\n"\n' * (MAX_ROWS // 2)).encode(), frozenset())  # quoted line breaks
    else:
        body, headers = json.dumps(ROWS[layout]), JSON
    refused = refusal(body, headers)
    assert refused.status == 413
    assert refused.message.startswith(f"The request is too large: {MAX_ROWS + 1:,} rows. Send at most")


def test_a_body_larger_than_the_limit_is_a_413():
    refused = refusal(b" " * (MAX_BODY_BYTES + 1), {"content-type": "text/csv"})
    assert refused.status == 413 and f"more than {MAX_BODY_BYTES:,} bytes" in refused.message


def test_predictions_become_strict_json():
    assert strict_predictions(b'{"predictions": [[0.5, 0.5]]}') == b'{"predictions": [[0.5, 0.5]]}'
    encoded = strict_predictions(b'{"predictions": [[-Infinity, 0.0]]}')
    assert json.loads(encoded)["predictions"] == [[LOG_ZERO, 0.0]]
    for constant in (b"NaN", b"Infinity"):  # the model refuses what would produce them
        with pytest.raises(ValueError, match="which JSON cannot carry"):
            strict_predictions(b'{"predictions": [[' + constant + b", 0.0]]}")


def test_mlflows_echoes_of_the_data_are_dropped():
    schema = "['a': double (required)]"
    echoed = (
        f"Failed to predict data '   a\n0  {'9' * 5000}'. \nError: Failed to enforce schema of data "
        f"'   a\n0  {'9' * 5000}' with schema '{schema}'. Error: Model is missing inputs ['b']."
    )
    assert client_message(echoed) == (
        f"The input does not match the model's schema: Model is missing inputs ['b']. Its schema: {schema}"
    )


TEXT_LAYOUTS = {
    "records": {"dataframe_records": [{"sex": "male", "x": 1.0}, {"sex": 1, "x": 2.0}]},
    "split": {"dataframe_split": {"columns": ["x", "sex"], "data": [[1.0, "male"], [2.0, 1]]}},
    "columns": {"inputs": {"x": [1.0, 2.0], "sex": ["male", 1]}},
}


@pytest.mark.parametrize("layout", sorted(TEXT_LAYOUTS))
def test_a_number_for_a_text_column_is_refused_naming_row_and_column(layout):
    body = json.dumps(TEXT_LAYOUTS[layout]).encode()
    check_request(JSON, body, frozenset({"x"}))  # no text column declared: MLflow's to judge
    with pytest.raises(Refused) as refused:
        check_request(JSON, body, frozenset({"x"}), frozenset({"sex"}))
    assert refused.value.status == 400
    assert refused.value.message.startswith("Column 'sex' takes text: input row 1 has the number 1")
    check_request(
        JSON, json.dumps({"inputs": {"x": [1], "sex": ["1"]}}).encode(), frozenset({"x"}), frozenset({"sex"})
    )  # the text "1" is text


def test_a_csv_cell_has_no_type_so_a_number_in_a_text_column_is_text():
    """Documented limit: MLflow reads each CSV column with the signature's type."""
    import io

    from mlflow.models import infer_signature
    from mlflow.pyfunc.scoring_server import parse_csv_input

    from serving.request_checks import TEXT_TYPES, numeric_columns

    signature = infer_signature(pd.DataFrame({"sex": ["male"], "x": [1.0]}))
    text = numeric_columns(signature.inputs, TEXT_TYPES)
    assert text == {"sex"} and numeric_columns(signature.inputs) == {"x"}
    body = "sex,x\nmale,1.0\n1,2.0\n"
    check_request({"content-type": "text/csv"}, body.encode(), frozenset({"x"}), text)
    assert parse_csv_input(io.StringIO(body), schema=signature.inputs)["sex"].tolist() == ["male", "1"]


def test_on_a_wide_table_a_missing_column_is_named_within_the_cut():
    columns = [f"measurement_{i:02d}_of_the_sensor" for i in range(64)]
    schema = "[" + ", ".join(f"'{c}': double (required)" for c in columns) + "]"
    message = (
        f"Failed to enforce schema of data '   a\n0  1.0' with schema '{schema}'. "
        f"Error: Model is missing inputs ['{columns[-1]}']."
    )
    shown = capped(client_message(message))
    assert f"Model is missing inputs ['{columns[-1]}']" in shown
    assert "1.0" not in shown.split("Its schema")[0]
