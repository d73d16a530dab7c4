"""Reading a CSV file of numeric columns into tensors, with one-line errors that point at the bad cell.

Plain functions, no Lightning. Python's ``csv`` module does the parsing (quoted names, quoted cells,
CRLF line endings); a leading BOM is dropped; names and cells may carry spaces around them; columns are
found by name, in any order. Every problem is a ``UserInputError`` naming the file and, where there is
one, the line (numbered as an editor numbers it, the header being line 1) and the column.

Rows are converted a chunk at a time, one ``float`` per cell and one ``torch.tensor`` per column of the
chunk, so memory holds the strings of one chunk only; 200k rows x 10 columns (26 MB) take ~1.5 s.
"""

from __future__ import annotations

import csv
import math
from collections.abc import Callable, Iterator, Sequence
from dataclasses import dataclass
from operator import itemgetter
from pathlib import Path
from typing import TextIO

import torch
from torch import Tensor

from linreg.validation import UserInputError

CHUNK_ROWS = 65_536  # rows held as strings at a time


@dataclass(frozen=True)
class Table:
    """Numeric columns read from a CSV file.

    Attributes:
        columns: column name -> values, shape ``(n,)``, float64. An optional column missing from the
            file is missing here too; blank cells of an optional column are NaN.
        lines: the line of the file each row starts on, shape ``(n,)``, int64.
    """

    columns: dict[str, Tensor]
    lines: Tensor

    def __len__(self) -> int:
        return self.lines.numel()


def read_header(path: str | Path) -> list[str]:
    """The column names on the first line of ``path``, stripped of surrounding spaces.

    Raises:
        UserInputError: if the file is missing or unreadable, empty, or its header names a column twice
            or leaves a column unnamed.

    Example:
        >>> import tempfile, os
        >>> f = tempfile.NamedTemporaryFile("w", suffix=".csv", delete=False)
        >>> _ = f.write('\\ufeff "x 1" , y\\n1,2\\n'); f.close()
        >>> read_header(f.name)
        ['x 1', 'y']
        >>> os.remove(f.name)
    """
    with _open(path) as file:
        return _header(csv.reader(file, skipinitialspace=True), path)


def select_columns(path: str | Path, header: Sequence[str], target: str, features: Sequence[str] | None) -> list[str]:
    """The feature columns: ``features`` if given, else every column of ``header`` but ``target``.

    Raises:
        UserInputError: if ``target`` or a feature is not in ``header`` (the message lists the columns
            there are), a feature is listed twice or is the target, or no feature is left.
    """
    _require_columns(path, header, [target], "data.target")
    if features is None:
        features = [name for name in header if name != target]
        if not features:
            raise UserInputError(f"{path}: the only column is the target {target!r}; there are no features")
        return features
    features = list(features)
    if not features:
        raise UserInputError("data.features must name at least one column, got []")
    if target in features:
        raise UserInputError(f"data.features lists the target column {target!r}; a column cannot predict itself")
    twice = sorted({name for name in features if features.count(name) > 1})
    if twice:
        raise UserInputError(f"data.features lists {', '.join(map(repr, twice))} more than once")
    _require_columns(path, header, features, "data.features")
    return features


def read_table(
    path: str | Path,
    required: Sequence[str],
    optional: Sequence[str] = (),
) -> Table:
    """Reads the ``required`` columns (every cell a finite number) and those of ``optional`` present.

    Columns not asked for are not converted (they may hold text), but every row must have as many
    fields as the header. Blank lines are skipped. Blank cells of an ``optional`` column are allowed
    (they become NaN): a file of new rows to predict may leave the target empty.

    Raises:
        UserInputError: naming the file, line and column of the first bad cell or row.

    Example:
        >>> import tempfile, os
        >>> f = tempfile.NamedTemporaryFile("w", suffix=".csv", delete=False)
        >>> _ = f.write("a,b\\n1, 2\\n3,4\\n"); f.close()
        >>> table = read_table(f.name, ["b"])
        >>> table.columns["b"].tolist(), table.lines.tolist()
        ([2.0, 4.0], [2, 3])
        >>> os.remove(f.name)
    """
    with _open(path) as file:
        reader = csv.reader(file, skipinitialspace=True)
        header = _header(reader, path)
        _require_columns(path, header, required)
        names = [*required, *(name for name in optional if name in header)]
        blank_ok = [False] * len(required) + [True] * (len(names) - len(required))
        pick = itemgetter(*(header.index(name) for name in names))
        blocks, lines = [], []
        for rows, chunk_lines in _chunks(reader, path, len(header)):
            cells = [pick(row) for row in rows] if len(names) > 1 else [(pick(row),) for row in rows]
            blocks.append(_to_tensors(path, names, blank_ok, list(zip(*cells, strict=True)), chunk_lines))
            lines.extend(chunk_lines)
    if not lines:
        raise UserInputError(f"{path}: the header is there but there are no data rows")
    columns = {name: torch.cat([block[i] for block in blocks]) for i, name in enumerate(names)}
    return Table(columns, torch.tensor(lines, dtype=torch.int64))


