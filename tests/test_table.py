"""Reading CSV files: awkward but valid files parse; every bad file is refused naming file, line and column."""

from __future__ import annotations

from pathlib import Path

import pytest
import torch

from linreg.data import csv_text
from linreg.data.table import read_header, read_table, select_columns
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
    monkeypatch.setattr(csv_text, "BLOCK_BYTES", 16)  # a few rows per block, parsed by several threads
    path = write(tmp_path, "x,y\n" + "".join(f"{i},{-i}\n" for i in range(10)))
    result = read_table(path, ["y", "x"])
    assert result.columns["x"].tolist() == [float(i) for i in range(10)]
    assert result.positions.tolist() == list(range(2, 12))


def test_a_bad_cell_in_a_later_chunk_names_its_own_line(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setattr(csv_text, "CHUNK_ROWS", 3)
    monkeypatch.setattr(csv_text, "BLOCK_BYTES", 16)
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
