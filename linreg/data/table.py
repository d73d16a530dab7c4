"""Reading a table of numeric columns through Arrow, with one-line errors that point at the bad cell.

A table is a CSV file (``.csv``, or gzipped ``.csv.gz``), a Parquet file, or a directory of Parquet files
(a data set as Spark, DuckDB or pandas write it: every file below it, in path order; names starting with
``_`` or ``.``, such as ``_SUCCESS``, are skipped; links are refused, not followed; partition keys in
directory names are not columns; see ``linreg.data.files``). Plain functions, no Lightning.

A table is read in **pieces**: each row group of each Parquet file, or a whole CSV file, their rows
counted as read (never taken from metadata). ``read_piece`` reads one, whether the table is streamed
(``linreg.data.stream``) or read whole (``read_table``). Every problem is a ``UserInputError``, one line
naming the file and, where known, the line of a CSV file (the header being line 1) or the row of a
Parquet file (from 0) and the column: a bad cell (``linreg.data.cells``), or what Arrow or the OS said.
"""

from __future__ import annotations

from collections import Counter
from collections.abc import Iterator, Sequence
from dataclasses import dataclass, field, replace
from functools import cached_property
from pathlib import Path

import numpy as np
import pyarrow as pa
import pyarrow.csv as pa_csv
import pyarrow.parquet as pq
import torch
from torch import Tensor

from linreg.data.cells import as_floats, first_bad_cell
from linreg.data.csv_text import arrow_options, diagnose, read_csv_header, record_lines
from linreg.data.files import Version, is_parquet, one_line, open_input, parquet_files, reading, version
from linreg.validation import UserInputError

BATCH_ROWS = 65_536  # rows per record batch read from disk ...
BATCH_VALUES = 1 << 22  # ... fewer for many columns: a batch holds at most this many values (32 MiB as float64)


@dataclass
class Table:
    """Numeric columns read from a table.

    Attributes:
        columns: column name -> values, shape ``(n,)``: float32 where the file stores float32 (exact),
            else float64. An optional column missing from the
            file is missing here too; blank cells of an optional column are NaN.
        path: the file or directory read.
        is_csv: a CSV file (rows located by line) or Parquet (rows located by position).
    """

    columns: dict[str, Tensor]
    path: str
    is_csv: bool
    _width: int = field(default=0, repr=False)  # columns of the CSV header

    def __len__(self) -> int:
        return next(iter(self.columns.values())).numel()

    @property
    def position_name(self) -> str:
        """What ``positions`` counts: ``line`` (of a CSV file) or ``row`` (of a Parquet data set, from 0)."""
        return "line" if self.is_csv else "row"

    @cached_property
    def positions(self) -> Tensor:
        """Where each row is in the input, int64 ``(n,)``: its line in a CSV file (read again, when first
        asked), or its position in the Parquet data set, files in path order."""
        return record_lines(self.path, self._width) if self.is_csv else torch.arange(len(self), dtype=torch.int64)


def read_header(path: str | Path) -> list[str]:
    """The column names of ``path``: the first line of a CSV file, the schema of Parquet.

    Raises:
        UserInputError: if the file is missing or unreadable, empty, or its header names a column twice
            or leaves a column unnamed; or the Parquet files of a directory disagree on their columns.

    Example:
        >>> import tempfile, os
        >>> f = tempfile.NamedTemporaryFile("w", suffix=".csv", delete=False)
        >>> _ = f.write('\\ufeff "x 1" , y\\n1,2\\n'); f.close()
        >>> read_header(f.name)
        ['x 1', 'y']
        >>> os.remove(f.name)
    """
    if not is_parquet(path):
        return _checked_names(path, read_csv_header(path)[0])
    files = parquet_files(path)
    names = _checked_names(files[0][0], files[0][1].schema.to_arrow_schema().names)
    for file, metadata in files[1:]:
        if (other := metadata.schema.to_arrow_schema().names) != names:
            raise UserInputError(f"{file}: has the columns {other}, {files[0][0]} has {names}; a data set needs one")
    return names


