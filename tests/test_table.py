"""Reading tables: valid files parse; every bad file is refused in one line naming file, line or row, column."""

from __future__ import annotations

import contextlib
import gzip
import os
import struct
from collections.abc import Callable
from dataclasses import replace
from pathlib import Path
from unittest import mock

import numpy as np
import pyarrow as pa
import pyarrow.parquet as pq
import pytest
import torch

from linreg.data import reading, sources, tables
from linreg.data.reading import pieces, read_header, read_piece, read_table, select_columns
from linreg.data.rows import SplitPlan
from linreg.data.tables import StreamedTable
from linreg.validation import UserInputError


def write(tmp_path: Path, text: str | bytes, name: str = "data.csv") -> Path:
    path = tmp_path / name
    if isinstance(text, str):
        text = text.encode()
    path.write_bytes(text)
    return path


def test_quoted_padded_names_crlf_and_bom_are_read_by_name(tmp_path: Path) -> None:
    path = write(tmp_path, '\ufeff "y" ,  "x one",x2\r\n 1.5 , 2 ,3\r\n\r\n-4,  5e-1 ,"6"\r\n'.encode())
    assert read_header(path) == ["y", "x one", "x2"]
    result = read_table(path, ["x2", "x one", "y"])
    assert result.columns["x2"].tolist() == [3.0, 6.0]
    assert result.columns["x one"].tolist() == [2.0, 0.5]
    assert result.columns["y"].tolist() == [1.5, -4.0]
    assert result.columns["y"].dtype == torch.float64
    assert result.positions.tolist() == [2, 4]  # line 3 is blank


def test_line_numbers_count_line_breaks_inside_quoted_cells(tmp_path: Path) -> None:
    path = write(tmp_path, 'note,x,y\n"two\nlines",1,2\nplain,3,4\n')
    assert read_table(path, ["x", "y"]).positions.tolist() == [2, 4]


def test_columns_not_asked_for_may_hold_text(tmp_path: Path) -> None:
    path = write(tmp_path, "id,x,y\nA1,1,2\nB2,3,4\n")
    result = read_table(path, ["x", "y"])
    assert set(result.columns) == {"x", "y"}
    assert len(result) == 2


