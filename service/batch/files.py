"""Input and output files: formats, chunked reading with bounded memory, atomic writers.

The input is streamed in chunks of ``chunk_size`` rows (``pyarrow.csv.open_csv`` /
``ParquetFile.iter_batches``), so memory is bounded by a few chunks whatever the file's size.
Outputs are written under a temporary name and renamed into place by :meth:`TableWriter.commit`:
an interrupted run never leaves a half-written file that looks complete.

A bad row never sinks a file: a line that cannot be split into the header's fields and a cell
that is not UTF-8 travel with their chunk (:class:`Chunk`) to the rejects file, by row number.
What cannot be read at all is one :class:`BatchError` line that never quotes the file.
"""

from __future__ import annotations

import os
from collections.abc import Iterator, Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import numpy as np
import pyarrow as pa
import pyarrow.compute as pc
import pyarrow.csv as pacsv

from models.validation import FieldError
from service.batch.job import BatchError
from service.batch.progress import ProgressSink


def _parquet() -> Any:
    # NOTE: imported when a Parquet file is read or written: a CSV job (most of them) then skips
    # ~60 ms of start-up (pyarrow.parquet pulls in pyarrow.fs and ssl).
    import pyarrow.parquet as pq

    return pq


def file_format(path: Path) -> str:
    name = path.name.lower()
    if name.endswith((".csv", ".csv.gz", ".csv.bz2", ".csv.zst")):
        return "csv"
    if name.endswith((".parquet", ".pq")):
        return "parquet"
    raise BatchError(f"'{path}': use a .csv (optionally .gz) or .parquet file")


def rejects_path(output: Path) -> Path:
    """``out.csv`` -> ``out.rejects.csv``, next to OUTPUT."""
    return output.with_name(output.stem + ".rejects.csv")


def check_paths(input_path: Path, output: Path) -> None:
    file_format(input_path)
    file_format(output)
    if input_path.is_dir():
        raise BatchError(f"the input '{input_path}' is a folder, not a file")
    if not input_path.is_file():
        raise BatchError(f"input file '{input_path}' does not exist")
    if input_path.resolve() == output.resolve():
        raise BatchError("OUTPUT must differ from INPUT")
    if output.is_dir():
        raise BatchError(f"OUTPUT '{output}' is a folder: name the file to write")
    for parent in output.parents:
        if parent.exists():
            if not parent.is_dir():
                raise BatchError(f"cannot write OUTPUT under '{parent}': it is a file")
            break


def _csv_stream(path: Path) -> tuple[Any, Any]:
    """(the file, the stream to parse): Arrow's own files, not a Python file object.

    NOTE: Arrow's CSV reader reads ahead on its IO threads. Through a Python file object, a read
    error (a cut-off .gz) could leave such a thread on a closed Python file and abort the
    interpreter at exit ("terminate called without an active exception"); native files cannot.
    """
    raw = pa.OSFile(str(path), mode="r")
    compression = pa.Codec.detect(str(path)).name if not path.name.endswith(".csv") else None
    stream = pa.CompressedInputStream(raw, compression) if compression else raw
    return raw, stream


def _unreadable(path: Path, exc: BaseException) -> BatchError:
    """A whole-file read failure as one line that never quotes the file's content.

    NOTE: Arrow's messages may end with the offending line ("Expected 15 columns, got 7: <row>"),
    so only a category is named, never the message itself.
    """
    text = str(exc)
    if "Empty CSV file" in text:
        return BatchError(f"the input file '{path.name}' is empty: it has no header line")
    if isinstance(exc, IsADirectoryError):
        return BatchError(f"the input '{path}' is a folder, not a file")
    if isinstance(exc, OSError) and exc.strerror:
        return BatchError(f"cannot read the input '{path}': {exc.strerror}")
    what = "Parquet" if file_format(path) == "parquet" else "CSV"
    kind = "a compressed stream" if "compress" in text.lower() or "inflate" in text else what
    return BatchError(f"cannot read the input '{path.name}': it is not readable as {kind}")


def input_schema(path: Path) -> Any:
    """The input's column names and types (CSV columns are read as text)."""
    try:
        if path.stat().st_size == 0:
            raise BatchError(f"the input file '{path.name}' is empty: it has no header line")
        if file_format(path) == "parquet":
            return _parquet().ParquetFile(path).schema_arrow
        raw, stream = _csv_stream(path)
        with raw, stream:
            # Only the header counts here: the first block's rows are read again, one by one,
            # by iter_chunks (a bad line or byte among them rejects its row, not the file).
            reader = pacsv.open_csv(
                stream,
                read_options=pacsv.ReadOptions(block_size=1 << 16, use_threads=False),
                parse_options=pacsv.ParseOptions(invalid_row_handler=lambda _row: "skip"),
                convert_options=pacsv.ConvertOptions(check_utf8=False),
            )
            names = reader.schema.names
    except UnicodeDecodeError:  # Arrow hands the header's names to Python as str
        raise BatchError(f"the header line of '{path.name}' is not UTF-8 text") from None
    except (pa.ArrowException, OSError) as exc:
        raise _unreadable(path, exc) from None
    return pa.schema([pa.field(n, pa.string()) for n in names])