def _checked_names(path: str | Path, names: list[str]) -> list[str]:
    first: dict[str, int] = {}  # name -> its column: one pass, however many columns
    for i, name in enumerate(names):
        if not name:
            raise UserInputError(f"{path}: column {i + 1} has no name; name it or remove it")
        if name in first:
            raise UserInputError(f"{path}: names column {name!r} twice (columns {first[name] + 1} and {i + 1})")
        first[name] = i
    return names


def select_columns(path: str | Path, header: Sequence[str], target: str, features: Sequence[str] | None) -> list[str]:
    """The feature columns: ``features`` if given, else every column of ``header`` but ``target``.

    Raises:
        UserInputError: if ``target`` or a feature is not in ``header`` (the message lists the columns
            there are), a feature is listed twice or is the target, or no feature is left.
    """
    require_columns(path, header, [target], "target")
    if features is None:
        features = [name for name in header if name != target]
        if not features:
            raise UserInputError(f"{path}: the only column is the target {target!r}; there are no features")
        return features
    features = list(features)
    if not features:
        raise UserInputError("features must name at least one column, got []")
    if target in features:
        raise UserInputError(f"features lists the target column {target!r}; a column cannot predict itself")
    twice = sorted(name for name, count in Counter(features).items() if count > 1)
    if twice:
        raise UserInputError(f"features lists {', '.join(map(repr, twice))} more than once")
    require_columns(path, header, features, "features")
    return features


def require_columns(path: str | Path, header: Sequence[str], names: Sequence[str], key: str = "") -> None:
    """Raises if a name of ``names`` is not in ``header``, listing the columns there are."""
    present = set(header)
    missing = [name for name in names if name not in present]
    if missing:
        asked_by = f" ({key})" if key else ""
        raise UserInputError(
            f"{path}: no column {missing[0]!r}{asked_by}; the columns are {', '.join(map(repr, header))}"
        )


@dataclass(frozen=True)
class Piece:
    """Rows read in one go: a row group of a Parquet file, or a whole CSV file (``row_group`` None)."""

    path: str
    row_group: int | None
    first_row: int  # position of its first row in the table
    first_row_in_file: int
    rows: int | None = None  # counted as read (None: not counted)
    # The file's footer, parsed once: re-read for every row group, a file of thousands of them takes minutes a pass.
    metadata: pq.FileMetaData | None = field(default=None, compare=False, repr=False)
    version: Version | None = None  # the file's when the pieces were found; a later read refuses another


def pieces(path: str | Path, count: str | None = None) -> list[Piece]:
    """The pieces of the table at ``path``, in table order.

    Their rows are counted by reading the column ``count`` (a split is planned on them, and every later
    read must find as many); without it, Parquet's metadata places them, only to name rows in messages.
    """
    if not is_parquet(path):
        piece = Piece(str(path), None, 0, 0, version=version(path))
        return [replace(piece, rows=_count(piece, count)) if count else piece]
    result, start = [], 0
    for file, metadata in parquet_files(path):
        in_file, found = 0, version(file)
        for group in range(metadata.num_row_groups):
            piece = Piece(file, group, start + in_file, in_file, metadata=metadata, version=found)
            rows = _count(piece, count) if count else metadata.row_group(group).num_rows
            result.append(replace(piece, rows=rows) if count else piece)
            in_file += rows
        start += in_file
    return result


def _count(piece: Piece, column: str) -> int:
    """The rows of ``piece``, as read (of one column, as text: its cells are checked later)."""
    return sum(batch.num_rows for batch in _record_batches(piece, [column], [column]))


def read_piece(
    piece: Piece, names: Sequence[str], blank_ok: Sequence[str] = ()
) -> Iterator[tuple[int, list[np.ndarray]]]:
    """The rows of ``piece`` as ``(table position of the first, one float array per name)`` record batches, checked.

    The arrays are read-only views of Arrow's buffers where the column is float32 or float64 (no copy).
    Blank cells of a column of ``blank_ok`` are NaN.

    Raises:
        UserInputError: naming the file, line or row, and column of the first cell that is not a finite
            number; or the file, if it cannot be read, or its rows are not those counted.
    """
    position = piece.first_row
    for batch in _record_batches(piece, names, blank_ok):
        columns = [as_floats(batch.column(i), name in blank_ok) for i, name in enumerate(names)]
        if any(column is None for column in columns):  # found fast; named by the slower path
            raise _bad_batch(piece, names, blank_ok, batch, position - piece.first_row + piece.first_row_in_file)
        yield position, columns  # type: ignore[misc]
        position += batch.num_rows
    if piece.rows is not None and position - piece.first_row != piece.rows:
        where = "" if piece.row_group is None else f"row group {piece.row_group}: "
        raise UserInputError(
            f"{piece.path}: {where}{position - piece.first_row} rows read, {piece.rows} when counted;"
            " the file has changed, or its metadata is wrong"
        )


