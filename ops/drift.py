"""How far a batch has moved from the champion's training data: checked and recorded.

    python -m ops.drift --input /srv/iris/batch.csv [--model-uri URI] [--report FILE] [overrides ...]
    make drift INPUT=/srv/iris/batch.csv [MODEL_NAME=name] [HYDRA_OPTIONS="drift.psi=0.25"]

Reads the file (CSV or Parquet) in chunks of ``drift.chunk_size`` rows against the reference
profile of the model, by default ``registry.champion_alias`` of ``registry.model_name`` (read
once; ``core.drift_check``): per feature a statistic and a decision; with the target column,
the model's metrics on the labelled rows beside its holdout's. Records the check on the
model's drift run (``core.drift_record``: metrics over checks, ``checks/<n>/drift_report.html``)
and prints what it found and where the report is; ``--report FILE`` writes the page there too.

Exit status: 0 checked (drifted or not: the first line says); 1 a batch or model that cannot
be compared (one line naming the file, row and column, or the model); 2 bad arguments or
Hydra override; 69 the tracking store is unreachable or cannot be opened; 77 the tracking
server refused the account (one line, ``core.access``).
"""

from __future__ import annotations

import logging
import sys
from collections.abc import Callable, Sequence
from pathlib import Path

from mlflow.exceptions import MlflowException

from core import contracts
from core.access import EXIT_DENIED, explain, model_name
from core.errors import StepError
from core.locks import LockBusy
from core.tracking import EXIT_UNAVAILABLE, StoreUnavailable, check_store
from pipeline.processes.step import parse_step_args, step_parser

log = logging.getLogger(__name__)

EXIT_REFUSED = 1


def champion_uri(cfg) -> str:
    return f"models:/{cfg.registry.model_name}@{cfg.registry.champion_alias}"


def one_line(err: Exception) -> str:
    return " ".join(str(getattr(err, "message", err)).split())[:500]


def check_and_record(cfg, path: Path, model_uri: str, decide: Callable | None = None):
    """Check ``path`` against ``model_uri`` and record the check: (what was compared, the
    result, where it was recorded, the decision). ``decide(result)`` gives a decision
    (a sentence) for the report, made before the check is recorded."""
    from core.drift_check import check_file
    from core.drift_record import record_check

    compared, result = check_file(model_uri, path, cfg.drift)
    decision = decide(result) if decide is not None else None
    recorded = record_check(compared, result, cfg.drift, decision)
    return compared, result, recorded, decision


def drift_trigger(cfg, path: Path) -> tuple[bool, str]:
    """``ops.retrain --when drift``: (retrain or not, the sentence why). Without a champion, or
    with a champion that has no reference profile, there is nothing to compare: retrain."""
    from mlflow import MlflowClient

    from core.drift_trigger import retrain_decision
    from core.reference import NoReference
    from core.registry import alias_target

    name, alias = cfg.registry.model_name, cfg.registry.champion_alias
    version = alias_target(MlflowClient(), name, alias)
    if version is None:
        return True, f"retraining: {name} has no {alias} to compare {path} with"
    decided: dict[str, bool] = {}

    def decide(result) -> str:
        decided["go"], line = retrain_decision(result, cfg.drift.retrain, list(cfg.gate.metrics))
        return line

    try:
        _, _, recorded, line = check_and_record(cfg, path, f"models:/{name}/{version}", decide)
    except NoReference as err:
        return True, f"retraining: the {alias} has nothing to compare {path} with: {one_line(err)}"
    return decided["go"], f"{line} (report {recorded.report_uri})"


def main(argv: Sequence[str] | None = None) -> None:
    parser = step_parser(__doc__)
    parser.add_argument("--input", type=Path, required=True, help="the batch: a CSV or Parquet file")
    parser.add_argument("--model-uri", default="", help="default: the champion of registry.model_name")
    parser.add_argument("--report", type=Path, default=None, help="also write the HTML report to this file")
    args, cfg = parse_step_args(parser, argv)
    if args.report is not None and not args.report.parent.is_dir():
        parser.error(f"--report {args.report}: no folder {args.report.parent}")
    contracts.configure_logging()
    tracking_uri = contracts.configure_tracking()
    model_uri = args.model_uri or champion_uri(cfg)
    try:
        check_store(tracking_uri)
    except StoreUnavailable as err:
        print(f"drift: {err}", file=sys.stderr)
        sys.exit(EXIT_UNAVAILABLE)
    try:
        compared, result, recorded, _ = check_and_record(cfg, args.input, model_uri)
        if args.report is not None:
            import mlflow

            page = mlflow.artifacts.download_artifacts(recorded.report_uri)
            args.report.write_bytes(Path(page).read_bytes())
    except Exception as err:  # a refusal of the tracking server may come from an artifact download too
        refused = explain(err, model=model_name(model_uri))
        if refused is None and not isinstance(err, (StepError, MlflowException, LockBusy, OSError)):
            raise
        print(f"drift: {refused or 'error: ' + one_line(err)}", file=sys.stderr)
        sys.exit(EXIT_DENIED if refused else EXIT_REFUSED)
    print(f"drift: {args.input} ({result.rows} rows) against {compared.label}: {result.summary()}")
    print(f"drift: report {recorded.report_uri} (check {recorded.number} on run {recorded.run_id})")
    if args.report is not None:
        print(f"drift: report written to {args.report}")


if __name__ == "__main__":
    main()