def progress_total(path: Path) -> tuple[int | None, str]:
    """What a progress bar counts: rows for Parquet, bytes for CSV (its row count is unknown)."""
    if file_format(path) == "parquet":
        return _parquet().ParquetFile(path).metadata.num_rows, "rows"
    return path.stat().st_size, "bytes"


def _csv_convert(columns: Sequence[str]) -> Any:
    # Every column as text: models.tables reads text by one grammar, whatever a block holds, and
    # only an empty cell is missing (as in Spark's CSV reader and pandas' CSV writer).
    # UTF-8 is checked per cell afterwards (_decode): one bad byte rejects its row, not the file.
    return pacsv.ConvertOptions(
        include_columns=list(columns),
        column_types={c: pa.string() for c in columns},
        null_values=[""],
        strings_can_be_null=True,
        quoted_strings_can_be_null=True,
        check_utf8=False,
    )


@dataclass(frozen=True)
class Chunk:
    """Up to ``chunk_size`` rows of the input that parsed, and the lines among them that did not.

    ``undecodable`` maps a row of ``table`` to its cells that were not UTF-8 (null in ``table``);
    ``unparsed`` lists the data rows that could not be split into the header's fields. Neither
    holds the offending bytes: a reason names the row, the field and what is allowed.
    """

    index: int
    table: Any
    row_numbers: Any
    """Each row's 1-based data row number in the input (the header is row 0), int64."""
    undecodable: dict[int, list[FieldError]] = field(default_factory=dict)
    unparsed: list[tuple[int, FieldError]] = field(default_factory=list)

    @property
    def rows(self) -> int:
        """Rows of the input this chunk accounts for: parsed and unparsed."""
        return int(self.table.num_rows) + len(self.unparsed)


class _SkippedRows:
    """Arrow's invalid-row handler: keeps the row number and field counts of a line that could
    not be split into the header's fields, and skips it (never its text)."""

    def __init__(self) -> None:
        self.rows: list[tuple[int, FieldError]] = []

    def __call__(self, row: Any) -> str:
        if row.number is None:  # only a multi-threaded reader loses the number (not used here)
            return "error"
        expected, actual = row.expected_columns, row.actual_columns
        why = (
            "a line cut short, e.g. a truncated file"
            if actual < expected
            else "a value holding an unquoted comma?"
        )
        error = FieldError(
            "row",
            f"has {actual} of the header's {expected} fields ({why})",
            allowed=f"{expected} comma-separated fields",
            code="malformed_row",
        )
        self.rows.append((row.number - 1, error))  # Arrow counts the header as row 1
        return "skip"


def iter_chunks(
    path: Path, columns: Sequence[str], chunk_size: int, progress: ProgressSink
) -> Iterator[Chunk]:
    """The input's ``columns`` as chunks of exactly ``chunk_size`` parsed rows (the last may be
    short); a line that could not be parsed goes with the chunk its row number falls in."""
    if chunk_size < 1:
        raise BatchError("--chunk-size must be at least 1")
    skipped = _SkippedRows()
    pending: list[Any] = []
    pending_rows = 0
    position = 0
    parsed = 0  # parsed rows handed out in chunks so far
    consumed = 0  # unparsed lines handed out so far (a one-thread reader reports them in order)
    index = 0

    def chunk(table: Any, *, last: bool) -> Chunk:
        nonlocal parsed, consumed, index
        numbers = _row_numbers(parsed, table.num_rows, skipped.rows)
        end = int(numbers[-1]) if len(numbers) and not last else None
        # the unparsed lines before this chunk's last row (all that are left, for the last one)
        taken = consumed
        while taken < len(skipped.rows) and (end is None or skipped.rows[taken][0] < end):
            taken += 1
        decoded, undecodable = _decode(table)
        done = Chunk(
            index, decoded, pa.array(numbers, pa.int64()), undecodable, skipped.rows[consumed:taken]
        )
        parsed += table.num_rows
        consumed = taken
        index += 1
        return done

    try:
        for batch, position in _batches(path, columns, chunk_size, skipped):
            pending.append(batch)
            pending_rows += batch.num_rows
            while pending_rows >= chunk_size:
                table = pa.Table.from_batches(pending)
                rest = table.slice(chunk_size)
                pending = rest.to_batches() if rest.num_rows else []
                pending_rows = rest.num_rows
                yield chunk(table.slice(0, chunk_size).combine_chunks(), last=False)
                progress.advance(rows=chunk_size, position=position)
    except (pa.ArrowException, OSError) as exc:
        raise _unreadable(path, exc) from None
    tail = len(skipped.rows) - consumed
    if pending_rows or tail:
        table = pa.Table.from_batches(pending).combine_chunks() if pending else None
        yield chunk(table if table is not None else _empty(path, columns), last=True)
        progress.advance(rows=pending_rows + tail, position=position)


