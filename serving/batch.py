"""Entry point ``score``: batch scoring of a CSV or Parquet file with a registered model.

Reads:
- ``--model-uri``: any pyfunc model URI (default ``models:/iris-classifier@champion``);
- ``--input``: a CSV or Parquet file, read in chunks of ``--chunk-size`` rows;
- ``--predict-method``: ``predict``, ``predict_proba`` (default) or ``predict_log_proba``;
- ``--id-columns``: input columns copied to the output (default: every column
  that is not a model feature).

Writes ``--output`` (CSV or Parquet, by extension), one row per input row in the input's order:
the id columns, then ``prediction`` for ``predict``, or one column per class label,
``proba_<label>`` / ``log_proba_<label>``, in the model's class order. Id columns are copied as
the input holds them: a CSV's text as it is (``007`` stays ``007``), a Parquet file's columns in
their own type. An input column named like an output column is refused, not renamed: leave it out
with ``--id-columns``. A Parquet output records the model that scored it in its key-value
metadata: ``model_uri`` (exactly that model: an alias is read once), ``model_id`` and, for a
registered version, ``model_name`` and ``model_version``; the ``score`` run has the same as tags.
A CSV output has no place for them.

The output is written in a folder of its own made beside it (``.<name>.<random>``, created
exclusively, readable by the scorer only: a file or link planted under any name is never written
through) and moved over ``--output`` (``os.replace``) at the end; that folder is removed however
scoring ends, SIGTERM and Ctrl-C included (exit 143 and 130). Every refusal (a missing or
colliding column, a value that is not a number in a number column, a value the model refuses, a
file that is not UTF-8, a bad ``--chunk-size`` or ``--output``, an output folder that cannot be
written) is one line on stderr naming the file, row and column, the parameter or the folder, and
exit 1 (77 for a permission the account lacks: ``core.access``); it leaves no partial output, and
an existing output file as it was.

Rows outside the training data's contract (a value beyond the training range, a category never
seen, a gap where training had none; ``core.contract``) are scored and reported on stderr, per
column and check, with the first such row. The batch's drift from the training data
(``serving.score_drift``: per feature against the model's reference profile, the model's metrics
on labelled rows) is recorded on the model's drift run, with an HTML report.

Run: ``python -m serving.batch --input in.csv --output out.parquet`` or ``mlflow run . -e score
-P input=/abs/in.csv -P output=/abs/out.csv`` (its run records the parameters, rows scored,
``drift.json``, the drift metrics and ``drift_report.html``).
"""

from __future__ import annotations

import argparse
import contextlib
import logging
import os
import signal
import sys
from collections import Counter
from collections.abc import Sequence
from pathlib import Path

import numpy as np
import pandas as pd
from mlflow.exceptions import MlflowException
from mlflow.utils.mlflow_tags import MLFLOW_RUN_NAME

from core import contract, contracts
from core.access import EXIT_DENIED, explain, model_name
from core.chunk_types import ScoringError, check_chunk, predict_chunk
from core.errors import StepError, stored
from core.integrity import load_verified, resolve
from core.tabular import AtomicWriter, columns, count_rows, iter_chunks
from model.dispatch_model import DEFAULT_PREDICT_METHOD, PREDICT_METHODS, offered_methods
from serving import score_drift
from serving.staging import Terminated, staged_output, terminate

log = logging.getLogger(__name__)

DEFAULT_CHUNK_SIZE = 100_000
COLUMN_PREFIX = {"predict_proba": "proba_", "predict_log_proba": "log_proba_"}


def output_columns(method: str, classes: Sequence) -> list[str]:
    """The names of the model's output columns: ``prediction``, or one per class label."""
    if method == "predict":
        return ["prediction"]
    return [f"{COLUMN_PREFIX[method]}{label}" for label in classes]


def prediction_columns(result: np.ndarray, method: str, classes: Sequence) -> pd.DataFrame:
    """Name the model's output (:func:`output_columns`)."""
    result = np.asarray(result)
    return pd.DataFrame(result.reshape(len(result), -1), columns=output_columns(method, classes))


