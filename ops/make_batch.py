"""Write a "new batch" of iris-like data, as a scheduled data feed would.

    python -m ops.make_batch data/batch.csv                 # the 150 iris rows
    python -m ops.make_batch data/batch.csv --append 30     # grow the file by 30 new rows
    python -m ops.make_batch data/batch.parquet --rows 300 --seed 7

New rows are iris rows drawn with replacement and jittered with Gaussian noise
(seeded), so each batch is different but plausible. The file is written to a
temporary name and renamed, so a reader never sees half a batch.
"""

from __future__ import annotations

import argparse
from pathlib import Path

import numpy as np
import pandas as pd

from core.data import load_iris_frame, read_table
from core.tabular import FORMATS, write_table

JITTER = 0.05  # standard deviation of the noise, relative to each feature's spread


def synthesize(rows: int, seed: int) -> pd.DataFrame:
    """``rows`` iris-like rows: resampled iris with seeded noise, target kept."""
    iris = load_iris_frame()
    rng = np.random.default_rng(seed)
    sample = iris.sample(n=rows, replace=True, random_state=rng).reset_index(drop=True)
    features = [column for column in iris.columns if column != "target"]
    noise = rng.normal(0.0, JITTER, size=(rows, len(features))) * iris[features].std().to_numpy()
    sample[features] = (sample[features] + noise).clip(lower=0.1).round(2)
    return sample


def main(argv=None) -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("path", type=Path, help="output file, .csv or .parquet")
    parser.add_argument("--rows", type=int, help="write this many synthetic rows instead of iris itself")
    parser.add_argument("--append", type=int, metavar="N", help="add N synthetic rows to the existing file")
    parser.add_argument("--seed", type=int, default=0, help="seed of the synthetic rows (default 0)")
    args = parser.parse_args(argv)
    if args.path.suffix.lower() not in FORMATS:
        parser.error(f"{args.path}: use a file name ending in {', '.join(FORMATS)}")
    if args.append is not None:
        if not args.path.exists():
            parser.error(f"{args.path} does not exist; create it first without --append")
        frame = pd.concat([read_table(args.path.resolve()), synthesize(args.append, args.seed)])
    elif args.rows is not None:
        frame = synthesize(args.rows, args.seed)
    else:
        frame = load_iris_frame()
    args.path.parent.mkdir(parents=True, exist_ok=True)
    write_table(frame, args.path)
    print(f"{args.path}: {len(frame)} rows")


if __name__ == "__main__":
    main()
