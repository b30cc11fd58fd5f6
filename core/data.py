"""Where the rows come from, and whether they can be trained on.

Used by ``train`` (to load, validate and split) and by ``main`` (to compute the
data digest that the step cache and the lineage record). Two sources:

- ``conf/data/iris.yaml``: the iris data that scikit-learn ships;
- ``conf/data/file.yaml``: a CSV or Parquet file read with pandas
  (``data.path=...``; relative paths are resolved against the project directory).
"""

from __future__ import annotations

import logging
from collections.abc import Sequence
from pathlib import Path

import numpy as np
import pandas as pd
from omegaconf import DictConfig, OmegaConf

from core import profile, tabular
from core.contracts import PROJECT_DIR
from core.errors import StepError
from core.features import plain_categories, plain_gaps

log = logging.getLogger(__name__)


class DataError(StepError, ValueError):
    """The data cannot be used as configured; the message names the source and the problem."""


def load_iris_frame() -> pd.DataFrame:
    """The iris data shipped with scikit-learn: four feature columns and ``target``."""
    from sklearn.datasets import load_iris

    return load_iris(as_frame=True).frame


def resolve_path(path: str | Path) -> Path:
    """``path`` made absolute against the project directory."""
    return (PROJECT_DIR / Path(path).expanduser()).resolve()


def read_table(path: str | Path) -> pd.DataFrame:
    """Read a CSV or Parquet file, failing with a message that names the file."""
    try:
        return tabular.read_table(resolve_path(path), role="Data file")
    except tabular.TableError as err:
        raise DataError(str(err)) from err


def source_path(data_cfg: DictConfig) -> Path | None:
    """The file the configured loader reads, or None for built-in data."""
    path = OmegaConf.select(data_cfg, "loader.path")
    return None if path is None else resolve_path(path)


def data_digest(data_cfg: DictConfig) -> str:
    """Content digest of the data: SHA-256 of the file, or of the loader config for built-in data."""
    import hashlib

    from core.digests import json_digest

    path = source_path(data_cfg)
    if path is not None:
        if not path.is_file():
            raise DataError(f"Data file {path} does not exist")
        with open(path, "rb") as handle:
            return hashlib.file_digest(handle, "sha256").hexdigest()
    loader = OmegaConf.to_container(data_cfg.loader, resolve=True)
    return json_digest(loader)


def describe_source(data_cfg: DictConfig) -> str:
    path = source_path(data_cfg)
    return str(path) if path is not None else data_cfg.loader._target_


def feature_list(frame: pd.DataFrame, features: Sequence[str] | None, target: str) -> list[str]:
    """The configured features, or every column but the target when none are configured."""
    if features is None:
        return [column for column in frame.columns if column != target]
    return list(features)


def index_columns(frame: pd.DataFrame, target: str) -> list[str]:
    """Columns that are a saved row index, not a feature (``core.profile.is_saved_index``)."""
    return [c for c in frame.columns if c != target and profile.is_saved_index(c, frame[c])]


def looks_continuous(labels: pd.Series) -> bool:
    """A float target with fractional values and more than a few distinct ones (or one
    seen once): a regression target, not class labels."""
    if not pd.api.types.is_float_dtype(labels):
        return False
    values = labels.dropna()
    fractional = (values % 1 != 0).any()
    return bool(fractional and (values.nunique() > 10 or values.value_counts().min() < 2))