def test_rows_are_read_across_blocks_in_order(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setattr(reading, "BLOCK_BYTES", 16)  # a few rows per block, parsed by several threads
    path = write(tmp_path, "x,y\n" + "".join(f"{i},{-i}\n" for i in range(10)))
    result = read_table(path, ["y", "x"])
    assert result.columns["x"].tolist() == [float(i) for i in range(10)]
    assert result.positions.tolist() == list(range(2, 12))


def test_a_bad_cell_in_a_later_chunk_names_its_own_line(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setattr(reading, "CHUNK_ROWS", 3)
    monkeypatch.setattr(reading, "BLOCK_BYTES", 16)
    path = write(tmp_path, "x,y\n" + "".join(f"{i},{i}\n" for i in range(7)) + "7,oops\n")
    with pytest.raises(UserInputError, match=r"line 9, column 'y': 'oops' is not a number"):
        read_table(path, ["x", "y"])


def test_an_optional_column_may_be_absent_or_blank(tmp_path: Path) -> None:
    absent = write(tmp_path, "x\n1\n2\n", "absent.csv")
    assert set(read_table(absent, ["x"], optional=["y"]).columns) == {"x"}
    blank = write(tmp_path, "x,y\n1,\n2,5\n", "blank.csv")
    y = read_table(blank, ["x"], optional=["y"]).columns["y"]
    assert y.isnan().tolist() == [True, False]
    assert y[1].item() == 5.0


def test_an_optional_column_still_refuses_text(tmp_path: Path) -> None:
    path = write(tmp_path, "x,y\n1,\n2,abc\n")
    with pytest.raises(UserInputError, match=r"line 3, column 'y': 'abc' is not a number"):
        read_table(path, ["x"], optional=["y"])


@pytest.mark.parametrize(
    ("text", "match"),
    [
        ("", r"data\.csv: the file is empty"),
        ("\n\n", r"data\.csv: the file is empty"),
        ("x,y\n", r"data\.csv: the header is there but there are no data rows"),
        ("x,y\n\n", r"data\.csv: the header is there but there are no data rows"),
        ("x,z\n1,2\n", r"data\.csv: no column 'y'; the columns are 'x', 'z'"),
        ("x,y,x\n1,2,3\n", r"data\.csv: names column 'x' twice \(columns 1 and 3\)"),
        ("x,,y\n1,2,3\n", r"data\.csv: column 2 has no name"),
        ("x,y\n1,2\n3,abc\n", r"data\.csv: line 3, column 'y': 'abc' is not a number"),
        ("x,y\n1,2\n3,abc\nzzz,4\n", r"data\.csv: line 3, column 'y': 'abc' is not a number"),  # first by line
        ("x,y\n1,2\n3,inf\nnan,4\n", r"data\.csv: line 3, column 'y': 'inf' is not a finite number"),
        ('x,y\n1,2\n3,"1,5"\n', r"data\.csv: line 3, column 'y': '1,5' is not a number"),
        ("x,y\n1,2\n, 4\n", r"data\.csv: line 3, column 'x': the cell is empty"),
        ("x,y\n1,2\n  ,4\n", r"data\.csv: line 3, column 'x': the cell is empty"),
        ("x,y\n1,nan\n", r"data\.csv: line 2, column 'y': 'nan' is not a finite number"),
        ("x,y\n1,2\n2,3\ninf,4\n", r"data\.csv: line 4, column 'x': 'inf' is not a finite number"),
        ("x,y\n-Infinity,4\n", r"data\.csv: line 2, column 'x': '-Infinity' is not a finite number"),
        ("x,y\n1,2\n3\n", r"data\.csv: line 3 has 1 fields, the header has 2"),
        ("x,y\n1,2,\n", r"data\.csv: line 2 has 3 fields, the header has 2"),
        (b"x,y\n1,2\n\xe9,3\n", r"data\.csv: line 3 is not UTF-8 text"),
    ],
)
def test_bad_files_are_refused_naming_file_line_and_column(tmp_path: Path, text: str | bytes, match: str) -> None:
    path = write(tmp_path, text)
    with pytest.raises(UserInputError, match=match):
        read_table(path, ["x", "y"])


def test_the_decimal_comma_row_is_reported_as_a_field_count_mismatch(tmp_path: Path) -> None:
    path = write(tmp_path, "x,y\n1,2\n3,1,5\n")
    with pytest.raises(UserInputError, match=r"line 3 has 3 fields, the header has 2"):
        read_table(path, ["x", "y"])


def test_a_missing_file_or_a_directory_is_refused(tmp_path: Path) -> None:
    with pytest.raises(UserInputError, match=r"nope\.csv: no such file"):
        read_header(tmp_path / "nope.csv")
    with pytest.raises(UserInputError, match=r"is a directory that holds no Parquet files"):
        read_table(tmp_path, ["x"])


def test_default_features_are_all_other_columns_in_file_order() -> None:
    assert select_columns("f.csv", ["a", "y", "b"], "y", None) == ["a", "b"]
    assert select_columns("f.csv", ["a", "y", "b"], "y", ["b", "a"]) == ["b", "a"]


@pytest.mark.parametrize(
    ("target", "features", "match"),
    [
        ("z", None, r"f\.csv: no column 'z' \(target\); the columns are 'a', 'y', 'b'"),
        ("y", ["a", "c"], r"f\.csv: no column 'c' \(features\); the columns are 'a', 'y', 'b'"),
        ("y", ["a", "y"], r"features lists the target column 'y'"),
        ("y", ["a", "a"], r"features lists 'a' more than once"),
        ("y", [], r"features must name at least one column"),
    ],
)
def test_bad_column_choices_are_refused(target: str, features: list[str] | None, match: str) -> None:
    with pytest.raises(UserInputError, match=match):
        select_columns("f.csv", ["a", "y", "b"], target, features)


def test_a_file_of_the_target_alone_has_no_features() -> None:
    with pytest.raises(UserInputError, match=r"f\.csv: the only column is the target 'y'; there are no features"):
        select_columns("f.csv", ["y"], "y", None)


# The reader boundary: whatever is wrong with a file, in memory or streamed, is one line naming it.


def one_line_naming(path: Path | str, error: pytest.ExceptionInfo[UserInputError]) -> bool:
    return str(error.value).startswith(f"{path}: ") and "\n" not in str(error.value)


def read_streamed(path: Path) -> int:
    """Every row of ``path`` through the streamed reader: counted, then read; returns the rows read."""
    read = 0
    for piece in pieces(path, count=["x"]):
        read += sum(len(columns[0]) for _, columns in read_piece(piece, ["x", "y"]))
    return read


def write_parquet(path: Path, n: int = 1000, **options: object) -> pa.Table:
    table = pa.table({"x": np.arange(n, dtype=np.float64), "y": np.arange(n, dtype=np.float64) * 2})
    pq.write_table(table, path, **options)
    return table


def _corrupt_parquet_page(tmp_path: Path) -> Path:
    path = tmp_path / "t.parquet"
    write_parquet(path, n=4000, row_group_size=2000, compression="gzip")
    chunk = pq.read_metadata(path).row_group(1).column(0)
    data = bytearray(path.read_bytes())
    middle = chunk.data_page_offset + chunk.total_compressed_size // 2
    data[middle : middle + 64] = b"\xff" * 64
    path.write_bytes(bytes(data))
    return path


def _parquet_page_failing_its_checksum(tmp_path: Path) -> Path:
    # Zeroed bytes that still decode (no compression): only the page's CRC, which the writer recorded, tells.
    path = tmp_path / "t.parquet"
    write_parquet(path, n=4000, row_group_size=2000, compression="NONE", use_dictionary=False, write_page_checksum=True)
    chunk = pq.read_metadata(path).row_group(1).column(1)
    data = bytearray(path.read_bytes())
    values = chunk.data_page_offset + chunk.total_compressed_size - 200  # within the page's plain float64 values
    data[values : values + 64] = bytes(64)
    path.write_bytes(bytes(data))
    return path


def _truncated_gzip(tmp_path: Path) -> Path:
    path = tmp_path / "t.csv.gz"
    path.write_bytes(gzip.compress(("x,y\n" + "".join(f"{i},{2 * i}\n" for i in range(50_000))).encode()))
    path.write_bytes(path.read_bytes()[: path.stat().st_size // 2])
    return path


@pytest.mark.parametrize(
    "damage",
    [_corrupt_parquet_page, _parquet_page_failing_its_checksum, _truncated_gzip],
    ids=["parquet-page", "parquet-checksum", "gzip-cut"],
)
def test_a_damaged_file_is_one_line_naming_it_streamed_and_in_memory(
    damage: Callable[[Path], Path], tmp_path: Path
) -> None:
    path = damage(tmp_path)
    with pytest.raises(UserInputError) as streamed:
        read_streamed(path)
    with pytest.raises(UserInputError) as whole:
        read_table(path, ["x", "y"])
    assert one_line_naming(path, streamed)
    assert one_line_naming(path, whole)


def test_a_column_of_lists_in_one_file_of_a_directory_is_refused_naming_that_file(tmp_path: Path) -> None:
    write_parquet(tmp_path / "a.parquet", n=5)
    pq.write_table(pa.table({"x": [[1.0], [2.0]], "y": [1.0, 2.0]}), tmp_path / "b.parquet")
    with pytest.raises(UserInputError, match=r"b\.parquet: row 0, column 'x': the column holds list<"):
        read_table(tmp_path, ["x", "y"])


def test_a_partition_key_in_a_directory_name_is_not_a_column(tmp_path: Path) -> None:
    """``y=1/`` is a directory name, not a column that would clash with the file's ``y``."""
    (tmp_path / "y=1").mkdir()
    table = write_parquet(tmp_path / "y=1" / "a.parquet", n=5)
    assert read_table(tmp_path, ["x", "y"]).columns["y"].tolist() == table.column("y").to_pylist()


def rewrite_footer(path: Path, old: int, new: int, occurrence: int) -> None:
    """Replaces the ``occurrence``-th thrift varint ``old`` of the footer by ``new``: metadata that lies."""

    def varint(value: int) -> bytes:
        zigzag, out = value << 1, b""
        while zigzag >= 0x80:
            out, zigzag = out + bytes([zigzag & 0x7F | 0x80]), zigzag >> 7
        return out + bytes([zigzag])

    data = path.read_bytes()
    size = struct.unpack("<i", data[-8:-4])[0]
    footer = data[-8 - size : -8]
    at = -1
    for _ in range(occurrence + 1):
        at = footer.index(varint(old), at + 1)
    footer = footer[:at] + varint(new) + footer[at + len(varint(old)) :]
    path.write_bytes(data[: -8 - size] + footer + struct.pack("<i", len(footer)) + b"PAR1")


@pytest.mark.parametrize(
    ("old", "new", "lies"),
    [
        (1000, 10**15, lambda meta: meta.num_rows == 10**15),
        (1000, 900, lambda meta: meta.num_rows == 900),
        (400, 10**12, lambda meta: meta.row_group(0).num_rows == 10**12),
    ],
    ids=["file-inflated", "file-deflated", "row-group-inflated"],
)
def test_rows_are_counted_as_read_not_taken_from_lying_metadata(
    tmp_path: Path, old: int, new: int, lies: Callable[[pq.FileMetaData], bool]
) -> None:
    path = tmp_path / "t.parquet"
    table = write_parquet(path, row_group_size=400, compression="NONE")
    written = path.read_bytes()
    for occurrence in range(16):  # the field's place in the footer depends on what the writer records
        path.write_bytes(written)
        with contextlib.suppress(Exception):  # no such occurrence, or a footer pyarrow cannot parse
            rewrite_footer(path, old, new, occurrence)
            if lies(pq.read_metadata(path)):
                break
    assert lies(pq.read_metadata(path))
    assert sum(piece.rows or 0 for piece in pieces(path, count=["x"])) == read_streamed(path) == table.num_rows
    streamed = StreamedTable(str(path), ["x", "y"], 0.2, 0.1, seed=0, shuffle_buffer=64)
    assert streamed.plan.counts == SplitPlan.of(table.num_rows, 0.2, 0.1, seed=0).counts


def test_a_piece_read_with_other_rows_than_counted_is_refused(tmp_path: Path) -> None:
    path = write(tmp_path, "x,y\n1,2\n3,4\n5,6\n")
    counted = pieces(path, count=["x"])
    path.write_text("x,y\n1,2\n3,4\n5,6\n7,8\n")  # the file changed after its rows were counted
    with pytest.raises(UserInputError, match=r"data\.csv: changed since this run first read it \(16 bytes then, 20"):
        list(read_piece(counted[0], ["x", "y"]))  # its size and modification time are not those recorded
    with pytest.raises(UserInputError, match=r"data\.csv: 4 rows read, 3 when counted; the file has changed"):
        list(read_piece(replace(counted[0], version=None), ["x", "y"]))  # as if they were (a footer that lies)


def test_links_below_a_data_directory_are_refused_not_followed(tmp_path: Path) -> None:
    (tmp_path / "d").mkdir()
    write_parquet(tmp_path / "d" / "a.parquet", n=5)
    (tmp_path / "d" / "loop").symlink_to(tmp_path / "d")  # would multiply the rows, or never end
    with pytest.raises(UserInputError, match=r"d/loop: is a link; the files of a data set must lie in its directory"):
        read_header(tmp_path / "d")


def test_a_fifo_in_a_data_directory_is_refused_before_it_is_opened(tmp_path: Path) -> None:
    write_parquet(tmp_path / "a.parquet", n=5)
    os.mkfifo(tmp_path / "b.parquet")  # opened, it would block until something writes to it
    with pytest.raises(UserInputError, match=r"b\.parquet: is a FIFO, not a regular file"):
        read_table(tmp_path, ["x", "y"])


def test_a_parquet_column_named_twice_is_refused_as_in_a_csv_header(tmp_path: Path) -> None:
    path = tmp_path / "t.parquet"
    pq.write_table(pa.table([pa.array([1.0]), pa.array([2.0]), pa.array([3.0])], names=["x", "y", "x"]), path)
    with pytest.raises(UserInputError, match=r"t\.parquet: names column 'x' twice \(columns 1 and 3\)"):
        read_header(path)


def test_integers_beyond_2_to_the_53_read_alike_from_parquet_and_csv(tmp_path: Path) -> None:
    values = np.array([2**53 + 1, -(2**62) - 3, 7], dtype=np.int64)
    pq.write_table(pa.table({"x": values, "y": values}), tmp_path / "t.parquet")
    write(tmp_path, "x,y\n" + "".join(f"{v},{v}\n" for v in values.tolist()))
    expected = values.astype(np.float64).tolist()  # numpy's rounding to the nearest float64
    assert read_table(tmp_path / "t.parquet", ["x", "y"]).columns["x"].tolist() == expected
    assert read_table(tmp_path / "data.csv", ["x", "y"]).columns["x"].tolist() == expected


def test_each_parquet_footer_is_read_once_whatever_the_path(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    (tmp_path / "d").mkdir()
    for name in ("a", "b"):
        write_parquet(tmp_path / "d" / f"{name}.parquet", n=400, row_group_size=10)
    reads = mock.Mock(wraps=pq.read_metadata)
    monkeypatch.setattr(sources.pq, "read_metadata", reads)
    streamed = StreamedTable(str(tmp_path / "d"), ["x", "y"], 0.1, 0.1, seed=0, shuffle_buffer=64)
    standardizer = streamed.standardizer()
    for rank in (0, 1):  # the DDP shards
        list(streamed.loader("train", 32, standardizer, rank=rank, world_size=2))
    streamed.materialize(standardizer)
    assert reads.call_count == 2  # once per file, though there are 80 row groups
    read_table(tmp_path / "d", ["x"], optional=["y"])  # the predict reader: for the header, then the pieces
    assert reads.call_count == 6


def test_a_line_longer_than_the_bound_is_refused_before_it_is_held_whole(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.setattr(reading, "MAX_LINE_CHARS", 100)
    header = write(tmp_path, "x" * 5000, "header.csv")  # no line break at all: a header of the whole file
    with pytest.raises(UserInputError, match=r"header\.csv: line 1 is longer than 100 characters"):
        read_header(header)
    monkeypatch.setattr(reading, "BLOCK_BYTES", 64)  # Arrow refuses the long row, and Python names its line
    row = write(tmp_path, "x,y\n1,2\n" + "3" * 500 + ",4\n", "row.csv")
    with pytest.raises(UserInputError, match=r"row\.csv: line 3 is longer than 100 characters"):
        read_table(row, ["x", "y"])


def test_a_column_named_twice_among_100_000_is_found_in_one_pass(tmp_path: Path) -> None:
    names = [f"c{i}" for i in range(100_000)] + ["c7"]  # compared pairwise, this takes minutes
    path = write(tmp_path, ",".join(names) + "\n" + ",".join("1" * len(names)) + "\n")
    with pytest.raises(UserInputError, match=r"names column 'c7' twice \(columns 8 and 100001\)"):
        read_header(path)
    with pytest.raises(UserInputError, match=r"features lists 'c1' more than once"):
        select_columns(path, names[:-1], "c0", ["c1", *names[2:-1], "c1"])


def test_wide_parquet_is_read_in_batches_of_a_bounded_number_of_values(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    path = tmp_path / "t.parquet"
    pq.write_table(pa.table({name: np.arange(100.0) for name in ("a", "b", "c", "d")}), path)
    monkeypatch.setattr(reading, "BATCH_VALUES", 40)  # 4 columns: 10 rows a batch
    batches = [columns for piece in pieces(path) for _, columns in read_piece(piece, ["a", "b", "c", "d"])]
    assert [len(columns[0]) for columns in batches] == [10] * 10
    assert np.concatenate([columns[2] for columns in batches]).tolist() == list(range(100))


def test_more_features_than_their_statistics_fit_in_memory_are_refused_before_reading(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    path = write(tmp_path, ",".join(f"c{i}" for i in range(1001)) + "\n" + ",".join("1" * 1001) + "\n")
    monkeypatch.setattr(tables, "available_memory", lambda: 10**7)
    monkeypatch.setattr(tables, "pieces", mock.Mock(side_effect=AssertionError("read")))
    needed = 4 * 8 * 1001**2 / 1e9  # four (d + 1)² float64 matrices, d = 1000
    with pytest.raises(UserInputError, match=rf"1000 features need {needed:.3g} GB .* and 0.01 GB is available"):
        StreamedTable(str(path), [f"c{i}" for i in range(1001)], 0.1, 0.1, seed=0, shuffle_buffer=64)


@pytest.mark.parametrize("sampled", [False, True], ids=["hashed-whole", "sampled"])
def test_a_file_rewritten_with_its_size_and_modification_time_kept_is_refused(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch, sampled: bool
) -> None:
    if sampled:  # a file beyond FULL_HASH_BYTES: its sampled blocks tell
        monkeypatch.setattr(sources, "FULL_HASH_BYTES", 64)
        monkeypatch.setattr(sources, "END_BYTES", 8)
        monkeypatch.setattr(sources, "SAMPLE_BYTES", 4)
    rows = [(i, 2.0 * i + 1) for i in range(50)]
    path = write(tmp_path, "x,y\n" + "".join(f"{x},{y:+.1f}\n" for x, y in rows))
    stat_before = path.stat()
    counted = pieces(path, count=["x"])
    # As `cp -p` or `rsync -t` leave it: the target negated, the same size, the same modification time.
    path.write_text("x,y\n" + "".join(f"{x},{-y:+.1f}\n" for x, y in rows))
    os.utime(path, ns=(stat_before.st_atime_ns, stat_before.st_mtime_ns))
    assert (path.stat().st_size, path.stat().st_mtime_ns) == (stat_before.st_size, stat_before.st_mtime_ns)
    with pytest.raises(UserInputError, match=rf"data\.csv: changed since .* \(still {stat_before.st_size} bytes"):
        list(read_piece(counted[0], ["x", "y"]))
