"""The column profile (what each column is, and whether it is a feature), text dates, the
conversion of dates to days, and the gap probe on tables without a complete row."""

from __future__ import annotations

import numpy as np
import pandas as pd
import pytest
import yaml
from sklearn.ensemble import HistGradientBoostingClassifier
from sklearn.impute import SimpleImputer
from sklearn.linear_model import LogisticRegression
from sklearn.pipeline import make_pipeline

from core import data, profile
from core.config import compose_config
from core.features import as_sent, column_type, nullable_columns, plain_categories, template_row


def table(rows=40) -> pd.DataFrame:
    rng = np.random.default_rng(0)
    return pd.DataFrame(
        {
            "rownames": [f"name {i}" for i in range(rows)],
            "id": rng.permutation(rows) + 1000,
            "size": rng.normal(size=rows),
            "colour": rng.choice(["red", "blue"], rows),
            "kind": pd.Categorical(rng.choice(["a", "b"], rows)),
            "flag": rng.integers(0, 2, rows).astype(bool),
            "day": [f"2012-01-{1 + i % 28:02d}" for i in range(rows)],
            "empty": np.nan,
            "target": ["x", "y"] * (rows // 2),
        }
    )


def test_each_column_gets_a_kind_and_a_use():
    found = {c.name: (c.kind, c.use) for c in profile.profile_frame(table(), "target", None)}
    assert found == {
        "rownames": ("identifier", "left out"),
        "id": ("identifier", "left out"),
        "size": ("number", "feature"),
        "colour": ("text", "feature"),
        "kind": ("category", "feature"),
        "flag": ("boolean", "feature"),
        "day": ("date", "feature"),
        "empty": ("empty", "left out"),
        "target": ("target", "target"),
    }


def test_a_short_table_has_no_identifiers_and_floats_never_are():
    found = {c.name: c.kind for c in profile.profile_frame(table(rows=10), "target", None)}
    assert found["rownames"] == "text" and found["id"] == "number" and found["size"] == "number"


def test_config_lists_override_what_a_column_looks_like():
    columns = profile.profile_frame(table(), "target", ["rownames", "size"], drop=["colour"])
    uses = {c.name: (c.use, c.reason) for c in columns}
    assert uses["rownames"] == ("feature", "listed in data.features")
    assert uses["colour"] == ("left out", "listed in data.drop")
    assert uses["flag"] == ("left out", "not listed in data.features")
    assert profile.left_out_lines(columns) == []  # config decisions are no warnings


def test_left_out_columns_are_one_line_each_and_the_profile_is_yaml():
    columns = profile.profile_frame(table(), "target", None)
    assert profile.left_out_lines(columns) == [
        "column 'rownames' left out: identifier (text distinct in 40 of 40 rows); list it in data.features to keep it",
        "column 'id' left out: identifier (integers distinct in 40 of 40 rows); list it in data.features to keep it",
        "column 'empty' left out: empty (no value in any row); list it in data.features to keep it",
    ]
    written = yaml.safe_load(profile.profile_yaml(columns, "t.csv", 40))
    assert written["rows"] == 40 and written["columns"]["empty"]["missing"] == 40
    assert written["columns"]["kind"] == {
        "kind": "category",
        "use": "feature",
        "reason": "category",
        "dtype": "category",
        "missing": 0,
        "distinct": 2,
    }


@pytest.mark.parametrize(
    "values, expected",
    [
        (["2012-01-01", None, "2013-12-31"], True),
        (["2012-01-01T10:30:00Z", "2012-01-01 10:30"], True),
        (pd.date_range("2020-01-01", periods=3), True),
        (["2012-01-01", "soon"], False),
        (["2012-13-45"], False),
        (["20120101"], False),
        ([1, 2, 3], False),
    ],
)
def test_dates_as_text_are_dates(values, expected):
    assert profile.is_date(pd.Series(values)) is expected


def test_dates_become_days_since_1970():
    days = profile.as_days(pd.Series(["1970-01-02", "1970-01-03T12:00:00", None]))
    assert days.tolist()[:2] == [1.0, 2.5] and np.isnan(days.iloc[2])
    assert profile.as_days(pd.Series(pd.to_datetime(["1970-01-11"]))).tolist() == [10.0]


def test_text_dates_are_refused_like_datetimes_unless_data_dates_is_days(tmp_path):
    frame = table().drop(columns=["rownames", "id", "empty"])
    for name, values in (("text.csv", frame), ("typed.parquet", frame.assign(day=pd.to_datetime(frame["day"])))):
        path = tmp_path / name
        values.to_csv(path, index=False) if path.suffix == ".csv" else values.to_parquet(path)
        with pytest.raises(data.DataError, match=r"\['day'\] hold dates or times \(e.g. .*2012-01-01.* in row 0\)"):
            data.prepare_data(compose_config(["data=file", f"data.path={path}"]).data)
        train, _, features, _ = data.prepare(compose_config(["data=file", f"data.path={path}", "data.dates=days"]).data)
        assert "day" in features and train["day"].dtype == np.float64


def test_data_drop_must_name_columns(tmp_path):
    path = tmp_path / "t.csv"
    table().to_csv(path, index=False)
    with pytest.raises(data.DataError, match=r"data.drop names \['nope'\], not a column"):
        data.prepare_data(compose_config(["data=file", f"data.path={path}", "data.drop=[nope]"]).data)


def test_non_text_categories_become_their_values_and_text_ones_are_sent_as_text():
    frame = pd.DataFrame({"n": pd.Categorical([1, 2, None]), "t": pd.Categorical(["a", None, "b"])})
    plain = plain_categories(frame)
    assert [column_type(plain[c]) for c in plain] == ["double", "string"]
    assert plain["t"].dtype == "category"
    sent = as_sent(plain)
    assert sent["t"].dtype == object and sent["t"].tolist()[0] == "a" and np.isnan(sent["t"].iloc[1])


def gappy(rows=60) -> tuple[pd.DataFrame, np.ndarray]:
    """Numbers and text with a gap in every row."""
    rng = np.random.default_rng(1)
    frame = pd.DataFrame(
        {"a": rng.normal(size=rows), "b": rng.normal(size=rows), "c": rng.choice(["p", "q"], rows).astype(object)}
    )
    for position in range(rows):
        frame.iloc[position, position % 3] = np.nan
    return frame, np.array(["x", "y"] * (rows // 2))


def test_the_gap_probe_needs_no_complete_row():
    frame, labels = gappy()
    assert frame.isna().any(axis=1).all()
    row = template_row(frame, 0)
    assert not row.isna().any(axis=None) and row.index.tolist() == [0]
    numbers = frame[["a", "b"]]
    imputing = make_pipeline(SimpleImputer(), LogisticRegression()).fit(numbers, labels)
    assert nullable_columns(imputing, numbers) == ["a", "b"]
    trees = HistGradientBoostingClassifier(max_iter=5).fit(numbers, labels)
    assert nullable_columns(trees, numbers) == ["a", "b"]
    plain = LogisticRegression().fit(numbers.fillna(0), labels)
    assert nullable_columns(plain, numbers) == []


def test_an_empty_column_keeps_its_gap_in_the_template():
    frame, _ = gappy()
    frame["none"] = np.nan
    assert template_row(frame, 3)["none"].isna().all()
