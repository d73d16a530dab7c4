"""Reading a table of numeric columns into tensors through Arrow, with one-line errors that point at the bad cell.

A table is a CSV file (``.csv``, or gzipped ``.csv.gz``), a Parquet file, or a directory of Parquet files
(a data set as Spark, DuckDB or pandas write it: every ``*.parquet`` file below it, in path order; names
starting with ``_`` or ``.``, such as ``_SUCCESS``, are skipped). Plain functions, no Lightning.

``pyarrow`` reads all of them: ``pyarrow.csv`` for CSV and ``pyarrow.parquet``/``pyarrow.dataset`` for
Parquet, into float columns (``linreg.data.cells`` converts and checks them). Only the columns asked
for are converted; others may hold anything. Every problem is a ``UserInputError`` naming the file and,
where there is one, the line of a CSV file (numbered as an editor numbers it, the header being line 1)
or the row of a Parquet file (counting from 0, as pandas and Arrow index rows), and the column.
"""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass, field
from functools import cached_property
from pathlib import Path

import pyarrow as pa
import pyarrow.csv as pa_csv
import pyarrow.dataset as pa_ds
import pyarrow.parquet as pq
import torch
from torch import Tensor

from linreg.data.cells import as_floats, first_bad_cell
from linreg.data.csv_text import arrow_options, diagnose, read_csv_header, record_lines
from linreg.validation import UserInputError

PARQUET_SUFFIXES = (".parquet", ".pq", ".parq")


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

    @property
    def lines(self) -> Tensor:
        """``positions`` of a CSV file: the line each row starts on."""
        return self.positions


def is_parquet(path: str | Path) -> bool:
    """Whether ``path`` is read as Parquet: a directory, a ``.parquet`` name, or a file starting with ``PAR1``."""
    path = Path(path)
    if path.is_dir() or path.suffix.lower() in PARQUET_SUFFIXES:
        return True
    if path.suffix.lower() in (".csv", ".gz", ".txt", ".tsv") or not path.is_file():
        return False
    with open(path, "rb") as file:
        return file.read(4) == b"PAR1"


def parquet_files(path: str | Path) -> list[tuple[str, pq.FileMetaData]]:
    """The Parquet files of ``path`` (itself, or those below a directory, in path order) and their metadata."""
    path = Path(path)
    if not path.exists():
        raise UserInputError(f"{path}: no such file or directory")
    try:
        files = sorted(pa_ds.dataset(str(path), format="parquet").files) if path.is_dir() else [str(path)]
        if not files:
            raise UserInputError(
                f"{path}: is a directory that holds no Parquet files; give a CSV file, a Parquet file"
                " or a directory of Parquet files"
            )
        return [(file, pq.read_metadata(file)) for file in files]
    except (pa.ArrowInvalid, OSError) as exc:
        raise UserInputError(f"{path}: cannot be read as Parquet ({_first_line(exc)})") from None


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
        return read_csv_header(path)[0]
    files = parquet_files(path)
    names = files[0][1].schema.to_arrow_schema().names
    for file, metadata in files[1:]:
        if (other := metadata.schema.to_arrow_schema().names) != names:
            raise UserInputError(f"{file}: has the columns {other}, {files[0][0]} has {names}; a data set needs one")
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
    twice = sorted({name for name in features if features.count(name) > 1})
    if twice:
        raise UserInputError(f"features lists {', '.join(map(repr, twice))} more than once")
    require_columns(path, header, features, "features")
    return features


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
        >>> table.columns["b"].tolist(), table.lines.tolist()
        ([2.0, 4.0], [2, 3])
        >>> os.remove(f.name)
    """
    csv_file = not is_parquet(path)
    header, header_lines = read_csv_header(path) if csv_file else (read_header(path), 0)
    require_columns(path, header, required)
    names = [*required, *(name for name in optional if name in header)]
    blank_ok = [name for name in names if name not in required]
    arrow = _read_csv(path, header, header_lines, names, blank_ok) if csv_file else _read_parquet(path, names)
    if arrow.num_rows == 0:
        raise UserInputError(f"{path}: the header is there but there are no data rows")
    columns = {}
    for name in names:  # each Arrow column is let go once copied: the peak is about one table, not two
        values = as_floats(arrow.column(name), blank_ok=name in blank_ok)
        arrow = arrow.drop_columns([name])
        if values is None:  # the fast check found a bad cell; find it again to name it (a slower path)
            raise _bad_rows(path, header, names, blank_ok, csv_file)
        columns[name] = torch.from_numpy(values)
    return Table(columns, str(path), csv_file, len(header))


def require_columns(path: str | Path, header: Sequence[str], names: Sequence[str], key: str = "") -> None:
    """Raises if a name of ``names`` is not in ``header``, listing the columns there are."""
    missing = [name for name in names if name not in header]
    if missing:
        asked_by = f" ({key})" if key else ""
        raise UserInputError(
            f"{path}: no column {missing[0]!r}{asked_by}; the columns are {', '.join(map(repr, header))}"
        )


def _read_csv(
    path: str | Path, header: list[str], header_lines: int, names: list[str], blank_ok: list[str]
) -> pa.Table:
    """The rows through ``pyarrow.csv``: numbers as float64, or, where a cell is blank or a row is bad, text."""
    read, parse, convert = arrow_options(header, header_lines, names, as_text=bool(blank_ok))
    try:
        return pa_csv.read_csv(path, read_options=read, parse_options=parse, convert_options=convert)
    except (pa.ArrowInvalid, UnicodeDecodeError) as exc:
        message = diagnose(path, header, names, blank_ok)
        raise UserInputError(message or f"{path}: {_first_line(exc)}") from None
    except OSError as exc:
        raise UserInputError(f"{path}: cannot be read ({_first_line(exc)})") from None


def _read_parquet(path: str | Path, names: list[str]) -> pa.Table:
    try:
        return pq.read_table(str(path), columns=names)
    except (pa.ArrowInvalid, OSError) as exc:
        raise UserInputError(f"{path}: cannot be read as Parquet ({_first_line(exc)})") from None


def _bad_rows(path: str | Path, header: list[str], names: list[str], blank_ok: list[str], csv_file: bool) -> Exception:
    """The error naming the first bad cell, found again where the row can be located (a rare, slower path)."""
    if csv_file:
        message = diagnose(path, header, names, blank_ok)
        return UserInputError(message or f"{path}: a value that is not a finite number could not be located")
    for file, _ in parquet_files(path):
        table = pq.read_table(file, columns=names)
        bad = first_bad_cell({name: table.column(name) for name in names}, blank_ok)
        if bad is not None:
            return UserInputError(f"{file}: row {bad.row}, column {bad.column!r}: {bad.reason}")
    return UserInputError(f"{path}: a value that is not a finite number could not be located")


def _first_line(exc: BaseException) -> str:
    return str(exc).strip().splitlines()[0] if str(exc).strip() else type(exc).__name__