def _open(path: str | Path) -> TextIO:
    """``path`` opened as UTF-8 text (a BOM dropped), with the OS error turned into a one-line message."""
    try:
        # newline="" lets the csv module see CRLF and line breaks inside quoted cells itself.
        return open(path, encoding="utf-8-sig", newline="")  # closed by the caller's `with`
    except FileNotFoundError:
        raise UserInputError(f"{path}: no such file") from None
    except IsADirectoryError:
        raise UserInputError(f"{path}: is a directory, not a CSV file") from None
    except OSError as exc:
        raise UserInputError(f"{path}: cannot be read ({exc.strerror})") from None


def _header(reader: Iterator[list[str]], path: str | Path) -> list[str]:
    first = next(_records(reader, path), None)
    if first is None:
        raise UserInputError(f"{path}: the file is empty; expected a header line naming the columns")
    header = [name.strip() for name in first[1]]
    for i, name in enumerate(header):
        if not name:
            raise UserInputError(f"{path}: column {i + 1} has no name in the header line; name it or remove it")
        if name in header[:i]:
            raise UserInputError(
                f"{path}: the header names column {name!r} twice (columns {header.index(name) + 1} and {i + 1})"
            )
    return header


def _records(reader: Iterator[list[str]], path: str | Path) -> Iterator[tuple[int, list[str]]]:
    """``(first line, fields)`` for each non-blank record; decoding and quoting errors as UserInputError."""
    last_line = getattr(reader, "line_num", 0)
    try:
        for row in reader:
            start, last_line = last_line + 1, reader.line_num  # type: ignore[attr-defined]
            if row and not (len(row) == 1 and not row[0].strip()):
                yield start, row
    except UnicodeDecodeError as exc:
        # The decoder reads ahead of the csv module; find the line by decoding line by line (a rare path).
        raise UserInputError(f"{path}: line {_first_non_utf8_line(path)} is not UTF-8 text ({exc.reason})") from None
    except csv.Error as exc:
        raise UserInputError(f"{path}: line {last_line + 1}: {exc}") from exc


def _first_non_utf8_line(path: str | Path) -> int:
    with open(path, "rb") as file:
        for number, line in enumerate(file, start=1):
            try:
                line.decode("utf-8")
            except UnicodeDecodeError:
                return number
    return 0


def _chunks(reader: Iterator[list[str]], path: str | Path, width: int) -> Iterator[tuple[list[list[str]], list[int]]]:
    """The data rows in chunks of ``CHUNK_ROWS``, each with the lines the rows start on."""
    rows: list[list[str]] = []
    lines: list[int] = []
    for line, row in _records(reader, path):
        if len(row) != width:
            raise UserInputError(f"{path}: line {line} has {len(row)} fields, the header has {width}")
        rows.append(row)
        lines.append(line)
        if len(rows) == CHUNK_ROWS:
            yield rows, lines
            rows, lines = [], []
    if rows:
        yield rows, lines


def _to_tensors(
    path: str | Path,
    names: Sequence[str],
    blank_ok: Sequence[bool],
    cells: Sequence[Sequence[str]],
    lines: Sequence[int],
) -> list[Tensor]:
    """One float64 tensor per column of strings; the first bad cell (by line, then column) raises."""
    converters = [_blank_as_nan if allow_blank else float for allow_blank in blank_ok]
    try:
        tensors = [
            torch.tensor(list(map(convert, column)), dtype=torch.float64)
            for convert, column in zip(converters, cells, strict=True)
        ]
    except ValueError:
        raise _first_bad_cell(path, names, converters, cells, lines) from None
    bad = [~torch.isfinite(tensor) for tensor in tensors]  # (n,) per column
    for j, allow_blank in enumerate(blank_ok):
        if allow_blank:  # a blank cell, read as NaN, is allowed there
            bad[j] &= torch.tensor([bool(cell.strip()) for cell in cells[j]])
    if any(b.any() for b in bad):
        i, j = (int(k) for k in torch.stack(bad, dim=1).nonzero()[0])  # row-major: the first line, then column
        raise UserInputError(
            f"{path}: line {lines[i]}, column {names[j]!r}: {cells[j][i].strip()!r} is not a finite number"
        )
    return tensors


def _blank_as_nan(cell: str) -> float:
    return float(cell) if cell.strip() else math.nan


def _first_bad_cell(
    path: str | Path,
    names: Sequence[str],
    converters: Sequence[Callable[[str], float]],
    cells: Sequence[Sequence[str]],
    lines: Sequence[int],
) -> UserInputError:
    """The error for the first cell, by line then column, that is not a number (the slow path, taken once)."""
    for i, line in enumerate(lines):
        for name, convert, column in zip(names, converters, cells, strict=True):
            try:
                convert(column[i])
            except ValueError:
                where = f"{path}: line {line}, column {name!r}"
                if not column[i].strip():
                    return UserInputError(f"{where}: the cell is empty")
                return UserInputError(f"{where}: {column[i].strip()!r} is not a number")
    raise AssertionError("float() failed on a column but on none of its cells")


def _require_columns(path: str | Path, header: Sequence[str], names: Sequence[str], key: str = "") -> None:
    missing = [name for name in names if name not in header]
    if missing:
        asked_by = f" ({key})" if key else ""
        raise UserInputError(
            f"{path}: no column {missing[0]!r}{asked_by}; the columns are {', '.join(map(repr, header))}"
        )
