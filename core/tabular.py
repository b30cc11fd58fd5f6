"""Tabular files, in one place: the formats the project reads and writes (CSV and
Parquet, by extension), reading a file whole or in chunks, and writing one so that
a reader never sees half of it (a temporary name beside it, renamed at the end).

Every failure to read or write a file is a :class:`TableError` naming the file (and
the line, row or column when known): a user sees one line, not a traceback.
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
        raise TableError(f"{role} {path}: unsupported extension {Path(path).suffix!r}; use one of {', '.join(FORMATS)}")
    return found


def read_table(path: Path, role: str = "File") -> pd.DataFrame:
    """The whole file; errors name ``role`` and the file."""
    kind = _require_file(path, role)
    try:
        return pd.read_csv(path) if kind == "csv" else pd.read_parquet(path)
    except UnicodeDecodeError as err:
        raise TableError(not_utf8(path, role)) from err
    except Exception as err:  # pandas/pyarrow raise many types for unreadable files
        raise TableError(f"{role} {path} cannot be read: {type(err).__name__}: {err}") from err


def not_utf8(path: Path, role: str = "File") -> str:
    """Where ``path`` stops being UTF-8, for an error message: the line (1 is a CSV's
    header) and the byte. pandas' own error gives neither: only an offset in a buffer."""
    with open(path, "rb") as handle:
        offset = 0
        for number, line in enumerate(handle, start=1):
            try:
                line.decode("utf-8")
            except UnicodeDecodeError as err:
                return (
                    f"{role} {path} is not UTF-8 text: line {number} has the byte "
                    f"0x{line[err.start]:02x} (byte {offset + err.start} of the file); "
                    "save it as UTF-8"
                )
            offset += len(line)
    return f"{role} {path} is not UTF-8 text; save it as UTF-8"


def _require_file(path: Path, role: str) -> str:
    kind = file_format(path, role)
    if not path.is_file():
        raise TableError(f"{role} {path} " + ("is not a file" if path.exists() else "does not exist"))
    return kind


def columns(path: Path, role: str = "File") -> list[str]:
    """The file's column names, in order, from its header (CSV) or schema (Parquet),
    as :func:`iter_chunks` will name them."""
    kind = _require_file(path, role)
    try:
        if kind == "csv":
            return pd.read_csv(path, nrows=0).columns.tolist()
        import pyarrow.parquet as pq

        return list(pq.ParquetFile(path).schema_arrow.names)
    except UnicodeDecodeError as err:
        raise TableError(not_utf8(path, role)) from err
    except pd.errors.EmptyDataError as err:
        raise TableError(f"{role} {path} is empty: it has no header") from err
    except Exception as err:  # pandas/pyarrow raise many types for unreadable files
        raise TableError(f"{role} {path} cannot be read: {type(err).__name__}: {err}") from err


def count_rows(path: Path, role: str = "File") -> int | None:
    """Row count when the format stores it (Parquet), else None."""
    if _require_file(path, role) != "parquet":
        return None
    import pyarrow.parquet as pq

    try:
        return pq.ParquetFile(path).metadata.num_rows
    except Exception as err:  # pyarrow: ArrowInvalid for a file that is not Parquet, OSError, ...
        raise TableError(f"{role} {path} cannot be read: {type(err).__name__}: {err}") from err


def iter_chunks(
    path: Path, chunk_size: int, role: str = "File", text_columns: Sequence[str] = (), kept_columns: Sequence[str] = ()
) -> Iterator[pd.DataFrame]:
    """The file's rows in order, ``chunk_size`` (at least 1) at a time, indexed by row number.

    ``text_columns`` are read from a CSV as text, whatever a chunk's values look like
    (``"01"`` stays ``"01"``; a chunk where the column is empty is not made numbers).
    ``kept_columns`` are to be copied out unchanged, so each has one type in every
    chunk: from a CSV the text it holds (``007`` stays ``007``, ids that turn from
    numbers to text after some rows stay text), from Parquet the file's own type
    (pyarrow-backed: integers with a gap stay integers, where pandas would make the
    chunks with a gap floats and the others integers).
    """
    kind = _require_file(path, role)
    start = 0
    try:
        if kind == "csv":
            as_text = {c: "str" for c in [*text_columns, *kept_columns]}
            chunks = pd.read_csv(path, chunksize=chunk_size, dtype=as_text)
        else:
            chunks = _parquet_chunks(path, chunk_size, kept_columns)
        for chunk in chunks:
            chunk.index = pd.RangeIndex(start, start + len(chunk))
            start += len(chunk)
            yield chunk
    except UnicodeDecodeError as err:
        raise TableError(not_utf8(path, role)) from err
    except (pd.errors.ParserError, pd.errors.EmptyDataError, OSError) as err:
        raise TableError(f"{role} {path} cannot be read near row {start}: {err}") from err
    except Exception as err:
        if type(err).__module__.startswith("pyarrow"):
            raise TableError(f"{role} {path} cannot be read: {err}") from err
        raise


