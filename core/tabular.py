"""Tabular files, in one place: the formats the project reads and writes (CSV and
Parquet, by extension), reading a file whole or in chunks, and writing one so that
a reader never sees half of it (a temporary name beside it, renamed at the end).
"""

from __future__ import annotations

import os
from collections.abc import Iterator, Sequence
from pathlib import Path

import pandas as pd

from core.errors import StepError

FORMATS = {".csv": "csv", ".parquet": "parquet", ".pq": "parquet"}


class TableError(StepError, ValueError):
    """A file that cannot be read or written as a table; the message names it."""


def file_format(path: Path, role: str = "File") -> str:
    """``csv`` or ``parquet``, from the extension of ``path``."""
    found = FORMATS.get(Path(path).suffix.lower())
    if found is None:
        raise TableError(
            f"{role} {path}: unsupported extension {Path(path).suffix!r}; use one of {', '.join(FORMATS)}"
        )
    return found


def read_table(path: Path, role: str = "File") -> pd.DataFrame:
    """The whole file; errors name ``role`` and the file."""
    kind = file_format(path, role)
    if not path.is_file():
        raise TableError(f"{role} {path} does not exist")
    try:
        return pd.read_csv(path) if kind == "csv" else pd.read_parquet(path)
    except Exception as err:  # pandas/pyarrow raise many types for unreadable files
        raise TableError(f"{role} {path} cannot be read: {type(err).__name__}: {err}") from err


def count_rows(path: Path) -> int | None:
    """Row count when the format stores it (Parquet), else None."""
    if file_format(path) == "parquet":
        import pyarrow.parquet as pq

        return pq.ParquetFile(path).metadata.num_rows
    return None


def iter_chunks(
    path: Path, chunk_size: int, role: str = "File", text_columns: Sequence[str] = ()
) -> Iterator[pd.DataFrame]:
    """The file's rows in order, ``chunk_size`` at a time, indexed by row number.
    ``text_columns`` are read from a CSV as text, whatever a chunk's values look like
    (``"01"`` stays ``"01"``; a chunk where the column is empty is not made numbers)."""
    kind = file_format(path, role)
    if not path.is_file():
        raise TableError(f"{role} {path} does not exist")
    start = 0
    try:
        if kind == "csv":
            chunks = pd.read_csv(path, chunksize=chunk_size, dtype={c: "str" for c in text_columns})
        else:
            import pyarrow.parquet as pq

            chunks = (b.to_pandas() for b in pq.ParquetFile(path).iter_batches(batch_size=chunk_size))
        for chunk in chunks:
            chunk.index = pd.RangeIndex(start, start + len(chunk))
            start += len(chunk)
            yield chunk
    except (pd.errors.ParserError, pd.errors.EmptyDataError, OSError) as err:
        raise TableError(f"{role} {path} cannot be read near row {start}: {err}") from err
    except Exception as err:
        if type(err).__module__.startswith("pyarrow"):
            raise TableError(f"{role} {path} cannot be read: {err}") from err
        raise


class AtomicWriter:
    """Append frames to a temporary file beside ``path``; rename it over ``path`` only
    when the ``with`` block ends without an error (else remove it)."""

    def __init__(self, path: Path):
        self.path = path
        self.format = file_format(path)
        self.tmp = path.with_name(f".{path.name}.partial")
        self._parquet = None
        self._header = True

    def write(self, frame: pd.DataFrame) -> None:
        if self.format == "csv":
            frame.to_csv(self.tmp, mode="w" if self._header else "a", header=self._header, index=False)
            self._header = False
            return
        import pyarrow as pa
        import pyarrow.parquet as pq

        table = pa.Table.from_pandas(frame, preserve_index=False)
        if self._parquet is None:
            self._parquet = pq.ParquetWriter(self.tmp, table.schema)
        self._parquet.write_table(table)

    def __enter__(self):
        self.path.parent.mkdir(parents=True, exist_ok=True)
        return self

    def __exit__(self, exc_type, exc, tb):
        if self._parquet is not None:
            self._parquet.close()
        if exc_type is None and self.tmp.exists():
            os.replace(self.tmp, self.path)
        else:
            self.tmp.unlink(missing_ok=True)
        return False


def write_table(frame: pd.DataFrame, path: Path) -> None:
    """Write ``frame`` to ``path`` (CSV or Parquet by extension), atomically."""
    with AtomicWriter(path) as writer:
        writer.write(frame)
