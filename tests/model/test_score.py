"""Batch scoring: chunked, ordered, labelled, and all-or-nothing."""

from __future__ import annotations

import copy
import os
import shutil
import signal
import stat
import subprocess
import sys
import time

import mlflow
import numpy as np
import pandas as pd
import pyarrow as pa
import pyarrow.parquet as pq
import pytest
from sklearn.ensemble import RandomForestClassifier
from sklearn.linear_model import LogisticRegression

from core import contracts
from core.config import compose_config
from core.tabular import AtomicWriter, TableError
from serving import batch as score
from tests.support.factories import FEATURES, package, package_once, rows, use_copy, venv_env


@pytest.fixture(scope="module")
def scoring_template(tmp_path_factory, empty_store):
    """The dispatch model of a logistic regression in a store of its own, made once for the
    module: (the store, the loaded model, the fitted estimator, the model's URI). Tests score
    with the loaded model (:func:`model_and_estimator`) or use the URI in a copy of the
    store (:func:`model_uri`)."""
    store, info, estimator, _ = package_once(
        LogisticRegression(max_iter=5000), tmp_path_factory.mktemp("scoring"), empty_store, compose_config([])
    )
    client = mlflow.MlflowClient(tracking_uri=f"sqlite:///{store / 'mlflow.db'}")
    model = mlflow.pyfunc.load_model(client.get_logged_model(info.model_id).artifact_location)
    return store, model, estimator, info.model_uri


@pytest.fixture
def model_and_estimator(scoring_template):
    _, model, estimator, _ = scoring_template
    return model, copy.deepcopy(estimator)  # the loaded model is only called


@pytest.fixture
def model_uri(scoring_template, tmp_path, monkeypatch) -> str:
    """The module's model, in a copy of its store: this test's store."""
    store, _, _, uri = scoring_template
    use_copy(store, tmp_path, monkeypatch)
    return uri


@pytest.mark.parametrize("suffix", [".csv", ".parquet"])
@pytest.mark.parametrize("method", ["predict", "predict_proba", "predict_log_proba"])
def test_output_matches_the_estimator_in_input_order(model_and_estimator, tmp_path, suffix, method):
    model, estimator = model_and_estimator
    frame = rows(1003)
    source = tmp_path / f"in{suffix}"
    frame.to_csv(source, index=False) if suffix == ".csv" else frame.to_parquet(source)
    out = tmp_path / f"out{suffix}"
    assert score.score_file(model, source, out, method, chunk_size=100) == 1003
    result = pd.read_csv(out) if suffix == ".csv" else pd.read_parquet(out)
    assert result["id"].tolist() == frame["id"].tolist()
    assert result["note"].tolist() == frame["note"].tolist()
    expected = getattr(estimator, method)(frame[FEATURES])
    if method == "predict":
        np.testing.assert_array_equal(result["prediction"], expected)
    else:
        prefix = score.COLUMN_PREFIX[method]
        columns = [f"{prefix}{label}" for label in estimator.classes_]
        assert [c for c in result.columns if c.startswith(prefix)] == columns
        np.testing.assert_allclose(result[columns].to_numpy(), expected, rtol=0, atol=1e-12)


@pytest.mark.parametrize("suffix", [".csv", ".parquet"])
def test_id_columns_can_be_chosen(model_and_estimator, tmp_path, suffix):
    model, _ = model_and_estimator
    source = tmp_path / "in.csv"
    rows(10).to_csv(source, index=False)
    out = tmp_path / f"out{suffix}"
    score.score_file(model, source, out, "predict", id_columns=["id", "note", "id"])  # one named twice
    header = out.read_text().splitlines()[0].split(",") if suffix == ".csv" else pq.read_schema(out).names
    assert header == ["id", "note", "prediction"]


@pytest.mark.parametrize(
    ("mutate", "message"),
    [
        (lambda f: f.drop(columns=["petal width (cm)"]), "missing feature column(s) ['petal width (cm)']"),
        (
            lambda f: f.astype({"petal length (cm)": object}).assign(
                **{"petal length (cm)": lambda d: d["petal length (cm)"].where(d.index != 257, "long")}
            ),
            "row 257, column 'petal length (cm)': 'long' is not a number",
        ),
        (
            lambda f: f.assign(**{"petal width (cm)": lambda d: d["petal width (cm)"].where(d.index != 333)}),
            "row 333 has a missing value in column 'petal width (cm)'; LogisticRegression does not accept one there",
        ),
    ],
)
def test_bad_rows_fail_naming_row_and_column_and_leave_no_output(model_and_estimator, tmp_path, mutate, message):
    model, _ = model_and_estimator
    source = tmp_path / "in.csv"
    mutate(rows(400)).to_csv(source, index=False)
    out = tmp_path / "out.csv"
    with pytest.raises(Exception) as err:
        score.score_file(model, source, out, "predict", chunk_size=100)
    assert message in str(getattr(err.value, "message", err.value))
    assert not out.exists()
    assert list(tmp_path.glob(".out.csv*")) == []


