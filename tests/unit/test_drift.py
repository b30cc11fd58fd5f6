"""Drift statistics on real shifts (core.reference, core.drift, core.batch_metrics): tables
scikit-learn and palmerpenguins ship, split by a real variable against a random split."""

from __future__ import annotations

import json

import numpy as np
import pandas as pd
import pytest
from sklearn import metrics
from sklearn.datasets import load_breast_cancer, load_wine

from core.batch_metrics import LabelledScores
from core.drift import compare, metric_names
from core.reference import BatchCounts, DriftInputError, load_reference, reference_json, reference_profile
from core.tabular import iter_chunks


@pytest.fixture
def settings(cfg):
    return cfg.drift


def penguins() -> pd.DataFrame:
    import palmerpenguins

    return palmerpenguins.load_penguins()


def check(reference_rows: pd.DataFrame, batch: pd.DataFrame, settings, chunk: int | None = None):
    reference = reference_profile(reference_rows)
    counts = BatchCounts(reference, "batch.csv")
    for start in range(0, len(batch), chunk or max(len(batch), 1)):
        counts.add(batch.iloc[start : start + (chunk or len(batch))])
    return compare(reference, counts, settings)


def random_halves(frame: pd.DataFrame, seed: int = 0):
    chosen = np.random.default_rng(seed).random(len(frame)) < 0.5
    return frame[~chosen], frame[chosen]


def test_the_reference_profile_is_small_readable_json_with_every_row_counted():
    frame = penguins().drop(columns=["species"])
    profile = load_reference(reference_json(reference_profile(frame, target="species")))
    assert len(reference_json(profile)) < 8_000
    assert profile["rows"] == len(frame) and profile["target"] == "species"
    kinds = {name: entry["kind"] for name, entry in profile["features"].items()}
    assert kinds == {
        "island": "category",
        "bill_length_mm": "number",
        "bill_depth_mm": "number",
        "flipper_length_mm": "number",
        "body_mass_g": "number",
        "sex": "category",
        "year": "number",
    }
    body = profile["features"]["body_mass_g"]
    assert body["edges"] == sorted(body["edges"]) and len(body["counts"]) == len(body["edges"]) + 1 <= 11
    assert sum(body["counts"]) + body["missing"] == len(frame) and body["missing"] == 2
    assert profile["features"]["island"]["counts"] == {"Biscoe": 168, "Dream": 124, "Torgersen": 52}
    assert profile["features"]["sex"]["missing"] == 11


@pytest.mark.parametrize(
    "frame, column",
    [(load_wine(as_frame=True).data, "alcohol"), (load_breast_cancer(as_frame=True).data, "mean radius")],
)
def test_a_split_by_a_real_variable_drifts_where_a_random_split_does_not(frame, column, settings):
    low = frame[column] <= frame[column].median()
    shifted = check(frame[low], frame[~low], settings)
    assert shifted.features[0].name == column and shifted.features[0].drifted
    assert shifted.features[0].value > 5 * settings.psi and shifted.features[0].p_value < 1e-6
    assert shifted.share >= settings.retrain.share

    reference, batch = random_halves(frame)
    unshifted = check(reference, batch, settings)
    assert unshifted.share < settings.retrain.share
    assert not next(f for f in unshifted.features if f.name == column).drifted
    # The PSI alone would flag a random half of a small table: the test keeps it quiet.
    small = check(*random_halves(load_wine(as_frame=True).data.head(80), seed=1), settings)
    assert small.drifted == [] and max(f.value for f in small.features) > settings.psi


def test_categories_drift_by_jensen_shannon_where_a_group_is_compared_with_another(settings):
    frame = penguins()
    adelie, gentoo = frame[frame.species == "Adelie"], frame[frame.species == "Gentoo"]
    shifted = check(adelie.drop(columns="species"), gentoo.drop(columns="species"), settings)
    island = next(f for f in shifted.features if f.name == "island")
    assert island.statistic == "jensen_shannon" and island.drifted and island.value > 0.5
    assert island.bins == ["Dream", "Torgersen", "Biscoe"] and island.batch == [0.0, 0.0, 1.0]
    sex = next(f for f in shifted.features if f.name == "sex")
    assert not sex.drifted  # both groups are about half female

    unshifted = check(*random_halves(frame.drop(columns="species"), seed=2), settings)
    assert not [f.name for f in unshifted.features if f.kind == "category" and f.drifted]