def copied_columns(
    header: Sequence[str], features: Sequence[str], names: Sequence[str], id_columns: Sequence[str] | None, source: Path
) -> list[str]:
    """The input columns copied to the output (``id_columns``, default every column that
    is not a feature), checked against the input's ``header`` and the output column
    ``names``: a copied column named like an output column would make two columns of
    one name, which readers of the output take one of, or rename, without a word."""
    duplicated = sorted(name for name, count in Counter(header).items() if count > 1)
    if duplicated:
        raise ScoringError(f"{source}: column(s) {duplicated} appear more than once")
    if id_columns is None:
        ids = [c for c in header if c not in features]
    else:
        ids = list(dict.fromkeys(id_columns))  # a column named twice is copied once
    absent = [c for c in ids if c not in header]
    if absent:
        raise ScoringError(f"{source}: id column(s) {absent} not found; it has {list(header)}")
    for name in ids:
        if name in names:
            raise ScoringError(
                f"{source}: input column {name!r} would be copied beside the output column of that name; "
                "rename it, or leave it out with --id-columns"
            )
    return ids


def score_file(
    model,
    input_path: Path,
    output_path: Path,
    method: str = DEFAULT_PREDICT_METHOD,
    chunk_size: int = DEFAULT_CHUNK_SIZE,
    id_columns: Sequence[str] | None = None,
    progress: bool | None = None,
    drift: list | None = None,
    provenance: dict[str, str] | None = None,
    batch_check=None,
) -> int:
    """Score ``input_path`` chunk by chunk into ``output_path``; return the number of rows.

    Everything that can be checked before reading rows is (the method, ``chunk_size``,
    the input's columns against the model's and the output's), so that such a
    mistake fails at once, however large the file.

    With ``drift`` (a list), each chunk is checked against the training data's contract
    kept in the model's metadata (``core.contract``) and what falls outside is appended
    as a report per chunk; nothing is refused for it. ``provenance`` (:func:`scored_by`) goes
    into a Parquet output's metadata. ``batch_check`` (``core.drift_check.BatchCheck``)
    counts each chunk and its outputs."""
    from tqdm import tqdm

    if method not in PREDICT_METHODS:
        raise ScoringError(f"predict_method {method!r} is not one of {', '.join(PREDICT_METHODS)}")
    if chunk_size < 1:
        raise ScoringError(f"--chunk-size must be at least 1 row, got {chunk_size}")
    if input_path.resolve() == output_path.resolve():
        raise ScoringError(f"--output {output_path} would overwrite the input")
    schema = model.metadata.get_input_schema()
    types = {spec.name: spec.type.name for spec in schema.inputs}
    features = list(types)
    metadata = model.metadata.metadata or {}
    classes = metadata.get("classes", [])
    offered = offered_methods(metadata)
    if method not in offered:
        raise ScoringError(
            f"predict_method {method!r} is not offered by this model "
            f"({metadata.get('estimator', 'its estimator')} offers {', '.join(offered)})"
        )
    ids = copied_columns(
        columns(input_path, "Input file"), features, output_columns(method, classes), id_columns, input_path
    )
    data_contract = metadata.get(contract.METADATA_KEY)
    checker = contract.load_contract(data_contract) if drift is not None and data_contract else None
    text = [name for name, kind in types.items() if kind == "string"]
    chunks = iter_chunks(
        input_path, chunk_size, role="Input file", text_columns=text, kept_columns=[c for c in ids if c not in features]
    )
    rows = 0
    with (
        staged_output(output_path) as staged,
        AtomicWriter(staged, metadata=provenance) as writer,
        tqdm(
            total=count_rows(input_path, "Input file"), unit="rows", disable=None if progress is None else not progress
        ) as bar,
    ):
        for chunk in chunks:
            if chunk.empty:  # a CSV with a header only
                continue
            features_chunk = check_chunk(chunk, types, input_path)
            if checker is not None:
                drift.append(contract.drift(checker, features_chunk))
            result = predict_chunk(model, features_chunk, method, input_path)
            if batch_check is not None:
                batch_check.add_scored(chunk, features_chunk, result, method)
            out = pd.concat([chunk[ids].reset_index(drop=True), prediction_columns(result, method, classes)], axis=1)
            writer.write(out)
            rows += len(chunk)
            bar.update(len(chunk))
        if rows == 0:  # raised inside the block: an existing output stays as it was
            raise ScoringError(f"Input file {input_path} has no rows")
    return rows


def scored_by(model_uri: str) -> tuple[str, dict[str, str]]:
    """(URI of exactly the model ``model_uri`` names now, what an output records of it): an
    alias is read once here, so the version recorded is the version that scores."""
    exact, version, model_id = resolve(model_uri)
    found = {contracts.SCORED_BY_URI_KEY: exact, contracts.SCORED_BY_ID_KEY: model_id}
    if version is not None:
        found[contracts.SCORED_BY_NAME_KEY] = exact.removeprefix("models:/").rpartition("/")[0]
        found[contracts.SCORED_BY_VERSION_KEY] = version
    return exact, found


