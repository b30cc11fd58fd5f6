"""MLflow's scoring app behind this server's checks (serving.server.scoring_app), in this
process, on generated requests of every content type: JSON, CSV and Parquet bodies under
Content-Types with and without charsets and other parameters (a parameter named twice
too), integers beyond a double, column names that are not strings, deep nesting, bytes
that are not text. Every answer is strict JSON, never a 5xx; an error is short and
carries no traceback. Derandomized (the same examples on every run) and bounded in
count and size; no deadline: a busy machine is slower, not wrong."""

from __future__ import annotations

import io
import json
import re

import mlflow
import pandas as pd
import pytest
from hypothesis import HealthCheck, event, given, settings
from hypothesis import strategies as st
from sklearn.linear_model import LogisticRegression

from core.config import compose_config
from serving.request_checks import CSV_TYPE, JSON_TYPE, PARQUET_TYPE
from serving.server import scoring_app
from tests.support.asgi import post
from tests.support.factories import FEATURES, package_once

MAX_ERROR_BYTES = 2048


@pytest.fixture(scope="module")
def app(tmp_path_factory, empty_store):
    """The guarded scoring app of a logistic regression packaged in a store of this module's own."""
    store, info, _, _ = package_once(
        LogisticRegression(max_iter=5000), tmp_path_factory.mktemp("fuzz"), empty_store, compose_config([])
    )
    client = mlflow.MlflowClient(tracking_uri=f"sqlite:///{store / 'mlflow.db'}")
    return scoring_app(mlflow.pyfunc.load_model(client.get_logged_model(info.model_id).artifact_location))


def parquet(frame: pd.DataFrame) -> bytes:
    buffer = io.BytesIO()
    frame.to_parquet(buffer)
    return buffer.getvalue()


# An integer of that many digits, written into the body's text after it is encoded: Python's
# json and repr refuse integers past 4,300 digits themselves.
HUGE = st.integers(300, 5000).map(lambda digits: f"@huge{digits}@")
HUGE_TEXT = re.compile(r'"?@huge(\d+)@"?')


def with_huge(text: str) -> str:
    return HUGE_TEXT.sub(lambda found: "9" * int(found[1]), text)


NUMBERS = st.floats(-10, 10) | st.integers(0, 10) | st.floats() | HUGE
NAMES = (
    st.sampled_from(FEATURES)
    | st.text(max_size=6)
    | st.none()
    | st.integers()
    | st.lists(st.text(max_size=3), max_size=2)
)
CELLS = NUMBERS | st.none() | st.booleans() | st.text(max_size=6) | st.lists(NUMBERS, max_size=2)
PARAMS = st.dictionaries(
    st.sampled_from(["predict_method", "x"]),
    st.sampled_from(["predict", "predict_proba", ""]) | NUMBERS | st.none(),
    max_size=2,
)
SPLIT = st.fixed_dictionaries(
    {
        "dataframe_split": st.fixed_dictionaries(
            {
                "columns": st.permutations(FEATURES) | st.lists(NAMES, max_size=3),
                "data": st.lists(
                    st.lists(CELLS, min_size=2, max_size=2) | st.lists(CELLS, max_size=3), min_size=1, max_size=3
                ),
            }
        )
    },
    optional={"params": PARAMS},
)
RECORDS = st.fixed_dictionaries(
    {
        "dataframe_records": st.lists(
            st.fixed_dictionaries(dict.fromkeys(FEATURES, CELLS))
            | st.dictionaries(st.text(max_size=4), CELLS, max_size=2),
            min_size=1,
            max_size=3,
        )
    },
    optional={"params": PARAMS},
)
DEEP = st.integers(1, 60).map(lambda depth: "[" * depth + "]" * depth)
JSON_TEXT = (SPLIT | RECORDS).map(json.dumps).map(with_huge) | DEEP
CSV_TEXT = st.lists(
    st.lists(NUMBERS.map(repr) | st.sampled_from(["True", "", "x", '"a,b"']), min_size=2, max_size=2),
    min_size=1,
    max_size=3,
).map(lambda table: with_huge("\n".join(['"petal length (cm)","petal width (cm)"', *(",".join(row) for row in table)])))
PARQUET_BYTES = st.lists(st.lists(st.floats(-10, 10), min_size=2, max_size=2), min_size=1, max_size=3).map(
    lambda table: parquet(pd.DataFrame(table, columns=FEATURES))
)
BODIES = st.one_of(JSON_TEXT.map(str.encode), CSV_TEXT.map(str.encode), PARQUET_BYTES, st.binary(max_size=40))
# Mostly the types MLflow parses, mostly without parameters, so that many bodies reach it.
MIMES = st.sampled_from([JSON_TYPE, JSON_TYPE, CSV_TYPE, PARQUET_TYPE, "text/plain", "application/JSON", ""])
PARAMETERS = st.just([]) | st.lists(
    st.sampled_from(["charset=utf-8", "charset=UTF-8", "charset=latin-1", "Charset=utf-8", "version=2", ""]), max_size=3
)
CONTENT_TYPES = st.tuples(MIMES, PARAMETERS).map(lambda parts: "; ".join([parts[0], *parts[1]]) if parts[0] else "")


@settings(
    max_examples=250,
    deadline=None,
    derandomize=True,
    database=None,
    suppress_health_check=[HealthCheck.function_scoped_fixture, HealthCheck.too_slow, HealthCheck.data_too_large],
)
@given(content_type=CONTENT_TYPES, body=BODIES)
def test_any_content_type_and_body_is_answered_in_json_without_a_5xx(app, content_type, body):
    status, headers, answer = post(app, "/invocations", body, {"Content-Type": content_type})
    event(f"{content_type.split(';')[0] or 'no type'} -> {status}")
    assert status < 500, answer[:2000]
    assert headers["content-type"].startswith(JSON_TYPE)
    payload = json.loads(answer, parse_constant=lambda name: pytest.fail(f"{name} in {answer[:200]!r}"))
    if status >= 400:
        assert len(answer) <= MAX_ERROR_BYTES, answer[:2000]
        assert isinstance(payload["message"], str) and "stack_trace" not in payload
        assert "Traceback" not in payload["message"]
    else:
        assert "predictions" in payload
