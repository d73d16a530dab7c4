"""Arrow columns as float arrays (float32 kept, others float64), and the first cell that is not a finite number.

Plain functions, no Lightning. The reader (``linreg.data.table.read_piece``) converts every record batch
here, so a CSV file, a Parquet file and a directory of Parquet files accept the same values (integers
beyond 2**53 rounded to the nearest float64, in both) and refuse the same ones with the same words:

- an empty cell (a blank CSV cell, a Parquet null): ``the cell is empty``;
- text that Arrow's number parser rejects: ``'n/a' is not a number``;
- NaN or an infinity, written or stored: ``'inf' is not a finite number``.

Text columns are parsed with Arrow's own cast (the parser the CSV reader uses), after trimming spaces,
so the checks agree with the fast path by construction. The caller adds where the row is (a line of a
CSV file, a row of a Parquet file).
"""

from __future__ import annotations

from collections.abc import Mapping, Sequence
from dataclasses import dataclass

import numpy as np
import pyarrow as pa
import pyarrow.compute as pc


@dataclass(frozen=True)
class BadCell:
    """The first cell that is not a finite number: its row (counting from 0 in the arrays given), column, why."""

    row: int
    column: str
    reason: str


def as_floats(column: pa.Array, blank_ok: bool = False) -> np.ndarray | None:
    """``column`` as a numpy array, or None if some cell is empty, not a number or not finite.

    float32 and float64 columns keep their type, as a read-only view of Arrow's buffer where there is no
    empty cell (every float32 is exactly a float64: nothing is lost); other types are converted to float64.

    Args:
        column: an Arrow array of any type (a column of a record batch).
        blank_ok: empty cells (nulls, blank text) become NaN instead of refusing the column.

    Example:
        >>> as_floats(pa.array([1, 2])).tolist(), as_floats(pa.array(["1", " x"]))
        ([1.0, 2.0], None)
    """
    if column.null_count and not blank_ok:
        return None
    if not (pa.types.is_float32(column.type) or pa.types.is_float64(column.type)):
        try:
            column = _parse(column, blank_ok)
        except (pa.ArrowInvalid, pa.ArrowNotImplementedError):
            return None
        if column.null_count and not blank_ok:
            return None
    values = column.to_numpy(zero_copy_only=False)  # NaN where a cell is empty
    if column.null_count:  # blank_ok: NaN where a cell is empty, finite numbers elsewhere
        finite = np.isfinite(values) | column.is_null().to_numpy(zero_copy_only=False)
        return values if finite.all() else None
    return values if _all_finite(values) else None


def _all_finite(values: np.ndarray) -> bool:
    """Whether every value is finite, in one pass without a temporary where it can.

    A NaN or an infinity makes the float64 sum non-finite, and finite float32 values cannot overflow it;
    only float64 values near the largest can, and then every value is checked.
    """
    return bool(np.isfinite(values.sum(dtype=np.float64))) or bool(np.isfinite(values).all())


def first_bad_cell(columns: Mapping[str, pa.Array | pa.ChunkedArray], blank_ok: Sequence[str] = ()) -> BadCell | None:
    """The first cell, by row and then by column in ``columns``' order, that ``as_floats`` would refuse.

    Example:
        >>> first_bad_cell({"a": pa.array(["1", "2", ""]), "b": pa.array(["1", "inf", "x"])})
        BadCell(row=1, column='b', reason="'inf' is not a finite number")
    """
    found = [bad for name, column in columns.items() if (bad := _first_bad(name, column, name in blank_ok))]
    return min(found, key=lambda bad: (bad.row, list(columns).index(bad.column)), default=None)


def _parse(column: pa.Array | pa.ChunkedArray, blank_ok: bool) -> pa.Array | pa.ChunkedArray:
    """float64 values (nulls where a cell is empty); raises ArrowInvalid where text is not a number."""
    if pa.types.is_string(column.type) or pa.types.is_large_string(column.type):
        column = pc.utf8_trim_whitespace(column)
        if blank_ok:  # blank text counts as an empty cell
            column = pc.if_else(pc.equal(column, ""), pa.scalar(None, column.type), column)
    return _to_float64(column)


def _to_float64(column: pa.Array | pa.ChunkedArray) -> pa.Array | pa.ChunkedArray:
    """``column`` cast to float64; integers beyond 2**53 rounded to the nearest float, as a CSV file's are."""
    return pc.cast(column, pa.float64(), safe=not pa.types.is_integer(column.type))


def _first_bad(name: str, column: pa.Array | pa.ChunkedArray, blank_ok: bool) -> BadCell | None:
    column = column.combine_chunks() if isinstance(column, pa.ChunkedArray) else column
    stop = len(column)  # the rows before the first unparsable one; only they are checked for infinities
    unparsable = None
    if pa.types.is_string(column.type) or pa.types.is_large_string(column.type):
        text = pc.utf8_trim_whitespace(column)
        empty = pc.fill_null(pc.equal(text, ""), True)
        numbers = pc.if_else(empty, pa.scalar(None, text.type), text)  # empty cells are judged apart
        unparsable = _first_unparsable(numbers)
        stop = len(column) if unparsable is None else unparsable
        values = pc.cast(numbers.slice(0, stop), pa.float64())
    else:
        try:
            values = _to_float64(column)
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

    def parses(stop: int) -> bool:
        try:
            pc.cast(numbers.slice(0, stop), pa.float64())
        except pa.ArrowInvalid:
            return False
        return True

    if parses(len(numbers)):
        return None
    low, high = 0, len(numbers)  # the prefix of length `low` parses, that of length `high` does not
    while high - low > 1:
        middle = (low + high) // 2
        low, high = (middle, high) if parses(middle) else (low, middle)
    return low


def _first_true(mask: pa.Array) -> int | None:
    index = pc.index(mask, True).as_py()
    return None if index < 0 else index


def _show(value: pa.Scalar) -> str:
    """A cell as the message quotes it: text stripped and quoted (``'n/a'``), a stored number as written (``nan``)."""
    python = value.as_py()
    return repr(python.strip()) if isinstance(python, str) else repr(python) if python is not None else "null"