def test_missing_input_and_unsupported_extension(model_and_estimator, tmp_path):
    model, _ = model_and_estimator
    with pytest.raises(TableError, match="does not exist"):
        score.score_file(model, tmp_path / "absent.csv", tmp_path / "o.csv")
    (tmp_path / "in.txt").write_text("a\n1\n")
    with pytest.raises(TableError, match="unsupported extension '.txt'"):
        score.score_file(model, tmp_path / "in.txt", tmp_path / "o.csv")


def test_cli_exit_code_and_message(model_uri, tmp_path, capsys):
    source = tmp_path / "in.csv"
    rows(5).drop(columns=["petal width (cm)"]).to_csv(source, index=False)
    with pytest.raises(SystemExit) as exit_info:
        score.main(["--input", str(source), "--output", str(tmp_path / "o.csv"), "--model-uri", model_uri])
    assert exit_info.value.code == 1
    assert "missing feature column(s) ['petal width (cm)']" in capsys.readouterr().err
    assert not (tmp_path / "o.csv").exists()


def test_method_the_model_does_not_offer_is_refused_before_reading(tmp_path, cfg):
    from sklearn.svm import SVC

    info, _, _ = package(SVC(random_state=0), tmp_path, cfg)
    model = mlflow.pyfunc.load_model(info.model_uri)
    rows(10).to_csv(tmp_path / "in.csv", index=False)
    with pytest.raises(score.ScoringError, match="'predict_proba' is not offered by this model .SVC offers predict."):
        score.score_file(model, tmp_path / "in.csv", tmp_path / "out.csv", "predict_proba")
    assert not (tmp_path / "out.csv").exists()
    assert score.score_file(model, tmp_path / "in.csv", tmp_path / "out.csv", "predict") == 10


@pytest.fixture
def tabular_model(tmp_path):
    """A tabular pipeline on text codes with leading zeros, booleans and numbers with gaps."""
    from hydra.utils import instantiate

    from core.config import compose_config
    from steps import package_pyfunc, serialize, train

    frame = pd.DataFrame(
        {
            "code": ["01", "02", "10", None] * 10,
            "flag": [True, False] * 20,
            "size": [1.0, np.nan, 3.0, 4.5] * 10,
            "label": ["a", "b", "b", "a"] * 10,
        }
    )
    features = ["code", "flag", "size"]
    estimator = train.fit_estimator(
        instantiate(compose_config(["model=tabular_logistic_regression"]).model), frame, features, "label"
    )
    path = tmp_path / "estimator.joblib"
    digest = serialize.serialize_estimator(estimator, path)
    with mlflow.start_run():
        info = package_pyfunc.log_dispatch_model(str(path), digest, estimator, frame[features])
    return mlflow.pyfunc.load_model(info.model_uri), estimator


def test_text_and_boolean_columns_keep_their_type_in_every_chunk(tabular_model, tmp_path):
    model, estimator = tabular_model
    rows_ = pd.DataFrame(
        {
            "code": ["01", None, None, "10", "02"],
            "flag": [True, False, True, None, False],
            "size": [1.0, 2.0, np.nan, 4.0, 5.0],
        }
    )
    source, out = tmp_path / "in.csv", tmp_path / "out.csv"
    rows_.to_csv(source, index=False)  # rows 1-2: a chunk whose text column is empty
    score.score_file(model, source, out, "predict_proba", chunk_size=2)
    # A gap is NaN to the estimator, whatever the column's type (None would be a category).
    expected = estimator.predict_proba(rows_.astype({"flag": object}).where(rows_.notna(), np.nan))
    np.testing.assert_allclose(pd.read_csv(out).to_numpy(), expected, atol=1e-9)
    assert pd.read_csv(source, dtype={"code": "str"})["code"].iloc[0] == "01"  # not the number 1


