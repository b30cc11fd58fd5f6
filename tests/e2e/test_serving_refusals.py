"""`make serve` (python -m serving.server) against requests MLflow's scoring app alone
answers with a 500, an echo of the whole body, invalid JSON or a silent misreading;
then a fuzz run (Hypothesis) of generated bodies. One server, a logistic regression
packaged in this module's own store, serves every test here."""

from __future__ import annotations

import gzip
import json
import subprocess
import sys
from datetime import timedelta

import numpy as np
import pandas as pd
import pytest
import requests
from hypothesis import HealthCheck, event, given, settings
from hypothesis import strategies as st
from sklearn.linear_model import LogisticRegression

from core import contracts
from core.config import compose_config
from model.dispatch_model import PREDICT_METHODS
from serving.bounded_json import MAX_MESSAGE_CHARS
from serving.request_checks import MAX_BODY_BYTES
from serving.server import LOG_ZERO
from tests.support.factories import EXPERIMENT, FEATURES, new_store, package, venv_env
from tests.support.helpers import free_port, stop, wait_for_http

# One worker runs this module whole (make test: --dist loadscope): its tests share a server.

ROWS = [[1.4, 0.2], [4.7, 1.4], [6.0, 2.5]]
MAX_ERROR_BYTES = 2048  # a message of MAX_MESSAGE_CHARS and MLflow's few other keys fit easily


@pytest.fixture(scope="module")
def served(tmp_path_factory, empty_store):
    """(base URL, the fitted estimator) of `python -m serving.server` serving a
    LogisticRegression packaged as the dispatch model in a store of this module's own."""
    import mlflow

    root = tmp_path_factory.mktemp("refusals")
    with pytest.MonkeyPatch.context() as patch:
        uri = new_store(empty_store, root)
        patch.setenv("MLFLOW_TRACKING_URI", uri)
        patch.setenv("MLFLOW_EXPERIMENT_NAME", EXPERIMENT)
        patch.chdir(root)
        mlflow.set_tracking_uri(uri)
        try:
            estimator = LogisticRegression(max_iter=5000, random_state=0)
            info, fitted, _ = package(estimator, root, compose_config([]))
        finally:
            mlflow.set_tracking_uri(None)
    port, log = free_port(), root / "server.log"
    with open(log, "w") as handle:
        process = subprocess.Popen(
            [sys.executable, "-m", "serving.server", "--model-uri", info.model_uri, "--port", str(port)],
            env=venv_env(MLFLOW_TRACKING_URI=uri, PYTHONPATH=str(contracts.PROJECT_DIR)),
            cwd=root,
            stdout=handle,
            stderr=subprocess.STDOUT,
        )
    base = f"http://127.0.0.1:{port}"
    try:
        wait_for_http(process, f"{base}/ping", log, timeout=300)
        yield base, fitted
    finally:
        stop(process)


def no_constants(name: str):
    raise ValueError(f"{name} is not JSON")


def strict_json(response: requests.Response):
    """The answer's body parsed as strict JSON (no NaN, Infinity or -Infinity)."""
    return json.loads(response.content, parse_constant=no_constants)


def post(base: str, body: bytes | str, headers: dict[str, str]) -> requests.Response:
    """POST ``body`` (text: as UTF-8) to /invocations; a header given as "" is not sent at all."""
    data = body.encode("utf-8", "surrogatepass") if isinstance(body, str) else body
    sent = {name: value for name, value in headers.items() if value}
    return requests.post(f"{base}/invocations", data=data, headers=sent, timeout=60)


def post_json(base: str, payload) -> requests.Response:
    return post(base, json.dumps(payload), {"Content-Type": "application/json"})


def split(rows, columns=FEATURES, **params):
    body = {"dataframe_split": {"columns": columns, "data": rows}}
    return body | ({"params": params} if params else {})