def test_a_category_the_reference_never_saw_is_named_and_counts_as_drift(settings):
    reference = pd.DataFrame({"colour": ["red", "blue"] * 100})
    batch = pd.DataFrame({"colour": ["red", "green"] * 100})
    (colour,) = check(reference, batch, settings).features
    assert colour.drifted and colour.bins == ["red", "blue", "(other)"]
    assert colour.batch == [0.5, 0.0, 0.5] and "'green' (100)" in colour.note


def test_gaps_are_a_bin_of_their_own(settings):
    reference = pd.DataFrame({"x": np.arange(200.0)})
    batch = pd.DataFrame({"x": np.where(np.arange(200) % 2 == 0, np.nan, np.arange(200.0))})
    (x,) = check(reference, batch, settings).features
    assert x.bins[-1] == "(missing)" and x.reference[-1] == 0.0 and x.batch[-1] == 0.5 and x.drifted


def test_the_statistic_grows_with_the_shift(settings):
    rng = np.random.default_rng(0)
    reference = pd.DataFrame({"x": rng.normal(size=2000)})
    values = [
        check(reference, pd.DataFrame({"x": rng.normal(loc=shift, size=2000)}), settings).features[0].value
        for shift in (0.0, 0.25, 0.5, 1.0, 2.0)
    ]
    assert values == sorted(values) and values[0] < 0.05 < settings.psi < values[-1]


def test_counts_taken_chunk_by_chunk_equal_those_of_the_whole(tmp_path, settings):
    frame = penguins()
    reference, batch = frame[frame.year == 2007], frame[frame.year != 2007]
    whole = check(reference, batch, settings)
    chunked = check(reference, batch, settings, chunk=7)
    assert whole == chunked

    path = tmp_path / "batch.csv"
    batch.to_csv(path, index=False)
    profile = reference_profile(reference.drop(columns="year"))
    results = []
    for size in (10, 10_000):
        counts = BatchCounts(profile, str(path))
        for chunk in iter_chunks(path, size, text_columns=["island", "sex", "species"]):
            counts.add(chunk)
        results.append(compare(profile, counts, settings))
    assert results[0] == results[1] and results[0].rows == len(batch)


def test_a_batch_that_cannot_be_compared_is_refused_naming_the_column_and_row():
    profile = reference_profile(pd.DataFrame({"mass": [1.0, 2.0, 3.0], "island": ["a", "b", "a"]}))
    with pytest.raises(DriftInputError, match=r"batch.csv: missing feature column\(s\) \['island'\]"):
        BatchCounts(profile, "batch.csv").add(pd.DataFrame({"mass": [1.0]}))
    with pytest.raises(DriftInputError, match=r"batch.csv: row 11, column 'mass': 'heavy' is not a number"):
        BatchCounts(profile, "batch.csv").add(pd.DataFrame({"mass": ["1.5", "heavy"], "island": "a"}, index=[10, 11]))
    with pytest.raises(DriftInputError, match="not a reference profile"):
        load_reference(json.dumps({"format": 99}))


def test_labelled_scores_counted_by_chunk_equal_scikit_learns():
    rng = np.random.default_rng(0)
    labels = rng.integers(0, 4, 300).astype(object)  # 3 is a label the model does not know
    labels[[5, 50]] = None  # unlabelled rows are skipped
    predicted, proba = rng.integers(0, 3, 300), rng.dirichlet([1, 1, 1], 300)
    scores = LabelledScores([0, 1, 2])
    for start in range(0, 300, 41):
        part = slice(start, start + 41)
        scores.add(pd.Series(labels[part]).map(lambda v: v if v is None else float(v)), predicted[part], proba[part])
    found = scores.metrics()
    present = pd.notna(labels)
    truth, guess = labels[present].astype(str), predicted[present].astype(str)
    assert scores.rows == 298
    assert found["accuracy"] == pytest.approx(metrics.accuracy_score(truth, guess), abs=1e-12)
    assert found["f1_macro"] == pytest.approx(metrics.f1_score(truth, guess, average="macro"), abs=1e-12)
    known = present & (labels != 3)
    expected = metrics.log_loss(labels[known].astype(int), proba[known], labels=[0, 1, 2])
    assert found["log_loss"] == pytest.approx(expected, abs=1e-12)