def test_a_value_that_is_not_true_or_false_is_named(tabular_model, tmp_path):
    model, _ = tabular_model
    source = tmp_path / "in.csv"
    pd.DataFrame({"code": ["01", "02"], "flag": ["true", "maybe"], "size": [1.0, 2.0]}).to_csv(source, index=False)
    with pytest.raises(score.ScoringError, match=r"row 1, column 'flag': 'maybe' is not true or false"):
        score.score_file(model, source, tmp_path / "out.csv", "predict")
    assert not (tmp_path / "out.csv").exists()


# Refusals through the command line: exit 1, one line on stderr, nothing half-written.


def refused(argv: list[str], capsys) -> str:
    """The single stderr line of ``score.main(argv)``, asserting that it exits 1 with it
    (an exception escaping instead would be a traceback for the user)."""
    with pytest.raises(SystemExit) as exit_info:
        score.main([*argv, "--no-progress"])
    assert exit_info.value.code == 1
    lines = capsys.readouterr().err.splitlines()
    assert len(lines) == 1 and lines[0].startswith("score: error: "), lines
    return lines[0]


def assert_nothing_written(folder, output, before: bytes | None = None) -> None:
    """No temporary file or folder left under ``folder``; ``output`` absent, or still holding ``before``."""
    assert list(folder.rglob("*.partial")) == []
    assert list(output.parent.glob(f".{output.name}*")) == []
    if before is None:
        assert not output.exists()
    else:
        assert output.read_bytes() == before


@pytest.fixture
def scoring_files(tmp_path):
    """An input CSV of 40 rows and an existing output file that a refused run must not touch."""
    source, out = tmp_path / "in.csv", tmp_path / "out.csv"
    rows(40).to_csv(source, index=False)
    out.write_text("an earlier result\n")
    return source, out


@pytest.mark.parametrize("where", ["a directory", "under a file"])
def test_an_output_path_that_cannot_be_a_file_is_refused(model_uri, scoring_files, tmp_path, capsys, where):
    source, _ = scoring_files
    if where == "a directory":
        output = tmp_path / "scored.csv"
        output.mkdir()
        expected = f"Output file {output} is a directory"
    else:
        (tmp_path / "plain").write_text("a file\n")
        output = tmp_path / "plain" / "scored.csv"
        expected = f"Output file {output}: its directory cannot be made"
    line = refused(["--input", str(source), "--output", str(output), "--model-uri", model_uri], capsys)
    assert expected in line
    assert list(tmp_path.rglob("*.partial")) == []
    if where == "a directory":
        assert list(output.iterdir()) == []
    else:
        assert (tmp_path / "plain").read_text() == "a file\n"


@pytest.mark.parametrize("size", [0, -5])
def test_a_chunk_size_below_one_is_refused(model_uri, scoring_files, tmp_path, capsys, size):
    source, out = scoring_files
    line = refused(
        ["--input", str(source), "--output", str(out), "--model-uri", model_uri, "--chunk-size", str(size)], capsys
    )
    assert f"--chunk-size must be at least 1 row, got {size}" in line
    assert_nothing_written(tmp_path, out, b"an earlier result\n")


@pytest.fixture
def forest_uri(tmp_path, cfg):
    """A random forest: scikit-learn's trees take float32, so a float64 above ~3.4e38 is refused."""
    info, _, _ = package(RandomForestClassifier(n_estimators=5, random_state=0), tmp_path, cfg)
    return info.model_uri


def test_a_value_the_forest_refuses_is_named_by_file_and_row(forest_uri, scoring_files, tmp_path, capsys):
    source, out = scoring_files
    frame = rows(60)
    frame.loc[37, FEATURES[0]] = 1e39
    frame.to_csv(source, index=False)
    line = refused(
        ["--input", str(source), "--output", str(out), "--model-uri", forest_uri, "--chunk-size", "25"], capsys
    )
    assert f"{source}: " in line and "row 37" in line
    assert_nothing_written(tmp_path, out, b"an earlier result\n")


@pytest.mark.parametrize(
    ("where", "line_number"),
    [("header", 1), ("body", 23)],  # the header is line 1, row 0 line 2
)
def test_a_csv_that_is_not_utf8_is_refused_naming_the_line(
    model_uri, scoring_files, tmp_path, capsys, where, line_number
):
    source, out = scoring_files
    frame = rows(40)
    if where == "header":
        frame = frame.rename(columns={"note": "remarqu\u00e9e"})
    else:
        frame.loc[21, "note"] = "caf\u00e9"
    source.write_bytes(frame.to_csv(index=False).encode("latin-1"))
    line = refused(
        ["--input", str(source), "--output", str(out), "--model-uri", model_uri, "--chunk-size", "10"], capsys
    )  # the body's error comes after two chunks were written
    assert f"Input file {source} is not UTF-8 text: line {line_number} has the byte 0xe9" in line
    assert_nothing_written(tmp_path, out, b"an earlier result\n")