def assert_refused(response: requests.Response, status: int, *expected: str) -> dict:
    """The answer is ``status``, short, strict JSON in MLflow's shape, and its message
    has every ``expected`` text; returns the payload."""
    assert response.status_code == status, response.text[:2000]
    assert len(response.content) <= MAX_ERROR_BYTES, response.text[:2000]
    payload = strict_json(response)
    assert isinstance(payload["error_code"], str) and "stack_trace" not in payload
    for text in expected:
        assert text in payload["message"]
    return payload


def test_a_request_without_content_type_is_a_415(served):
    base, _ = served
    response = post(base, json.dumps(split(ROWS)), {"Content-Type": ""})
    assert_refused(response, 415, "A Content-Type header is required: application/json or text/csv")


def test_json_nested_5000_deep_is_a_400(served):
    base, _ = served
    for body in ("[" * 5000 + "]" * 5000, '{"inputs": ' + "[" * 5000 + "]" * 5000 + "}"):
        response = post(base, body, {"Content-Type": "application/json"})
        assert_refused(response, 400, "nested deeper than 32 levels")
    deep = '{"dataframe_split": {"columns": ["a"], "data": ' + "[" * 40 + "]" * 40 + "}}"
    response = post(base, deep, {"Content-Type": "application/json"})
    assert_refused(response, 400, "nested 42 levels deep; the limit is 32")


MARKER = "zq" * 5_000_000  # 10 MB of a text no message has of itself
BODIES = {
    "malformed 10 MB JSON": (
        '{"dataframe_records": [' + MARKER,
        {"Content-Type": "application/json"},
        400,
        "the body is not valid JSON: Expecting value at line 1, column 24",
    ),
    "10 MB CSV value": (
        '"petal length (cm)","petal width (cm)"\n' + MARKER + ",0.2",
        {"Content-Type": "text/csv"},
        400,
        "could not convert string to float",
    ),
    "non-UTF-8 JSON": (
        b'{"inputs": "\xff\xfe' + MARKER.encode() + b'"}',
        {"Content-Type": "application/json"},
        400,
        "the body is not UTF-8 text (byte 0xff at position 12)",
    ),
    "non-UTF-8 CSV": (
        b'"petal length (cm)"\n\xff' + MARKER.encode(),
        {"Content-Type": "text/csv"},
        400,
        "the body is not UTF-8 text (byte 0xff at position 20)",
    ),
    "gzip JSON, no Content-Encoding": (
        gzip.compress(json.dumps(split([[MARKER, 0.2]])).encode()),
        {"Content-Type": "application/json"},
        400,
        "the body is not UTF-8 text (byte 0x8b at position 1)",
    ),
    "gzip JSON with Content-Encoding": (
        gzip.compress(json.dumps(split([[MARKER, 0.2]])).encode()),
        {"Content-Type": "application/json", "Content-Encoding": "gzip"},
        415,
        "Content-Encoding 'gzip' is not supported",
    ),
}


@pytest.mark.parametrize("case", list(BODIES))
def test_an_unreadable_body_is_refused_in_a_short_answer_without_echo(served, case):
    base, _ = served
    body, headers, status, expected = BODIES[case]
    payload = assert_refused(post(base, body, headers), status, expected)
    assert payload["message"].count("zq") <= MAX_MESSAGE_CHARS // 2


@pytest.mark.parametrize(
    ("value", "method", "produced"), [(1e308, "predict_proba", "nan"), (-1e308, "predict_log_proba", "nan")]
)
def test_an_input_that_overflows_the_model_is_a_400_naming_the_row(served, value, method, produced):
    base, _ = served
    response = post_json(base, split([[1.4, 0.2], [value, 0.2]], predict_method=method))
    assert_refused(
        response,
        400,
        f"Input row 1 gives {produced} from LogisticRegression.{method}",
        f"its largest value: {value:g} in column 'petal length (cm)'",
    )


def test_the_log_of_a_zero_probability_is_sent_as_the_most_negative_double(served):
    base, estimator = served
    rows = [[1.4, 0.2], [1e4, 0.2]]  # far out: some probabilities underflow to exactly 0
    native = estimator.predict_log_proba(pd.DataFrame(rows, columns=FEATURES))
    assert np.isneginf(native).any()
    response = post_json(base, split(rows, predict_method="predict_log_proba"))
    assert response.status_code == 200, response.text
    got = np.array(strict_json(response)["predictions"])
    np.testing.assert_array_equal(got, np.where(np.isneginf(native), LOG_ZERO, native))
    assert np.exp(LOG_ZERO) == 0.0