def test_metrics_say_drift_larger_is_more_and_take_names_mlflow_accepts(settings):
    from mlflow.utils.validation import _validate_metric_name

    assert metric_names(["petal length (cm)", "a/b", "a_b"]) == {
        "petal length (cm)": "petal length _cm_",
        "a/b": "a_b",
        "a_b": "a_b_2",
    }
    frame = load_wine(as_frame=True).data.rename(columns={"alcohol": "alcohol (% vol)"})
    low = frame["alcohol (% vol)"] <= frame["alcohol (% vol)"].median()
    shifted, unshifted = check(frame[low], frame[~low], settings), check(*random_halves(frame), settings)
    for name in shifted.metrics():
        _validate_metric_name(name)
    assert shifted.metrics()["drift.share"] > unshifted.metrics()["drift.share"]
    key = "drift.psi.alcohol __ vol_"
    assert shifted.metrics()[key] > unshifted.metrics()[key]
    assert all("drift" in name for name in shifted.metrics() if name != "batch.rows")


def test_kept_columns_of_a_parquet_file_with_a_saved_index_stay_with_their_rows(tmp_path):
    """pandas saves a frame's index in the Parquet file; a kept column read on its own has none,
    and was matched to the other columns by index label (rows of a sample lost their label)."""
    frame = pd.DataFrame({"x": np.arange(10.0), "label": list("abcdefghij")}).sample(10, random_state=0)
    path = tmp_path / "sample.parquet"
    frame.to_parquet(path)
    (chunk,) = iter_chunks(path, 100, kept_columns=["label"])
    assert list(chunk["label"]) == list(frame["label"]) and list(chunk["x"]) == list(frame["x"])
    assert isinstance(chunk["label"].dtype, pd.ArrowDtype)  # the file's own type, as before


def test_the_retrain_decision_names_its_numbers_and_bounds(settings):
    from core.drift import DriftResult
    from core.drift_trigger import retrain_decision

    frame = load_wine(as_frame=True).data
    low = frame["alcohol"] <= frame["alcohol"].median()
    shifted = check(frame[low], frame[~low], settings)
    go, line = retrain_decision(shifted, settings.retrain, ["accuracy"])
    assert go and line.startswith("retraining: batch.csv against ") and "(share 0.62 ≥ drift.retrain.share 0.3)" in line
    steady = DriftResult("b.csv", 100, 100, [], "m v1", 100, {"accuracy": 0.9}, {"accuracy": 0.93}, {"accuracy": True})
    go, line = retrain_decision(steady, settings.retrain, ["accuracy", "log_loss"])
    assert (
        not go
        and "accuracy 0.900 on 100 labelled rows, 0.930 on the holdout (drop 0.030 ≤ drift.retrain.max_drop 0.05)"
        in line
    )
    steady.batch_metrics["accuracy"] = 0.8
    go, line = retrain_decision(steady, settings.retrain, ["accuracy"])
    assert go and "(drop 0.130 > drift.retrain.max_drop 0.05)" in line
    go, line = retrain_decision(steady, settings.retrain, ["log_loss"])  # not computed on this batch
    assert not go and "no gated metric (log_loss) can be compared on the labelled rows" in line


def test_infinite_values_fall_in_the_outer_bins_and_the_profile_stays_json():
    frame = pd.DataFrame({"x": [1.0, 2.0, 3.0, np.inf, -np.inf, np.nan]})
    profile = load_reference(reference_json(reference_profile(frame)))
    x = profile["features"]["x"]
    assert (x["min"], x["max"], x["missing"]) == (1.0, 3.0, 1)
    assert x["counts"][0] == 2 and x["counts"][-1] == 2 and sum(x["counts"]) == 5  # -inf, 1 | 3, inf
