"""Reading a table (CSV, CSV.gz, Parquet file or directory) through Arrow into float arrays, with one-line errors.

A table is read in pieces (each row group of each Parquet file, or a whole CSV file), rows counted as read, never
taken from metadata. Every record batch goes through ``as_floats``, so CSV and Parquet accept and refuse the same
cells with the same words, naming the file, the CSV line (header = 1) or Parquet row (from 0), and the column.

Arrow parses the rows (far faster than Python's ``csv``) but counts no lines, so Python's ``csv`` module reads the
header and, only when needed, walks the records to give lines: a bad row's (``diagnose``), or ``predictions.csv``'s.
"""

from __future__ import annotations

import bisect
import csv
import io
from collections import Counter
from collections.abc import Iterator, Mapping, Sequence
from contextlib import closing
from dataclasses import dataclass, field, replace
from functools import cached_property, partial
from operator import itemgetter
from pathlib import Path
from typing import TextIO

import numpy as np
import pyarrow as pa
import pyarrow.compute as pc
import pyarrow.csv as pa_csv
import pyarrow.parquet as pq
import torch
from torch import Tensor

from linreg.data.sources import (
    Version,
    is_parquet,
    is_remote,
    one_line,
    open_input,
    parquet_files,
    reading,
    shown,
    version,
    where,
)
from linreg.validation import UserInputError

BATCH_ROWS = 65_536  # rows per record batch read from disk ...
BATCH_VALUES = 1 << 22  # ... fewer for many columns: a batch holds at most this many values (32 MiB as float64)
CHUNK_ROWS = 65_536  # rows whose cells are checked at a time when a CSV file is diagnosed
BLOCK_BYTES = 16 << 20  # bytes Arrow parses per block (one thread each); a row must fit in one
# A longer line would not fit Arrow's block either: refused before it is held, so memory is this, not the file's size.
MAX_LINE_CHARS = BLOCK_BYTES


@dataclass
class Table:
    """Numeric columns (name -> ``(n,)``, float32 where the file stores float32, else float64) read from ``path``."""

    columns: dict[str, Tensor]
    path: str
    position_name: str  # what `positions` counts: "line" (of a CSV file) or "row" (of a Parquet data set, from 0)

    def __len__(self) -> int:
        return next(iter(self.columns.values())).numel()

    @cached_property
    def positions(self) -> Tensor:
        """Each row's CSV line (read again when first asked) or Parquet position, int64 ``(n,)``."""
        return record_lines(self.path) if self.position_name == "line" else torch.arange(len(self), dtype=torch.int64)


def read_header(path: str | Path) -> list[str]:
    """The column names of ``path``: the first line of a CSV file (quoted, padded, after a BOM), Parquet's schema.

    Raises:
        UserInputError: the file is missing, unreadable or empty, its header names a column twice or leaves
            one unnamed, or the Parquet files of a directory disagree on their columns.
    """
    if not is_parquet(path):
        source, names = path, read_csv_header(path)[0]
    else:
        files = parquet_files(path)
        source, names = files[0][0], files[0][1].schema.to_arrow_schema().names
        for file, metadata in files[1:]:
            if (other := metadata.schema.to_arrow_schema().names) != names:
                raise UserInputError(f"{file}: has the columns {other}, {source} has {names}; a data set needs one")
    first: dict[str, int] = {}  # name -> its column: one pass, however many columns
    for i, name in enumerate(names):
        if not name:
            raise UserInputError(f"{source}: column {i + 1} has no name; name it or remove it")
        if name in first:
            raise UserInputError(f"{source}: names column {name!r} twice (columns {first[name] + 1} and {i + 1})")
        first[name] = i
    return names