def validate_frame(
    frame: pd.DataFrame,
    features: Sequence[str],
    target: str,
    test_size: float,
    stratify: bool,
    source: str,
    max_duplicate_share: float = 0.9,
) -> None:
    """Fail with a ``DataError`` naming ``source`` and the problem, before any training.

    Feature columns may hold numbers, booleans or text, with missing values: the
    estimator decides what it accepts (``steps.train`` says so when it does not).
    """
    if frame.empty:
        raise DataError(f"Data {source} is empty: no rows")
    missing = [column for column in [*features, target] if column not in frame.columns]
    if missing:
        raise DataError(f"Data {source} lacks column(s) {missing}; it has {list(frame.columns)}")
    if not features:
        raise DataError(f"Data {source} has no feature columns besides the target {target!r}")
    dates = [c for c in features if profile.is_date(frame[c])]
    if dates:
        raise DataError(
            f"Data {source}: feature column(s) {dates} hold dates or times (e.g. "
            f"{_plain(frame[dates[0]].dropna().iloc[0])!r} in row {frame[dates[0]].first_valid_index()}); "
            "set data.dates=days to train on them as days since 1970-01-01, derive numbers "
            "from them yourself, or leave them out with data.drop"
        )
    labels = frame[target]
    if labels.isna().any():
        row = int(labels.isna().to_numpy().argmax())
        raise DataError(
            f"Data {source}: target {target!r} has {int(labels.isna().sum())} missing value(s) "
            f"(first at row {row}); drop those rows or choose another target"
        )
    if looks_continuous(labels):
        raise DataError(
            f"Data {source}: target {target!r} looks continuous ({labels.nunique()} distinct float values, "
            f"e.g. {_plain(labels[labels % 1 != 0].iloc[0])!r}); this pipeline trains classifiers"
        )
    # Rows compared by pandas' 64-bit hash of their values, not by value (DataFrame.duplicated
    # factorizes every column: 1.7 s per million rows of 20 features, against 0.1 s). Two
    # different rows sharing a hash (about one chance in 10**7 in a million rows) would
    # count as one repeat too many.
    duplicated = int(pd.util.hash_pandas_object(frame[[*features, target]], index=False).duplicated().sum())
    if duplicated:
        share = duplicated / len(frame)
        message = (
            f"Data {source}: {duplicated} of {len(frame)} rows ({share:.0%}) repeat an earlier row; "
            "repeated rows can land in both the training split and the holdout"
        )
        if share > max_duplicate_share:
            raise DataError(f"{message} (more than data.max_duplicate_share={max_duplicate_share})")
        log.warning("%s", message)
    counts = labels.value_counts()
    if len(counts) < 2:
        raise DataError(
            f"Data {source}: target {target!r} has a single class {counts.index.tolist()}; "
            "a classifier needs at least two"
        )
    n_test = int(-(-len(frame) * test_size // 1))  # as train_test_split rounds a fraction
    smallest = _plain(counts.idxmin())
    if counts.min() < 2:
        raise DataError(
            f"Data {source}: class {smallest!r} of {target!r} has {counts.min()} row; "
            "each class needs at least 2 to appear in both the training and holdout splits"
        )
    if stratify and n_test < len(counts):
        raise DataError(
            f"Data {source}: a stratified holdout of {n_test} row(s) (test_size={test_size}) "
            f"cannot hold all {len(counts)} classes"
        )


def fit_hint(features: pd.DataFrame, error: Exception) -> str:
    """Why an estimator may have refused these features, for its fit error: text columns
    it cannot encode, or missing values it does not accept (the first row and column)."""
    text = [
        c
        for c in features.columns
        if not (pd.api.types.is_numeric_dtype(features[c]) or pd.api.types.is_bool_dtype(features[c]))
    ]
    nulls = features.isna()
    message = str(error)
    if text and ("string" in message or "could not convert" in message):
        return (
            f"; feature column(s) {text} hold text, which this estimator cannot take as is: "
            "use a model config that encodes them (model=tabular_logistic_regression)"
        )
    if nulls.to_numpy().any() and ("NaN" in message or "missing" in message):
        row, column = np.argwhere(nulls.to_numpy())[0]
        return (
            f"; the data has missing values (first at row {features.index[row]}, column "
            f"{features.columns[column]!r}), which this estimator does not accept: use a model "
            "config that imputes them (model=tabular_logistic_regression) or accepts them "
            "(model=hist_gradient_boosting)"
        )
    return ""


def _plain(value):
    """A numpy scalar as the Python value it holds, for readable messages."""
    return value.item() if hasattr(value, "item") else value


def prepare_data(data_cfg: DictConfig) -> tuple[pd.DataFrame, pd.DataFrame, list[str]]:
    """Load, validate and split the configured data: (train, holdout, feature names)."""
    train, holdout, features, _ = prepare(data_cfg)
    return train, holdout, features


def prepare(data_cfg: DictConfig):
    """Load, profile (``core.profile``), validate and split the configured data:
    (train, holdout, feature names, the profile of every column)."""
    from hydra.errors import InstantiationException
    from hydra.utils import instantiate
    from sklearn.model_selection import train_test_split

    source = describe_source(data_cfg)
    try:
        frame = instantiate(data_cfg.loader)
    except InstantiationException as err:
        if isinstance(err.__cause__, DataError):  # Hydra wraps it; the cause names the file
            raise err.__cause__ from None
        raise
    frame = plain_categories(plain_gaps(frame))
    drop = list(OmegaConf.select(data_cfg, "drop", default=None) or [])
    unknown = [c for c in drop if c not in frame.columns]
    if unknown or data_cfg.target in drop:
        raise DataError(
            f"Data {source}: data.drop names {unknown or [data_cfg.target]}, "
            f"{'the target' if not unknown else 'not a column'}; it has {list(frame.columns)}"
        )
    columns = profile.profile_frame(frame, data_cfg.target, data_cfg.features, drop)
    for line in profile.left_out_lines(columns):
        log.warning("Data %s: %s", source, line)
    features = profile.chosen(columns) if data_cfg.features is None else list(data_cfg.features)
    if OmegaConf.select(data_cfg, "dates", default="refuse") == "days":  # a str Enum, or text
        dates = [c for c in features if c in frame.columns and profile.is_date(frame[c])]
        frame = frame.assign(**{c: profile.as_days(frame[c]) for c in dates})
    validate_frame(
        frame, features, data_cfg.target, data_cfg.test_size, data_cfg.stratify, source, data_cfg.max_duplicate_share
    )
    frame = frame[[*features, data_cfg.target]]
    train, holdout = train_test_split(
        frame,
        test_size=data_cfg.test_size,
        random_state=data_cfg.random_state,
        stratify=frame[data_cfg.target] if data_cfg.stratify else None,
    )
    absent = sorted(_plain(c) for c in set(frame[data_cfg.target]) - set(train[data_cfg.target]))
    if absent:
        raise DataError(
            f"Data {source}: class(es) {absent} did not land in the training split; set data.stratify=true or add rows"
        )
    return train, holdout, features, columns