def _parquet_chunks(path: Path, chunk_size: int, kept_columns: Sequence[str]) -> Iterator[pd.DataFrame]:
    import pyarrow.parquet as pq

    for batch in pq.ParquetFile(path).iter_batches(batch_size=chunk_size):
        frame = batch.to_pandas()
        if kept_columns:
            kept = batch.select(list(kept_columns)).to_pandas(types_mapper=pd.ArrowDtype)
            kept.index = frame.index  # row by row: the frame may carry an index pandas saved in the file
            frame = frame.assign(**{name: kept[name] for name in kept_columns})
        yield frame


class AtomicWriter:
    """Append frames to a temporary file beside ``path``; rename it over ``path`` only
    when the ``with`` block ends without an error (else remove it): a failure leaves
    no half-written file, and an existing ``path`` as it was.

    A Parquet file has one type per column: the first frame sets it, later frames are
    converted to it (integers with a gap become integers with a null, as they were
    meant), and a value that does not fit is a :class:`TableError` naming the row and
    column. The file carries no pandas metadata: readers get plain column types.
    ``metadata`` (text keys and values) goes into a Parquet file's key-value metadata;
    a CSV file has no place for it.
    """

    def __init__(self, path: Path, role: str = "Output file", metadata: dict[str, str] | None = None):
        self.path = path
        self.role = role
        self.metadata = metadata or {}
        self.format = file_format(path, role)
        self.tmp = path.with_name(f".{path.name}.partial")
        self._parquet = None
        self._schema = None
        self._rows = 0

    def write(self, frame: pd.DataFrame) -> None:
        try:
            if self.format == "csv":
                first = self._rows == 0
                frame.to_csv(self.tmp, mode="w" if first else "a", header=first, index=False)
            else:
                self._write_parquet(frame)
        except OSError as err:
            raise TableError(f"{self.role} {self.path} cannot be written: {err}") from err
        self._rows += len(frame)

    def _write_parquet(self, frame: pd.DataFrame) -> None:
        import pyarrow as pa
        import pyarrow.parquet as pq

        try:
            table = pa.Table.from_pandas(frame, schema=self._schema, preserve_index=False)
        except (pa.ArrowInvalid, pa.ArrowTypeError, pa.ArrowNotImplementedError) as err:
            reason = self._misfit(frame) or f"{self.role} {self.path} cannot be written: {err}"
            raise TableError(reason) from err
        if self._parquet is None:
            self._schema = table.schema.remove_metadata()
            table = table.replace_schema_metadata(None)
            schema = self._schema.with_metadata(self.metadata) if self.metadata else self._schema
            self._parquet = pq.ParquetWriter(self.tmp, schema)
        self._parquet.write_table(table)

    def _misfit(self, frame: pd.DataFrame) -> str | None:
        """The first value of ``frame`` that its column's type in the file cannot hold."""
        import pyarrow as pa

        if self._schema is None:
            return None
        for name in frame.columns:
            kind = self._schema.field(name).type
            for position, value in enumerate(frame[name]):
                try:
                    pa.array([value], type=kind, from_pandas=True)
                except (pa.ArrowInvalid, pa.ArrowTypeError):
                    return (
                        f"{self.role} {self.path}: row {self._rows + position}, column {name!r}: "
                        f"{value!r} is not {kind} like the rows before it (a Parquet column "
                        "has one type); write a .csv, or leave the column out"
                    )
        return None

    def __enter__(self):
        if self.path.is_dir():
            raise TableError(f"{self.role} {self.path} is a directory; name a file in it")
        try:
            self.path.parent.mkdir(parents=True, exist_ok=True)
        except OSError as err:
            raise TableError(f"{self.role} {self.path}: its directory cannot be made: {err}") from err
        return self

    def __exit__(self, exc_type, exc, tb):
        try:
            if self._parquet is not None:
                self._parquet.close()
            if exc_type is None and self.tmp.exists():
                os.replace(self.tmp, self.path)
        except OSError as err:
            if exc_type is None:  # else the block's own error is the one to report
                raise TableError(f"{self.role} {self.path} cannot be written: {err}") from err
        finally:
            self.tmp.unlink(missing_ok=True)
        return False


def write_table(frame: pd.DataFrame, path: Path) -> None:
    """Write ``frame`` to ``path`` (CSV or Parquet by extension), atomically."""
    with AtomicWriter(path) as writer:
        writer.write(frame)