@pytest.mark.parametrize(
    ("column", "method"),
    [("prediction", "predict"), ("proba_0", "predict_proba"), ("log_proba_2", "predict_log_proba")],
)
def test_an_input_column_named_like_an_output_column_is_refused(
    model_uri, scoring_files, tmp_path, capsys, column, method
):
    source, out = scoring_files
    rows(40).assign(**{column: 1.0}).to_csv(source, index=False)
    argv = ["--input", str(source), "--output", str(out), "--model-uri", model_uri, "--predict-method", method]
    line = refused(argv, capsys)
    assert f"input column {column!r} would be copied beside the output column of that name" in line
    assert_nothing_written(tmp_path, out, b"an earlier result\n")
    score.main([*argv, "--id-columns", "id", "--no-progress"])  # leaving it out of the copied columns
    result = pd.read_csv(out)
    assert result.columns.tolist()[0] == "id" and result.columns.tolist().count(column) == 1


def test_a_parquet_file_with_a_repeated_column_name_is_refused(model_uri, scoring_files, tmp_path, capsys):
    _, out = scoring_files
    frame = rows(5)
    source = tmp_path / "in.parquet"
    pq.write_table(
        pa.Table.from_arrays([pa.array(frame[c]) for c in [*FEATURES, "id", "id"]], names=[*FEATURES, "id", "id"]),
        source,
    )
    line = refused(["--input", str(source), "--output", str(out), "--model-uri", model_uri], capsys)
    assert f"{source}: column(s) ['id'] appear more than once" in line
    assert_nothing_written(tmp_path, out, b"an earlier result\n")


# Pass-through (id) columns are copied as the input holds them, whatever each chunk looks like.


@pytest.mark.parametrize("suffix", [".parquet", ".csv"])
def test_id_columns_from_a_csv_are_copied_as_its_text(model_and_estimator, tmp_path, suffix):
    model, _ = model_and_estimator
    frame = rows(30)
    ids = ["007"] + [str(i) for i in range(1, 10)] + [f"a{i}" for i in range(10, 30)]  # numbers, then text
    frame["id"] = ids
    source, out = tmp_path / "in.csv", tmp_path / f"out{suffix}"
    frame.to_csv(source, index=False)
    assert score.score_file(model, source, out, "predict", chunk_size=10) == 30
    if suffix == ".parquet":
        assert pq.read_table(out).column("id").to_pylist() == ids
    else:
        assert pd.read_csv(out, dtype={"id": str})["id"].tolist() == ids


@pytest.mark.parametrize("suffix", [".parquet", ".csv"])
def test_id_columns_from_parquet_keep_their_type_in_every_chunk(model_and_estimator, tmp_path, suffix):
    """Integers with a gap in one chunk only, and a text column that is empty in the first
    chunk, in a file without pandas' metadata (as Spark and most tools write it)."""
    model, _ = model_and_estimator
    frame = rows(30)
    frame["id"] = pd.array([None if i == 15 else i for i in range(30)], dtype="Int64")
    frame["note"] = pd.array([None] * 10 + [f"r{i}" for i in range(10, 30)], dtype="string")
    source, out = tmp_path / "in.parquet", tmp_path / f"out{suffix}"
    pq.write_table(pa.Table.from_pandas(frame, preserve_index=False).replace_schema_metadata(None), source)
    score.score_file(model, source, out, "predict", chunk_size=10)
    if suffix == ".parquet":
        table = pq.read_table(out)
        assert table.schema.field("id").type == pa.int64()
        assert table.column("id").to_pylist() == [None if i == 15 else i for i in range(30)]
        assert table.column("note").to_pylist() == [None] * 10 + [f"r{i}" for i in range(10, 30)]
    else:
        written = pd.read_csv(out, dtype=str, keep_default_na=False)
        assert written["id"].tolist() == ["" if i == 15 else str(i) for i in range(30)]  # never "16.0"