BOOLEANS = {
    "dataframe_split": split([[1.4, 0.2], [True, 0.2]]),
    "dataframe_records": {
        "dataframe_records": [{FEATURES[0]: 1.4, FEATURES[1]: 0.2}, {FEATURES[0]: True, FEATURES[1]: 0.2}]
    },
    "inputs as columns": {"inputs": {FEATURES[0]: [1.4, True], FEATURES[1]: [0.2, 0.2]}},
    "instances as records": {
        "instances": [{FEATURES[0]: 1.4, FEATURES[1]: 0.2}, {FEATURES[0]: True, FEATURES[1]: 0.2}]
    },
    "CSV": '"petal length (cm)","petal width (cm)"\n1.4,0.2\nTrue,0.2',
}


@pytest.mark.parametrize("layout", list(BOOLEANS))
def test_a_boolean_for_a_numeric_column_is_refused_naming_the_column(served, layout):
    base, _ = served
    body = BOOLEANS[layout]
    csv = isinstance(body, str)
    response = post(base, body, {"Content-Type": "text/csv"}) if csv else post_json(base, body)
    shown = "True" if csv else "true"
    assert_refused(
        response, 400, f"Input row 1 has the boolean {shown} in column 'petal length (cm)', which takes numbers"
    )


DUPLICATES = {
    "dataframe_split": (
        split([[1.4, 0.2, 0.3]], columns=[*FEATURES, FEATURES[1]]),
        "Column 'petal width (cm)' appears twice in dataframe_split's columns",
    ),
    "dataframe_records": (
        '{"dataframe_records": [{"petal length (cm)": 1.4, "petal width (cm)": 0.2, "petal width (cm)": 0.3}]}',
        "Key 'petal width (cm)' appears twice in one JSON object",
    ),
    "CSV": (
        '"petal length (cm)","petal width (cm)","petal width (cm)"\n1.4,0.2,0.3',
        "Column 'petal width (cm)' appears twice in the CSV header",
    ),
}


@pytest.mark.parametrize("layout", list(DUPLICATES))
def test_a_column_named_twice_is_refused_naming_it(served, layout):
    base, _ = served
    body, expected = DUPLICATES[layout]
    content_type = "text/csv" if layout == "CSV" else "application/json"
    response = post(base, body if isinstance(body, str) else json.dumps(body), {"Content-Type": content_type})
    assert_refused(response, 400, expected)


def test_an_empty_predict_method_is_refused(served):
    base, estimator = served
    response = post_json(base, split(ROWS, predict_method=""))
    assert_refused(response, 400, "Unsupported predict_method ''; allowed values are")
    answered = post_json(base, split(ROWS, predict_method=None))  # null: the default, as when absent
    assert answered.status_code == 200, answered.text
    np.testing.assert_allclose(
        strict_json(answered)["predictions"], estimator.predict_proba(pd.DataFrame(ROWS, columns=FEATURES)), atol=1e-12
    )


def test_params_that_are_not_an_object_are_refused(served):
    base, _ = served
    response = post_json(base, split(ROWS) | {"params": ["predict"]})
    assert_refused(response, 400, "'params' must be a JSON object")


