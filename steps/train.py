"""Step 1, ``train``: load the data, split it, fit the configured estimator.

Reads: the Hydra config (``data``, ``model``); no upstream URI.

Writes, on its MLflow run:
- ``config.yaml``: the resolved config; params ``data.*`` and ``model.*``;
- ``data/train.parquet`` and ``data/holdout.parquet``: the exact split, also
  logged as MLflow dataset inputs (contexts ``training`` and ``testing``);
- the fitted estimator as a native ``mlflow.sklearn`` model named ``model``.

Outputs (run tags ``pipeline.output.*``): ``model_uri`` (``models:/m-…``),
``holdout_uri`` (``runs:/<run>/data/holdout.parquet``).

Run alone: ``python -m steps.train [overrides]`` or ``mlflow run . -e train``.
"""

from __future__ import annotations

import logging
import tempfile
from collections.abc import Sequence
from pathlib import Path

import pandas as pd
from omegaconf import DictConfig, OmegaConf
from sklearn.base import BaseEstimator
from sklearn.datasets import load_iris
from sklearn.model_selection import train_test_split

from steps import common

log = logging.getLogger(__name__)


class DataError(ValueError):
    """The loaded data cannot be used as configured."""


def load_iris_frame() -> pd.DataFrame:
    """The iris data shipped with scikit-learn: four feature columns and ``target``."""
    return load_iris(as_frame=True).frame


def select_columns(frame: pd.DataFrame, features: Sequence[str], target: str) -> pd.DataFrame:
    """Keep the feature columns (in the given order) and the target; fail naming missing ones."""
    wanted = [*features, target]
    missing = [column for column in wanted if column not in frame.columns]
    if missing:
        raise DataError(
            f"Column(s) {missing} not found in the data; available: {list(frame.columns)}"
        )
    return frame[wanted]


def split_frame(
    frame: pd.DataFrame, target: str, test_size: float, random_state: int, stratify: bool
) -> tuple[pd.DataFrame, pd.DataFrame]:
    """Split rows into train and holdout with scikit-learn's ``train_test_split``."""
    train, holdout = train_test_split(
        frame,
        test_size=test_size,
        random_state=random_state,
        stratify=frame[target] if stratify else None,
    )
    return train, holdout


def fit_estimator(
    estimator: BaseEstimator, train: pd.DataFrame, features: Sequence[str], target: str
) -> BaseEstimator:
    """Fit ``estimator`` on the feature columns of ``train`` against ``target``."""
    return estimator.fit(train[list(features)], train[target])


def prepare_data(data_cfg: DictConfig) -> tuple[pd.DataFrame, pd.DataFrame]:
    """Load the configured data and split it into train and holdout."""
    from hydra.utils import instantiate

    frame = select_columns(instantiate(data_cfg.loader), data_cfg.features, data_cfg.target)
    return split_frame(
        frame,
        target=data_cfg.target,
        test_size=data_cfg.test_size,
        random_state=data_cfg.random_state,
        stratify=data_cfg.stratify,
    )


def run(cfg: DictConfig, overrides: Sequence[str] = ()) -> dict[str, str]:
    """Train inside the active MLflow run and return the step's outputs."""
    import mlflow
    from hydra.utils import instantiate
    from mlflow.models import infer_signature

    common.log_config(cfg, overrides, step="train")
    mlflow.log_params(
        common.flatten(OmegaConf.to_container(cfg.data, resolve=True), prefix="data.")
        | common.flatten(OmegaConf.to_container(cfg.model, resolve=True), prefix="model.")
    )

    train, holdout = prepare_data(cfg.data)
    features, target = list(cfg.data.features), cfg.data.target
    log.info("train rows: %d, holdout rows: %d", len(train), len(holdout))

    with tempfile.TemporaryDirectory() as tmp:
        for frame, artifact in (
            (train, common.TRAIN_DATA_ARTIFACT),
            (holdout, common.HOLDOUT_ARTIFACT),
        ):
            path = Path(tmp) / Path(artifact).name
            frame.to_parquet(path)
            mlflow.log_artifact(str(path), artifact_path=str(Path(artifact).parent))
    mlflow.log_input(mlflow.data.from_pandas(train, name="train", targets=target), "training")
    mlflow.log_input(mlflow.data.from_pandas(holdout, name="holdout", targets=target), "testing")

    estimator = fit_estimator(instantiate(cfg.model), train, features, target)
    model_info = mlflow.sklearn.log_model(
        estimator,
        name=common.LOGGED_MODEL_NAME,
        signature=infer_signature(train[features], estimator.predict(train[features])),
        input_example=train[features].head(3),
    )
    run_id = mlflow.active_run().info.run_id
    outputs = {
        "model_uri": model_info.model_uri,
        "holdout_uri": f"runs:/{run_id}/{common.HOLDOUT_ARTIFACT}",
    }
    common.record_outputs(outputs)
    return outputs


def main(argv: Sequence[str] | None = None) -> None:
    import mlflow

    parser = common.step_parser(__doc__)
    args, cfg = common.parse_step_args(parser, argv)
    common.configure_logging()
    common.configure_tracking()
    with mlflow.start_run():
        run(cfg, args.overrides)


if __name__ == "__main__":
    main()