def test_a_parquet_writer_refuses_a_chunk_of_another_type_naming_row_and_column(tmp_path):
    out = tmp_path / "out.parquet"
    out.write_bytes(b"an earlier result")
    with pytest.raises(TableError) as err, AtomicWriter(out) as writer:
        writer.write(pd.DataFrame({"id": [1, 2], "label": ["a", "b"]}))
        writer.write(pd.DataFrame({"id": [3, "x"], "label": ["c", "d"]}))
    assert str(err.value).startswith(f"Output file {out}: row 3, column 'id': 'x' is not int64")
    assert_nothing_written(tmp_path, out, b"an earlier result")


def test_the_command_prints_no_traceback(model_uri, scoring_files, tmp_path):
    """The real process: what a user or a scheduler sees is the one line and exit 1."""
    source, out = scoring_files
    source.write_bytes(b"petal length (cm),petal width (cm)\n1.0,caf\xe9\n")
    result = subprocess.run(
        [sys.executable, "-m", "serving.batch", "--input", str(source), "--output", str(out), "--model-uri", model_uri],
        cwd=contracts.PROJECT_DIR,
        env=venv_env(),
        capture_output=True,
        text=True,
        timeout=300,
    )
    assert result.returncode == 1
    assert "Traceback" not in result.stderr
    assert result.stderr.splitlines() == [
        f"score: error: Input file {source} is not UTF-8 text: line 2 has the byte 0xe9 (byte 42 of the file); "
        "save it as UTF-8"
    ]


def test_a_parquet_output_records_the_version_that_scored_it(model_uri, tmp_path, capsys):
    version = mlflow.register_model(model_uri, "scored-by").version
    mlflow.MlflowClient().set_registered_model_alias("scored-by", "champion", version)
    source = tmp_path / "in.csv"
    rows(20).to_csv(source, index=False)
    for suffix in (".parquet", ".csv"):
        out = tmp_path / f"out{suffix}"
        score.main(
            [
                "--input",
                str(source),
                "--output",
                str(out),
                "--model-uri",
                "models:/scored-by@champion",
                "--predict-method",
                "predict",
                "--no-progress",
            ]
        )
        printed = capsys.readouterr().out
        assert f"rows scored with predict by models:/scored-by@champion (version {version})" in printed
    metadata = {k.decode(): v.decode() for k, v in pq.read_schema(tmp_path / "out.parquet").metadata.items()}
    assert metadata == {
        contracts.SCORED_BY_URI_KEY: f"models:/scored-by/{version}",
        contracts.SCORED_BY_ID_KEY: model_uri.removeprefix("models:/"),
        contracts.SCORED_BY_NAME_KEY: "scored-by",
        contracts.SCORED_BY_VERSION_KEY: str(version),
    }
    assert pd.read_csv(tmp_path / "out.csv").columns.tolist() == ["id", "note", "prediction"]  # CSV: no room


# The temporary output: created exclusively, never written through a planted link, removed
# on SIGTERM and Ctrl-C; an output folder that cannot be written is one line.

PREDICTABLE = (".{name}.partial", "{name}.partial", ".{name}.tmp", "{name}.tmp", "{name}~", ".{name}")


@pytest.mark.parametrize("suffix", [".csv", ".parquet"])
def test_a_link_planted_at_a_predictable_name_is_not_followed(model_and_estimator, tmp_path, suffix):
    model, estimator = model_and_estimator
    folder = tmp_path / "scored"
    folder.mkdir()
    source, out, victim = tmp_path / "in.csv", folder / f"out{suffix}", tmp_path / "victim.txt"
    rows(30).to_csv(source, index=False)
    victim.write_text("the scorer can write this file\n")
    links = [folder / pattern.format(name=out.name) for pattern in PREDICTABLE]
    for link in links:
        link.symlink_to(victim)
    assert score.score_file(model, source, out, "predict", chunk_size=7) == 30
    assert victim.read_text() == "the scorer can write this file\n"
    assert all(link.is_symlink() and link.resolve() == victim for link in links)  # left as they were
    result = pd.read_csv(out) if suffix == ".csv" else pd.read_parquet(out)
    np.testing.assert_array_equal(result["prediction"], estimator.predict(rows(30)[FEATURES]))
    assert sorted(path.name for path in folder.iterdir()) == sorted([out.name, *(link.name for link in links)])


def score_command(source, out, model_uri: str, *extra: str) -> list[str]:
    return [
        sys.executable,
        "-m",
        "serving.batch",
        "--input",
        str(source),
        "--output",
        str(out),
        "--model-uri",
        model_uri,
        "--no-progress",
        *extra,
    ]