HUGE = "9" * 4301  # past Python's 4,300 digits of int-str conversion: MLflow alone fails with a 500
HOLES = {  # body, Content-Type, status, message
    "an integer of 4,301 digits in data": (
        f'{{"dataframe_split": {{"columns": {json.dumps(FEATURES)}, "data": [[1.4, {HUGE}]]}}}}',
        "application/json",
        400,
        "the integer at dataframe_split.data[0][1] has 4,301 digits",
    ),
    "an integer of 4,301 digits in params": (
        f'{{"inputs": {{"petal length (cm)": [1.4], "petal width (cm)": [0.2]}}, "params": {{"x": {HUGE}}}}}',
        "application/json",
        400,
        "the integer at params.x has 4,301 digits",
    ),
    "a charset named twice, the last utf-8": (
        f'{{"inputs": {{"petal length (cm)": [{HUGE}]}}}}',
        "application/json; charset=latin-1; charset=utf-8",
        400,
        'the integer at inputs["petal length (cm)"][0] has 4,301 digits',
    ),
    "a list as a column name": (
        json.dumps(split([[1.4, 0.2]], columns=[[FEATURES[0]], FEATURES[1]])),
        "application/json",
        400,
        "dataframe_split's columns: the name at position 0 is the JSON array",
    ),
    "Parquet": (
        b"PAR1" + bytes(64) + b"PAR1",
        "application/vnd.apache.parquet",
        415,
        "application/vnd.apache.parquet is not accepted",
    ),
    "a body beyond the size limit": (
        b" " * (MAX_BODY_BYTES + 1),
        "application/json",
        413,
        f"more than {MAX_BODY_BYTES:,} bytes",
    ),
}


@pytest.mark.parametrize("case", list(HOLES))
def test_what_mlflow_alone_fails_on_or_takes_without_bound_is_a_short_4xx(served, case):
    base, _ = served
    body, content_type, status, expected = HOLES[case]
    assert_refused(post(base, body, {"Content-Type": content_type}), status, expected)