def one_line(message: str) -> str:
    """``message`` on one line (scikit-learn's and pandas' span several), as a log shows it."""
    return " ".join(part.strip() for part in str(message).splitlines() if part.strip())


def build_parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--input", type=Path, required=True, help="CSV or Parquet file to score")
    parser.add_argument("--output", type=Path, required=True, help="CSV or Parquet file to write")
    parser.add_argument(
        "--model-uri", default=contracts.CHAMPION_URI, help=f"default (or empty) {contracts.CHAMPION_URI}"
    )
    parser.add_argument("--predict-method", default=DEFAULT_PREDICT_METHOD, choices=PREDICT_METHODS)
    parser.add_argument("--chunk-size", type=int, default=DEFAULT_CHUNK_SIZE, help="rows per chunk")
    parser.add_argument(
        "--id-columns",
        default=None,
        help="comma-separated input columns to copy to the output (default: all non-feature columns)",
    )
    parser.add_argument("--no-progress", action="store_true", help="no progress bar")
    parser.add_argument("--no-drift", action="store_true", help="no drift check (serving.score_drift)")
    return parser


def main(argv: Sequence[str] | None = None) -> None:
    import mlflow

    args = build_parser().parse_args(argv)
    args.model_uri = args.model_uri or contracts.CHAMPION_URI
    contracts.configure_logging()
    contracts.configure_tracking()
    id_columns = None if args.id_columns in (None, "") else [c.strip() for c in args.id_columns.split(",")]
    in_project_run = "MLFLOW_RUN_ID" in os.environ
    previous = signal.signal(signal.SIGTERM, terminate)
    try:
        exact, provenance = scored_by(args.model_uri)
        model = load_verified(exact)  # its files checked first: core.integrity
        drift: list = []
        checked = None if args.no_drift else score_drift.batch_check(model, exact, provenance, args.input)
        with mlflow.start_run() if in_project_run else contextlib.nullcontext():
            if in_project_run:  # its name in the MLflow UI's runs table
                mlflow.set_tag(MLFLOW_RUN_NAME, f"score {Path(args.input).name}")
            rows = score_file(
                model,
                args.input,
                args.output,
                args.predict_method,
                args.chunk_size,
                id_columns,
                progress=False if args.no_progress else None,
                drift=drift,
                provenance=provenance,
                batch_check=checked,
            )
            report = contract.combine(drift)
            for line in contract.describe(report):
                print(f"score: outside the training data's contract: {line}", file=sys.stderr)
            if in_project_run:  # but those `mlflow run` logged as given (an empty model_uri: '')
                given = mlflow.get_run(mlflow.active_run().info.run_id).data.params
                params = {"model_uri": args.model_uri, "input": str(args.input), "output": str(args.output)}
                params["predict_method"] = args.predict_method
                mlflow.log_params({key: value for key, value in params.items() if key not in given})
                mlflow.log_metric("rows_scored", rows)
                mlflow.set_tags(provenance)
                if len(report):
                    mlflow.log_table(report.astype({"example": str, "first_row": str}), "drift.json")
            drifted = [] if args.no_drift else score_drift.record(checked, in_project_run, exact)
    except Exception as err:  # a refusal of the tracking server may come from an artifact download too
        refused = explain(err, model=model_name(args.model_uri))
        if refused is None and not isinstance(err, (StepError, MlflowException)):
            raise
        print(f"score: error: {refused or stored(one_line(getattr(err, 'message', err)), 500)}", file=sys.stderr)
        sys.exit(EXIT_DENIED if refused else 1)
    except (Terminated, KeyboardInterrupt) as err:
        name = "SIGTERM" if isinstance(err, Terminated) else "SIGINT"
        print(f"score: stopped by {name}; no partial output left", file=sys.stderr)
        sys.exit(128 + (signal.SIGTERM if isinstance(err, Terminated) else signal.SIGINT))
    finally:
        signal.signal(signal.SIGTERM, previous)
    version = provenance.get(contracts.SCORED_BY_VERSION_KEY)
    print(
        f"{args.output}: {rows} rows scored with {args.predict_method} by {args.model_uri}"
        + (f" (version {version})" if version else "")
    )
    for line in drifted:
        print(f"score: {line}")


if __name__ == "__main__":
    main()