def select_columns(path: str | Path, header: Sequence[str], target: str, features: Sequence[str] | None) -> list[str]:
    """The feature columns: ``features`` if given, else every column of ``header`` but ``target``.

    Raises:
        UserInputError: ``target`` or a feature is not in ``header`` (the message lists the columns there are),
            a feature is listed twice or is the target, or no feature is left.
    """
    require_columns(path, header, [target], "target")
    if features is None:
        if not (features := [name for name in header if name != target]):
            raise UserInputError(f"{path}: the only column is the target {target!r}; there are no features")
        return features
    if not (features := list(features)):
        raise UserInputError("features must name at least one column, got []")
    if target in features:
        raise UserInputError(f"features lists the target column {target!r}; a column cannot predict itself")
    if twice := sorted(name for name, count in Counter(features).items() if count > 1):
        raise UserInputError(f"features lists {', '.join(map(repr, twice))} more than once")
    require_columns(path, header, features, "features")
    return features


def require_columns(path: str | Path, header: Sequence[str], names: Sequence[str], key: str = "") -> None:
    """Raises if a name of ``names`` is not in ``header``, listing the columns there are."""
    present = set(header)
    if missing := [name for name in names if name not in present]:
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


def pieces(path: str | Path, count: Sequence[str] = ()) -> list[Piece]:
    """The pieces of ``path`` in table order; rows counted by reading the first of the columns ``count`` (a row
    Arrow cannot parse is named as a read of them all would name it), else from Parquet's metadata."""
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


def _count(piece: Piece, names: Sequence[str]) -> int:
    """The rows of ``piece``, as read (of its first column, as text: the cells are checked later)."""
    return sum(batch.num_rows for batch in _record_batches(piece, names[:1], names[:1], diagnosed=names))


def read_piece(
    piece: Piece, names: Sequence[str], blank_ok: Sequence[str] = ()
) -> Iterator[tuple[int, list[np.ndarray]]]:
    """Checked record batches of ``piece``: ``(table position of the first row, one float array per name)``.

    Raises:
        UserInputError: naming the file, line or row, and column of the first cell that is not a finite number;
            or the file, if it cannot be read or its rows are not those counted.
    """
    position = piece.first_row
    for batch in _record_batches(piece, names, blank_ok):
        columns = [as_floats(batch.column(i), name in blank_ok) for i, name in enumerate(names)]
        if any(column is None for column in columns):  # found fast; named by the slower path
            raise _bad_batch(piece, names, blank_ok, batch, position - piece.first_row + piece.first_row_in_file)
        yield position, columns  # type: ignore[misc]
        position += batch.num_rows
    if piece.rows is not None and position - piece.first_row != piece.rows:
        where_ = "" if piece.row_group is None else f"row group {piece.row_group}: "
        raise UserInputError(
            f"{piece.path}: {where_}{position - piece.first_row} rows read, {piece.rows} when counted;"
            " the file has changed, or its metadata is wrong"
        )


def _record_batches(
    piece: Piece, names: Sequence[str], blank_ok: Sequence[str], diagnosed: Sequence[str] = ()
) -> Iterator[pa.RecordBatch]:
    """The columns ``names`` of ``piece`` as Arrow reads them (CSV cells as float64, or as text if ``blank_ok``).

    A CSV row Arrow cannot parse is diagnosed over the columns ``diagnosed`` (none blank) where given: the first
    bad cell of any of them, on an earlier line, comes before a short row.
    """
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
            message = diagnose(piece.path, diagnosed, ()) if diagnosed else diagnose(piece.path, names, blank_ok)
            raise UserInputError(message or f"{piece.path}: cannot be read ({one_line(exc)})") from None


def _bad_batch(
    piece: Piece, names: Sequence[str], blank_ok: Sequence[str], batch: pa.RecordBatch, row_in_file: int
) -> UserInputError:
    if piece.row_group is None:  # a CSV file: name the line
        message = diagnose(piece.path, names, blank_ok)
        return UserInputError(message or f"{piece.path}: a value that is not a finite number could not be located")
    bad = first_bad_cell({name: batch.column(i) for i, name in enumerate(names)}, blank_ok)
    assert bad is not None
    return UserInputError(f"{piece.path}: row {row_in_file + bad.row}, column {bad.column!r}: {bad.reason}")


