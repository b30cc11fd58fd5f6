"""The server's request checks and answer rewrites as plain functions (serving/request_checks.py,
serving/server.py), on the edge cases a running server is slow to reach."""

from __future__ import annotations

import json

import pytest

from serving.request_checks import MAX_MESSAGE_CHARS, Refused, capped, check_request, json_depth
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


def test_predictions_become_strict_json():
    assert strict_predictions(b'{"predictions": [[0.5, 0.5]]}') == b'{"predictions": [[0.5, 0.5]]}'
    encoded = strict_predictions(b'{"predictions": [[-Infinity, 0.0]]}')
    assert json.loads(encoded)["predictions"] == [[LOG_ZERO, 0.0]]
    for constant in (b"NaN", b"Infinity"):  # the model refuses what would produce them
        with pytest.raises(ValueError, match="which JSON cannot carry"):
            strict_predictions(b'{"predictions": [[' + constant + b", 0.0]]}")


def test_mlflows_echoes_of_the_data_are_dropped():
    schema = "['a': double (required)]"
    echoed = (f"Failed to predict data '   a\n0  {'9' * 5000}'. \nError: Failed to enforce schema of data "
              f"'   a\n0  {'9' * 5000}' with schema '{schema}'. Error: Model is missing inputs ['b'].")
    assert client_message(echoed) == (f"The input does not match the model's schema {schema}: "
                                      "Model is missing inputs ['b'].")