def test_a_chunked_body_beyond_the_size_limit_is_a_413_read_no_further(served):
    base, _ = served
    chunk = b" " * 2**20
    sent = []

    def chunks():  # no Content-Length: requests sends it chunked
        for _ in range(MAX_BODY_BYTES // len(chunk) * 4):
            sent.append(len(chunk))
            yield chunk

    try:
        response = requests.post(
            f"{base}/invocations", data=chunks(), timeout=60, headers={"Content-Type": "application/json"}
        )
    except requests.ConnectionError:  # the server may close before the client has sent it all
        return
    assert_refused(response, 413, f"more than {MAX_BODY_BYTES:,} bytes")


def test_other_errors_are_json_in_mlflows_shape(served):
    base, _ = served
    assert_refused(requests.get(f"{base}/invocations", timeout=30), 405, "Method Not Allowed")
    assert_refused(requests.get(f"{base}/nowhere", timeout=30), 404, "Not Found")
    plain = post(base, "x", {"Content-Type": "text/plain"})  # MLflow's own 415 is text
    assert_refused(plain, 415, "Got 'text/plain'")
    other = post(base, json.dumps(split(ROWS)), {"Content-Type": "application/json; charset=latin-1"})
    assert_refused(other, 415, "only supports UTF-8")


# ---- fuzzing: generated bodies; every answer strict JSON, never a 5xx, errors short ----

NAMES = st.sampled_from([*FEATURES, "petal_length", "", "x", "True"])
EDGES = st.sampled_from([1e308, -1e308, 1e300, 3.5e38, 1e4, -1e4, 0.0, 5e-324, 2**63, -(2**63) - 1])
NUMBERS = st.floats(allow_nan=True, allow_infinity=True) | st.integers(-(10**30), 10**30) | EDGES
SCALARS = st.none() | st.booleans() | NUMBERS | st.text(max_size=12)
# Mostly numbers a client of this model could send, so that many requests reach the model.
PLAUSIBLE = st.one_of(st.floats(-10, 10), st.integers(0, 10), EDGES)
CELLS = st.one_of(PLAUSIBLE, PLAUSIBLE, PLAUSIBLE, NUMBERS, SCALARS)
JSON_VALUES = st.recursive(
    SCALARS,
    lambda inner: st.lists(inner, max_size=4) | st.dictionaries(st.text(max_size=8) | NAMES, inner, max_size=4),
    max_leaves=12,
)
METHODS = st.sampled_from([*PREDICT_METHODS, "", "transform", "PREDICT"])
PARAMS = st.one_of(
    st.fixed_dictionaries({"predict_method": METHODS}),
    st.fixed_dictionaries({"predict_method": SCALARS | st.lists(SCALARS, max_size=2)}),
    st.dictionaries(st.text(max_size=8), SCALARS, max_size=2),
    JSON_VALUES,
)


def with_params(key: str, data: st.SearchStrategy) -> st.SearchStrategy:
    return st.fixed_dictionaries({key: data}, optional={"params": PARAMS})


PAIR = st.lists(CELLS, min_size=2, max_size=2)
ROW = st.one_of(PAIR, PAIR, st.lists(SCALARS | JSON_VALUES, max_size=3))
RECORD = st.one_of(st.fixed_dictionaries(dict.fromkeys(FEATURES, CELLS)), st.dictionaries(NAMES, SCALARS, max_size=3))
SPLITS = with_params(
    "dataframe_split",
    st.fixed_dictionaries(
        {
            "columns": st.one_of(st.permutations(FEATURES), st.permutations(FEATURES), st.lists(NAMES, max_size=3)),
            "data": st.lists(ROW, min_size=1, max_size=3),
        }
    )
    | JSON_VALUES,
)
RECORDS = st.sampled_from(["dataframe_records", "instances", "inputs"]).flatmap(
    lambda key: with_params(key, st.lists(RECORD, min_size=1, max_size=3) | JSON_VALUES)
)
COLUMNS = with_params(
    "inputs",
    st.one_of(
        st.fixed_dictionaries(dict.fromkeys(FEATURES, st.lists(CELLS, min_size=1, max_size=3))),
        st.dictionaries(NAMES, st.lists(SCALARS, max_size=3) | SCALARS, max_size=3),
    ),
)
JSON_BODIES = st.one_of(SPLITS, RECORDS, COLUMNS, JSON_VALUES).map(json.dumps)

CSV_CELLS = st.one_of(
    NUMBERS.map(repr), st.sampled_from(["1.4", "True", "false", "", "NaN", "inf", '"a,b"']), st.text(max_size=6)
)
CSV_HEADERS = st.permutations(FEATURES).map(lambda names: ",".join(f'"{name}"' for name in names))
CSV_TABLES = st.tuples(
    CSV_HEADERS | st.text(max_size=20), st.lists(st.lists(CSV_CELLS, min_size=1, max_size=3), min_size=1, max_size=4)
)
CSV_BODIES = CSV_TABLES.map(lambda table: "\n".join([table[0], *(",".join(row) for row in table[1])]))

# (Content-Type, body); "" sends no Content-Type at all.
REQUESTS = st.one_of(
    st.tuples(st.just("application/json"), JSON_BODIES | st.text(max_size=30)),
    st.tuples(st.just("text/csv"), CSV_BODIES | st.text(max_size=40)),
    st.tuples(
        st.sampled_from(
            [
                "",
                "application/json; charset=utf-8",
                "text/csv; charset=UTF-8",
                "text/plain",
                "application/vnd.apache.parquet",
                "application/json; charset=latin-1; charset=utf-8",
            ]
        ),
        JSON_BODIES | CSV_BODIES,
    ),
)


# Derandomized (the same examples on every run) and bounded: about 10 s on a busy machine.
@settings(
    max_examples=300,
    deadline=timedelta(seconds=10),
    derandomize=True,
    database=None,
    suppress_health_check=[HealthCheck.function_scoped_fixture, HealthCheck.too_slow],
)
@given(sent=REQUESTS)
def test_generated_bodies_never_get_a_5xx_a_traceback_or_invalid_json(served, sent):
    base, _ = served
    content_type, body = sent
    response = post(base, body, {"Content-Type": content_type})
    event(f"{content_type} -> {response.status_code}")  # --hypothesis-show-statistics shows the spread
    assert response.status_code < 500, response.text[:2000]
    assert "Traceback" not in response.text
    payload = strict_json(response)
    if response.status_code >= 400:
        assert len(response.content) <= MAX_ERROR_BYTES, response.text[:2000]
        assert isinstance(payload["message"], str) and "stack_trace" not in payload
    else:
        assert response.status_code == 200 and "predictions" in payload