def read_table(path: str | Path, required: Sequence[str], optional: Sequence[str] = ()) -> Table:
    """Reads the ``required`` columns and those of ``optional`` present (blank cells there are NaN).

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
    batches = [columns for piece in pieces(path) for _, columns in read_piece(piece, names, names[len(required) :])]
    if not sum(len(columns[0]) for columns in batches):
        raise UserInputError(f"{path}: the header is there but there are no data rows")
    columns = {name: torch.from_numpy(np.concatenate([batch[j] for batch in batches])) for j, name in enumerate(names)}
    return Table(columns, str(path), "row" if is_parquet(path) else "line")


# CSV text: the header, Arrow's options, and lines named by Python's csv module.


def read_csv_header(path: str | Path) -> tuple[list[str], int]:
    """The column names on the first non-blank record (stripped of spaces), and the lines up to its end."""
    with closing(_records(path)) as records:
        if (first := next(records, None)) is None:
            raise UserInputError(f"{path}: the file is empty; expected a header line naming the columns")
        return [name.strip() for name in first[2]], first[1]


def arrow_options(
    header: Sequence[str], header_lines: int, names: Sequence[str], as_text: bool = False
) -> tuple[pa_csv.ReadOptions, pa_csv.ParseOptions, pa_csv.ConvertOptions]:
    """Options of ``pyarrow.csv`` for the data rows: ``names`` as float64 (or as text), no ``NA``/``null`` guessed."""
    read = pa_csv.ReadOptions(column_names=list(header), skip_rows=header_lines, block_size=BLOCK_BYTES)
    width = len(header)
    # A line of spaces is blank to the header reader and to `diagnose`; Arrow sees a short row. Skip it alike.
    parse = pa_csv.ParseOptions(
        invalid_row_handler=lambda row: "skip" if width > 1 and not row.text.strip() else "error"
    )
    convert = pa_csv.ConvertOptions(
        include_columns=list(names),
        column_types={name: pa.string() if as_text else pa.float64() for name in names},
        null_values=[],
        strings_can_be_null=False,
        quoted_strings_can_be_null=False,
    )
    return read, parse, convert


def diagnose(path: str | Path, names: Sequence[str], blank_ok: Sequence[str]) -> str | None:
    """The first bad row or cell of the data rows, named by its line; None if Python finds none."""
    rows: list[tuple[str, ...]] = []
    lines: list[int] = []
    problem = None  # with the row or line that stops the walk; an earlier bad cell comes first
    try:
        with closing(_records(path)) as records:
            header = [name.strip() for name in next(records)[2]]
            index = {name: i for i, name in reversed(list(enumerate(header)))}  # first occurrence, in one pass
            pick = itemgetter(*(index[name] for name in names))
            for line, _, row in records:
                if len(row) != len(header):
                    problem = f"{path}: line {line} has {len(row)} fields, the header has {len(header)}"
                    break
                rows.append(pick(row) if len(names) > 1 else (pick(row),))
                lines.append(line)
                if len(rows) == CHUNK_ROWS:
                    if message := _bad_cell(path, names, rows, lines, blank_ok):
                        return message
                    rows, lines = [], []
    except UserInputError as error:
        problem = str(error)
    return _bad_cell(path, names, rows, lines, blank_ok) or problem


def record_lines(path: str | Path) -> Tensor:
    """The line each data row of the file starts on (the header being line 1 or later), int64 ``(n,)``."""
    with closing(_records(path)) as records:
        next(records)  # the header
        return torch.tensor([line for line, _, _ in records], dtype=torch.int64)


def _bad_cell(
    path: str | Path, names: Sequence[str], rows: list[tuple[str, ...]], lines: list[int], blank_ok: Sequence[str]
) -> str | None:
    if not rows:
        return None
    columns = {name: pa.array(cells, pa.string()) for name, cells in zip(names, zip(*rows, strict=True), strict=True)}
    bad = first_bad_cell(columns, blank_ok)
    return None if bad is None else f"{path}: line {lines[bad.row]}, column {bad.column!r}: {bad.reason}"


def _records(path: str | Path) -> Iterator[tuple[int, int, list[str]]]:
    """``(first line, last line, fields)`` of each non-blank record (as Arrow skips them), the header first."""
    width = 0  # the header's, once read: in a table of one column, a line of spaces is a row
    # newline="" lets the csv module see CRLF and line breaks inside quoted cells itself.
    with reading(path), io.TextIOWrapper(open_input(path), encoding="utf-8-sig", newline="") as file:
        reader = csv.reader(_bounded_lines(file, path), skipinitialspace=True)
        last_line = 0
        try:
            for row in reader:
                start, last_line = last_line + 1, reader.line_num
                if row and not (len(row) == 1 and not row[0].strip() and width != 1):
                    width = width or len(row)
                    yield start, last_line, row
        except UnicodeDecodeError as exc:
            if is_remote(path):  # a store (or what answers at its endpoint) that sent something else
                raise UserInputError(
                    f"{shown(path)}: the store's answer{where(path)} could not be read as a table"
                    f" (not UTF-8 text: {exc.reason})"
                ) from None
            # The decoder reads ahead of the csv module; find the line by decoding line by line (a rare path).
            raise UserInputError(
                f"{path}: line {_first_non_utf8_line(path)} is not UTF-8 text ({exc.reason})"
            ) from None
        except csv.Error as exc:
            raise UserInputError(f"{path}: line {last_line + 1}: {exc}") from exc


def _bounded_lines(file: TextIO, path: str | Path) -> Iterator[str]:
    """The lines of ``file``, each read up to ``MAX_LINE_CHARS``: a longer one is refused by its number."""
    for number, line in enumerate(iter(partial(file.readline, MAX_LINE_CHARS + 1), ""), start=1):
        if len(line) > MAX_LINE_CHARS:
            raise UserInputError(
                f"{path}: line {number} is longer than {MAX_LINE_CHARS} characters (is it a text file with line"
                " breaks?); a line of a CSV file, the header included, must be shorter"
            )
        yield line


def _first_non_utf8_line(path: str | Path) -> int:
    with io.BufferedReader(open_input(path)) as file:
        for number, line in enumerate(file, start=1):
            try:
                line.decode("utf-8")
            except UnicodeDecodeError:
                return number
    return 0


# Cells: text is parsed with Arrow's own cast after trimming spaces, so the checks agree with the fast path.


@dataclass(frozen=True)
class BadCell:
    """The first cell that is not a finite number: its row (from 0 in the arrays given), column, and why."""

    row: int
    column: str
    reason: str


def as_floats(column: pa.Array, blank_ok: bool = False) -> np.ndarray | None:
    """``column`` as numpy (float32/float64 kept, zero-copy), or None if a cell is empty, not a number or not finite.

    Example:
        >>> as_floats(pa.array([1, 2])).tolist(), as_floats(pa.array(["1", " x"]))
        ([1.0, 2.0], None)
    """
    if not (pa.types.is_float32(column.type) or pa.types.is_float64(column.type)):
        try:
            column = _parse(column)
        except (pa.ArrowInvalid, pa.ArrowNotImplementedError):
            return None
    if column.null_count and not blank_ok:
        return None
    values = column.to_numpy(zero_copy_only=False)  # NaN where a cell is empty
    if column.null_count:  # blank_ok: NaN where a cell is empty, finite numbers elsewhere
        finite = np.isfinite(values) | column.is_null().to_numpy(zero_copy_only=False)
        return values if finite.all() else None
    # One pass without a temporary where it can: a NaN or an infinity makes the float64 sum non-finite, and finite
    # float32 values cannot overflow it; only float64 values near the largest can, and then each is checked.
    return values if np.isfinite(values.sum(dtype=np.float64)) or np.isfinite(values).all() else None


def first_bad_cell(columns: Mapping[str, pa.Array | pa.ChunkedArray], blank_ok: Sequence[str] = ()) -> BadCell | None:
    """The first cell, by row and then by column in ``columns``' order, that ``as_floats`` would refuse.

    Example:
        >>> first_bad_cell({"a": pa.array(["1", "2", ""]), "b": pa.array(["1", "inf", "x"])})
        BadCell(row=1, column='b', reason="'inf' is not a finite number")
    """
    found = [bad for name, column in columns.items() if (bad := _first_bad(name, column, name in blank_ok))]
    return min(found, key=lambda bad: bad.row, default=None)  # of a row, the first column: min keeps the first


def _is_text(column: pa.Array | pa.ChunkedArray) -> bool:
    return pa.types.is_string(column.type) or pa.types.is_large_string(column.type)


def _blank_as_null(text: pa.Array | pa.ChunkedArray) -> pa.Array | pa.ChunkedArray:
    """Text trimmed of spaces, a blank cell counted as an empty one (null)."""
    text = pc.utf8_trim_whitespace(text)
    return pc.if_else(pc.equal(text, ""), pa.scalar(None, text.type), text)


def _parse(column: pa.Array | pa.ChunkedArray) -> pa.Array | pa.ChunkedArray:
    """float64 values (empty cells null, integers rounded as a CSV file's); raises ArrowInvalid on text."""
    column = _blank_as_null(column) if _is_text(column) else column
    return pc.cast(column, pa.float64(), safe=not pa.types.is_integer(column.type))


def _first_bad(name: str, column: pa.Array | pa.ChunkedArray, blank_ok: bool) -> BadCell | None:
    column = column.combine_chunks() if isinstance(column, pa.ChunkedArray) else column
    unparsable = None
    if _is_text(column):
        numbers = _blank_as_null(column)  # empty cells are judged apart
        empty, unparsable = numbers.is_null(), _first_unparsable(numbers)
        # Only the rows before the first unparsable one are checked for infinities.
        values = pc.cast(numbers.slice(0, len(column) if unparsable is None else unparsable), pa.float64())
    else:
        try:
            values = _parse(column)
        except (pa.ArrowInvalid, pa.ArrowNotImplementedError):
            return BadCell(0, name, f"the column holds {column.type} values, not numbers") if len(column) else None
        empty = column.is_null()
    found = []
    if not blank_ok and (row := _first_true(empty)) is not None:
        found.append(BadCell(row, name, "the cell is empty"))
    if unparsable is not None:
        found.append(BadCell(unparsable, name, f"{_show(column[unparsable])} is not a number"))
    if (row := _first_true(pc.invert(pc.fill_null(pc.is_finite(values), True)))) is not None:
        found.append(BadCell(row, name, f"{_show(column[row])} is not a finite number"))
    return min(found, key=lambda bad: bad.row, default=None)


def _first_unparsable(numbers: pa.Array) -> int | None:
    """The first row of text (nulls skipped) that Arrow cannot cast to float64, found by bisecting prefixes."""

    def fails(stop: int) -> bool:
        try:
            pc.cast(numbers.slice(0, stop), pa.float64())
        except pa.ArrowInvalid:
            return True
        return False

    stop = bisect.bisect_left(range(len(numbers) + 1), True, key=fails)  # the shortest prefix that fails
    return None if stop > len(numbers) else stop - 1


def _first_true(mask: pa.Array) -> int | None:
    index = pc.index(mask, True).as_py()
    return None if index < 0 else index


def _show(value: pa.Scalar) -> str:
    """A cell as a message quotes it: text stripped and quoted (``'n/a'``), a stored number as written (``nan``)."""
    python = value.as_py()
    return repr(python.strip()) if isinstance(python, str) else repr(python) if python is not None else "null"