def _record_batches(piece: Piece, names: Sequence[str], blank_ok: Sequence[str]) -> Iterator[pa.RecordBatch]:
    """The columns ``names`` of ``piece`` as Arrow reads them (CSV cells as float64, or as text if ``blank_ok``)."""
    with reading(piece.path):
        if piece.row_group is not None:
            with open_input(piece.path, seekable=True, expected=piece.version) as source:
                # A page whose checksum does not match (where the writer recorded one) is refused, not read as zeros.
                parquet = pq.ParquetFile(source, metadata=piece.metadata, page_checksum_verification=True)
                rows = max(1, min(BATCH_ROWS, BATCH_VALUES // len(names)))
                yield from parquet.iter_batches(rows, row_groups=[piece.row_group], columns=list(names))
            return
        header, header_lines = read_csv_header(piece.path)
        read, parse, convert = arrow_options(header, header_lines, names, as_text=bool(blank_ok))
        try:
            with (
                open_input(piece.path, expected=piece.version) as source,
                pa_csv.open_csv(source, read, parse, convert) as reader,
            ):
                for batch in reader:
                    yield batch.select(list(names))
        except (pa.ArrowInvalid, UnicodeDecodeError) as exc:  # a row Arrow cannot parse: named by its line
            message = diagnose(piece.path, header, names, blank_ok)
            raise UserInputError(message or f"{piece.path}: cannot be read ({one_line(exc)})") from None


def _bad_batch(
    piece: Piece, names: Sequence[str], blank_ok: Sequence[str], batch: pa.RecordBatch, row_in_file: int
) -> UserInputError:
    if piece.row_group is None:  # a CSV file: name the line
        header = read_csv_header(piece.path)[0]
        message = diagnose(piece.path, header, names, blank_ok)
        return UserInputError(message or f"{piece.path}: a value that is not a finite number could not be located")
    bad = first_bad_cell({name: batch.column(i) for i, name in enumerate(names)}, blank_ok)
    assert bad is not None
    return UserInputError(f"{piece.path}: row {row_in_file + bad.row}, column {bad.column!r}: {bad.reason}")


def read_table(path: str | Path, required: Sequence[str], optional: Sequence[str] = ()) -> Table:
    """Reads the ``required`` columns (every cell a finite number) and those of ``optional`` present.

    Blank cells of an ``optional`` column are allowed (they become NaN): a file of new rows to predict
    may leave the target empty. Blank lines of a CSV file are skipped.

    Raises:
        UserInputError: naming the file, line or row, and column of the first bad cell or row.

    Example:
        >>> import tempfile, os
        >>> f = tempfile.NamedTemporaryFile("w", suffix=".csv", delete=False)
        >>> _ = f.write("a,b\\n1, 2\\n3,4\\n"); f.close()
        >>> table = read_table(f.name, ["b"])
        >>> table.columns["b"].tolist(), table.positions.tolist()
        ([2.0, 4.0], [2, 3])
        >>> os.remove(f.name)
    """
    header = read_header(path)
    require_columns(path, header, required)
    names = [*required, *(name for name in optional if name in header)]
    parts: list[list[np.ndarray]] = [[] for _ in names]
    for piece in pieces(path):
        for _, columns in read_piece(piece, names, blank_ok=names[len(required) :]):
            for part, column in zip(parts, columns, strict=True):
                part.append(column)
    if not sum(len(column) for column in parts[0]):
        raise UserInputError(f"{path}: the header is there but there are no data rows")
    columns = {name: torch.from_numpy(np.concatenate(part)) for name, part in zip(names, parts, strict=True)}
    return Table(columns, str(path), not is_parquet(path), len(header))