@pytest.mark.parametrize(("sent", "code"), [(signal.SIGTERM, 143), (signal.SIGINT, 130)])
def test_a_signal_while_scoring_leaves_no_temporary_file(model_uri, tmp_path, sent, code):
    """The real process, stopped once it has written its first chunk (4,000 chunks of 5 rows
    remain: it is still scoring whenever the signal arrives)."""
    folder = tmp_path / "scored"
    folder.mkdir()
    source, out = tmp_path / "in.csv", folder / "out.csv"
    rows(20_000).to_csv(source, index=False)
    process = subprocess.Popen(
        score_command(source, out, model_uri, "--chunk-size", "5"),
        cwd=contracts.PROJECT_DIR,
        env=venv_env(),
        stdout=subprocess.PIPE,
        stderr=subprocess.PIPE,
        text=True,
    )
    try:
        deadline = time.monotonic() + 240  # generous: a busy machine loads MLflow and the model slowly
        while not list(folder.glob(".out.csv.*/.out.csv.partial")) and process.poll() is None:
            assert time.monotonic() < deadline, "no temporary output appeared"
            time.sleep(0.05)
        (partial,) = folder.glob(".out.csv.*/.out.csv.partial")
        assert stat.S_IMODE(partial.parent.stat().st_mode) == 0o700  # a folder only the scorer can enter
        process.send_signal(sent)
        _, stderr = process.communicate(timeout=240)
    finally:
        if process.poll() is None:
            process.kill()
            process.wait()
    assert process.returncode == code, stderr[-2000:]
    assert stderr.splitlines() == [f"score: stopped by {sent.name}; no partial output left"]
    assert list(folder.iterdir()) == []


def read_only_mount(folder) -> list[str] | None:
    """A command prefix running a command with a read-only file system mounted on ``folder``
    (a private mount namespace: ``unshare -m``, as root on Linux), or None where that is not
    possible here."""
    if sys.platform != "linux" or os.geteuid() != 0 or not shutil.which("unshare"):
        return None
    prefix = ["unshare", "-m", "sh", "-c", f'mount -t tmpfs -o ro tmpfs "{folder}" && exec "$@"', "sh"]
    probe = subprocess.run(
        [*prefix, "sh", "-c", f'! touch "{folder}/probe" 2>/dev/null'], check=False, capture_output=True
    )
    return prefix if probe.returncode == 0 else None


def without_write_permission(folder) -> list[str] | None:
    """A command prefix running a command that ``folder`` (now mode 0555) denies writing: none
    needed for a user; root ignores file modes, so root's command runs without the capability
    to (``setpriv``, Linux). None where neither denies."""
    folder.chmod(0o555)
    prefix = []
    if os.geteuid() == 0:
        if not shutil.which("setpriv"):
            return None
        prefix = ["setpriv", "--bounding-set=-dac_override,-dac_read_search,-fowner"]
    probe = subprocess.run(
        [*prefix, "sh", "-c", f'! touch "{folder}/probe" 2>/dev/null'], check=False, capture_output=True
    )
    return prefix if probe.returncode == 0 else None


@pytest.mark.parametrize(
    ("how", "reason"), [(read_only_mount, "Read-only file system"), (without_write_permission, "Permission denied")]
)
@pytest.mark.parametrize("suffix", [".csv", ".parquet"])
def test_an_output_folder_that_cannot_be_written_is_one_line(model_uri, tmp_path, how, reason, suffix):
    """This machine may run tests as root, which file modes do not stop: the folder is made
    unwritable in ways that hold for root too (a read-only mount, or a process without the
    capability to override modes), each skipped where it cannot be set up."""
    folder = tmp_path / "unwritable"
    folder.mkdir()
    source, out = tmp_path / "in.csv", folder / f"out{suffix}"
    rows(40).to_csv(source, index=False)
    prefix = how(folder)
    if prefix is None:
        pytest.skip(f"{how.__name__}: cannot make a folder unwritable for this process here")
    try:
        result = subprocess.run(
            [*prefix, *score_command(source, out, model_uri)],
            check=False,
            cwd=contracts.PROJECT_DIR,
            env=venv_env(),
            capture_output=True,
            text=True,
            timeout=300,
        )
    finally:
        folder.chmod(0o755)
    assert result.returncode == 1, result.stderr[-3000:]
    assert result.stderr.splitlines() == [
        f"score: error: Output file {out}: its folder {folder} cannot be written: {reason}"
    ]
    assert list(folder.iterdir()) == []
