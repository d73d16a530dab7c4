"""CSV files (plain or ``.gz``) for ``linreg.data.table``: Arrow's reader options, the header, and line numbers.

Arrow reads the rows (``pyarrow.csv``, multi-threaded, far faster than Python's ``csv`` module with a
``float`` per cell). It does not count lines, and an error of its conversion names a column but not a
line, so two things are done by Python's ``csv`` module, which counts lines as an editor does (a quoted
cell may span lines, blank lines count), and only when needed:

- the header (one record): names may be quoted, padded with spaces, or follow a BOM;
- no line is held longer than ``MAX_LINE_CHARS`` (``bounded_lines``): a file without line breaks is
  refused, not read whole;
- when Arrow refuses the file, or a value is not finite, ``diagnose`` walks the records to name the
  first bad row or cell by its line; and ``record_lines`` gives each row's line for ``predictions.csv``.
"""

from __future__ import annotations

import csv
import io
from collections.abc import Iterator, Sequence
from operator import itemgetter
from pathlib import Path
from typing import TextIO

import pyarrow as pa
import pyarrow.csv as pa_csv
import torch
from torch import Tensor

from linreg.data import storage
from linreg.data.cells import first_bad_cell
from linreg.data.files import READ_ERRORS, one_line, open_input
from linreg.validation import UserInputError

CHUNK_ROWS = 65_536  # rows whose cells are checked at a time when a file is diagnosed
BLOCK_BYTES = 16 << 20  # bytes Arrow parses per block (one thread each); a row must fit in one
# A longer line (the header included) would not fit Arrow's block either; it is refused before it is held whole,
# so a file of gigabytes with no line break costs this much memory, not its size.
MAX_LINE_CHARS = BLOCK_BYTES


def open_text(path: str | Path) -> TextIO:
    """``path`` as UTF-8 text (a BOM dropped; gunzipped if it ends in ``.gz``)."""
    # newline="" lets the csv module see CRLF and line breaks inside quoted cells itself.
    return io.TextIOWrapper(open_input(path), encoding="utf-8-sig", newline="")  # closed by the caller's `with`


def bounded_lines(file: TextIO, path: str | Path) -> Iterator[str]:
    """The lines of ``file``, each read up to ``MAX_LINE_CHARS``: a longer one is refused by its number."""
    number = 0
    while line := file.readline(MAX_LINE_CHARS + 1):
        number += 1
        if len(line) > MAX_LINE_CHARS:
            raise UserInputError(
                f"{path}: line {number} is longer than {MAX_LINE_CHARS} characters (is it a text file with line"
                " breaks?); a line of a CSV file, the header included, must be shorter"
            )
        yield line


def read_csv_header(path: str | Path) -> tuple[list[str], int]:
    """The column names on the first non-blank line (stripped of spaces), and the lines up to the header's end.

    ``linreg.data.table.read_header`` checks the names.
    """
    with open_text(path) as file:
        reader = csv.reader(bounded_lines(file, path), skipinitialspace=True)
        first = next(_records(reader, path, width=0), None)
        if first is None:
            raise UserInputError(f"{path}: the file is empty; expected a header line naming the columns")
        return [name.strip() for name in first[1]], reader.line_num


def arrow_options(
    header: Sequence[str], header_lines: int, names: Sequence[str], as_text: bool = False
) -> tuple[pa_csv.ReadOptions, pa_csv.ParseOptions, pa_csv.ConvertOptions]:
    """Options of ``pyarrow.csv`` for the data rows: ``names`` as float64 (or as text), no guessed nulls.

    Arrow would read ``NA``, ``null`` or a blank cell as a missing value and ``nan`` as NaN; here only
    what parses as a number is one, and the checks that follow refuse blanks, text and non-finite values.
    """
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