def _row_numbers(first: int, n: int, skipped: list[tuple[int, FieldError]]) -> Any:
    """Data row numbers of the parsed rows ``first + 1 .. first + n`` (counted among parsed
    rows): each moves on past the unparsed lines before it."""
    parsed = np.arange(first + 1, first + n + 1, dtype=np.int64)
    if not skipped:
        return parsed
    rows = np.array([row for row, _ in skipped], dtype=np.int64)
    # the k-th unparsed line (0-based) comes after rows[k] - k - 1 parsed rows
    after = rows - np.arange(len(rows))
    return parsed + np.searchsorted(after, parsed, side="right")


def _empty(path: Path, columns: Sequence[str]) -> Any:
    schema = input_schema(path)
    return pa.schema([schema.field(c) for c in columns]).empty_table()


def _batches(
    path: Path, columns: Sequence[str], chunk_size: int, skipped: _SkippedRows
) -> Iterator[tuple[Any, int]]:
    if file_format(path) == "parquet":
        parquet = _parquet().ParquetFile(path)
        rows = 0
        for batch in parquet.iter_batches(batch_size=chunk_size, columns=list(columns)):
            rows += batch.num_rows
            yield batch, rows
        return
    raw, stream = _csv_stream(path)
    with raw, stream:
        # NOTE: 1 MB blocks keep peak memory flat in the file's size; with 4 MB blocks it grew
        # by ~50 MB per million rows (measured: 128 vs 133 MB for 1M vs 3M rows, reader alone).
        # One reading thread: only then does Arrow number the lines it skips (with threads it
        # reports None); reading is a few percent of a job either way (600k rows: 0.16 s).
        reader = pacsv.open_csv(
            stream,
            read_options=pacsv.ReadOptions(block_size=1 << 20, use_threads=False),
            parse_options=pacsv.ParseOptions(invalid_row_handler=skipped),
            convert_options=_csv_convert(columns),
        )
        for batch in reader:
            yield batch, raw.tell()


def _decode(table: Any) -> tuple[Any, dict[int, list[FieldError]]]:
    """``table`` with every text cell that is not UTF-8 set to null, and those cells by row.

    One validation pass per column (Arrow's, in C++); only a column that fails it is read cell
    by cell.
    """
    undecodable: dict[int, list[FieldError]] = {}
    columns = []
    for name, column in zip(table.column_names, table.columns, strict=True):
        if pa.types.is_string(column.type) or pa.types.is_large_string(column.type):
            try:
                column.validate(full=True)
            except pa.ArrowInvalid:
                column, bad = _null_undecodable(column)
                for row in np.flatnonzero(bad).tolist():
                    undecodable.setdefault(row, []).append(_not_utf8(name))
        columns.append(column)
    if not undecodable:
        return table, undecodable
    return pa.table(columns, names=table.column_names), undecodable


def _not_utf8(name: str) -> FieldError:
    return FieldError(name, "is not UTF-8 text", allowed="UTF-8 encoded text", code="not_utf8")


def _null_undecodable(column: Any) -> tuple[Any, Any]:
    """The column with its non-UTF-8 cells null, and a mask of those cells."""
    large = pa.types.is_large_string(column.type)
    as_bytes = column.cast(pa.large_binary() if large else pa.binary())
    values = as_bytes.to_pylist()
    bad = np.zeros(len(values), dtype=bool)
    for i, value in enumerate(values):
        if value is not None:
            try:
                value.decode("utf-8")
            except UnicodeDecodeError:
                bad[i] = True
    fixed = pc.if_else(pa.array(bad), pa.scalar(None, as_bytes.type), as_bytes)
    return fixed.cast(column.type), bad


def write_ipc(table: Any, path: Path) -> None:
    """An Arrow IPC file, written under a temporary name and renamed (a part is whole or absent)."""
    tmp = path.with_name(path.name + ".tmp")
    with pa.OSFile(str(tmp), "wb") as sink, pa.ipc.new_file(sink, table.schema) as writer:
        writer.write_table(table)
    os.replace(tmp, path)


def read_ipc(path: Path) -> Any:
    with pa.memory_map(str(path), "r") as source:
        return pa.ipc.open_file(source).read_all()


class TableWriter:
    """Writes tables to a CSV or Parquet file under a temporary name; ``commit`` renames it."""

    def __init__(self, path: Path, schema: Any) -> None:
        self.path = path
        self.tmp = path.with_name(f".{path.name}.{os.getpid()}.tmp")
        self.path.parent.mkdir(parents=True, exist_ok=True)
        self.schema = schema
        self._writer: Any
        if file_format(path) == "parquet":
            self._writer = _parquet().ParquetWriter(str(self.tmp), schema)
        else:
            self._writer = pacsv.CSVWriter(str(self.tmp), schema)

    def write(self, table: Any) -> None:
        self._writer.write_table(table.cast(self.schema))

    def commit(self) -> None:
        self._writer.close()
        os.replace(self.tmp, self.path)

    def abort(self) -> None:
        try:
            self._writer.close()
        finally:
            self.tmp.unlink(missing_ok=True)


def stale_temporaries(output: Path) -> list[Path]:
    """Temporary files left by a run killed while assembling OUTPUT (it never renamed them)."""
    return [
        *output.parent.glob(f".{output.name}.*.tmp"),
        *output.parent.glob(f".{rejects_path(output).name}.*.tmp"),
    ]