def diagnose(path: str | Path, header: Sequence[str], names: Sequence[str], blank_ok: Sequence[str]) -> str | None:
    """The first problem of the data rows, by line, as a one-line message; None if Python finds none.

    A row with the wrong number of fields, text that is not UTF-8, or a cell of ``names`` that is empty
    (unless in ``blank_ok``), not a number, or not finite.
    """
    index = {name: i for i, name in reversed(list(enumerate(header)))}  # first occurrence; a dict, not list.index
    pick = itemgetter(*(index[name] for name in names))
    rows: list[tuple[str, ...]] = []
    lines: list[int] = []
    try:
        with open_text(path) as file:
            reader = csv.reader(bounded_lines(file, path), skipinitialspace=True)
            next(_records(reader, path, width=0))  # the header
            for line, row in _records(reader, path, len(header)):
                if len(row) != len(header):  # an earlier bad cell comes first
                    return _bad_cell(path, names, rows, lines, blank_ok) or (
                        f"{path}: line {line} has {len(row)} fields, the header has {len(header)}"
                    )
                rows.append(pick(row) if len(names) > 1 else (pick(row),))
                lines.append(line)
                if len(rows) == CHUNK_ROWS:
                    if message := _bad_cell(path, names, rows, lines, blank_ok):
                        return message
                    rows, lines = [], []
    except UserInputError as error:
        return _bad_cell(path, names, rows, lines, blank_ok) or str(error)
    if not lines and not rows:
        return None
    return _bad_cell(path, names, rows, lines, blank_ok)


def record_lines(path: str | Path, width: int) -> Tensor:
    """The line each data row of the file starts on (the header being line 1 or later), int64 ``(n,)``."""
    with open_text(path) as file:
        reader = csv.reader(bounded_lines(file, path), skipinitialspace=True)
        records = _records(reader, path, width)
        next(records)  # the header
        return torch.tensor([line for line, _ in records], dtype=torch.int64)


def _bad_cell(
    path: str | Path, names: Sequence[str], rows: list[tuple[str, ...]], lines: list[int], blank_ok: Sequence[str]
) -> str | None:
    if not rows:
        return None
    columns = {name: pa.array(cells, pa.string()) for name, cells in zip(names, zip(*rows, strict=True), strict=True)}
    bad = first_bad_cell(columns, blank_ok)
    return None if bad is None else f"{path}: line {lines[bad.row]}, column {bad.column!r}: {bad.reason}"


def _records(reader: Iterator[list[str]], path: str | Path, width: int) -> Iterator[tuple[int, list[str]]]:
    """``(first line, fields)`` of each record that is not blank; decoding and quoting errors as UserInputError.

    Blank: no fields, or (in a file of ``width`` > 1 columns, as Arrow is told to skip) one field of spaces.
    """
    last_line = getattr(reader, "line_num", 0)
    try:
        for row in reader:
            start, last_line = last_line + 1, reader.line_num  # type: ignore[attr-defined]
            if row and not (len(row) == 1 and not row[0].strip() and width != 1):
                yield start, row
    except UnicodeDecodeError as exc:
        if storage.is_remote(path):  # a store (or what answers at its endpoint) that sent something else
            raise UserInputError(
                f"{storage.shown(path)}: the store's answer{storage.where(path)} could not be read as a table"
                f" (not UTF-8 text: {exc.reason})"
            ) from None
        # The decoder reads ahead of the csv module; find the line by decoding line by line (a rare path).
        raise UserInputError(f"{path}: line {_first_non_utf8_line(path)} is not UTF-8 text ({exc.reason})") from None
    except csv.Error as exc:
        raise UserInputError(f"{path}: line {last_line + 1}: {exc}") from exc
    except READ_ERRORS as exc:  # a damaged .gz file
        raise UserInputError(f"{path}: cannot be read ({one_line(exc)})") from None


def _first_non_utf8_line(path: str | Path) -> int:
    with io.BufferedReader(open_input(path)) as file:
        for number, line in enumerate(file, start=1):
            try:
                line.decode("utf-8")
            except UnicodeDecodeError:
                return number
    return 0
