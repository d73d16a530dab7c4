"""Parquet and streamed tables: the same tensors as CSV, a directory as one file, streaming as in memory, resume."""

from __future__ import annotations

import contextlib
import io
import os
import threading
from pathlib import Path

import numpy as np
import pyarrow as pa
import pyarrow.csv as pa_csv
import pyarrow.parquet as pq
import pytest
import torch

from linreg.data import TableRegressionData
from linreg.data.reading import read_table
from linreg.data.tables import read_ahead
from linreg.stats.ols import Moments, fit_least_squares, least_squares_from_moments
from linreg.validation import UserInputError
from tests.conftest import ROOT, run_cli
from tests.test_csv_data import split_rows
from tests.test_resume import assert_same_training_state, keeping_every_write

TRUE_W = np.array([3.0, -2.0, 0.5])


def make_arrow_table(n: int = 3000, seed: int = 0) -> pa.Table:
    """``y = X w + 10 + N(0, 0.5)`` with features on different scales, and a text column not used."""
    rng = np.random.default_rng(seed)
    X = rng.normal([100.0, 0.0, -5.0], [10.0, 1.0, 0.01], size=(n, 3))
    y = X @ TRUE_W + 10.0 + 0.5 * rng.standard_normal(n)
    return pa.table({"id": [f"r{i}" for i in range(n)], "a": X[:, 0], "b": X[:, 1], "c": X[:, 2], "y": y})


@pytest.fixture
def files(tmp_path: Path) -> dict[str, Path]:
    return write_files(tmp_path)


def write_files(tmp_path: Path) -> dict[str, Path]:
    """The same table as CSV, gzipped CSV, one Parquet file (row groups of 500), and a directory of three files."""
    table = make_arrow_table()
    pa_csv.write_csv(table, tmp_path / "t.csv")
    with pa.CompressedOutputStream(str(tmp_path / "t.csv.gz"), "gzip") as out:
        pa_csv.write_csv(table, out)
    pq.write_table(table, tmp_path / "t.parquet", row_group_size=500)
    (tmp_path / "dir").mkdir()
    for i, start in enumerate((0, 1000, 2200)):
        stop = {0: 1000, 1: 2200, 2: 3000}[i]
        pq.write_table(table.slice(start, stop - start), tmp_path / "dir" / f"part-{i}.parquet", row_group_size=400)
    (tmp_path / "dir" / "_SUCCESS").write_text("")
    return {name: tmp_path / f for name, f in [("csv", "t.csv"), ("gz", "t.csv.gz"), ("parquet", "t.parquet")]} | {
        "dir": tmp_path / "dir"
    }


def test_csv_gzip_parquet_and_a_directory_give_the_same_tensors(files: dict[str, Path]) -> None:
    tables = {name: read_table(path, ["a", "b", "c", "y"]) for name, path in files.items()}
    expected = make_arrow_table()
    for name, table in tables.items():
        for column in ("a", "b", "c", "y"):
            np.testing.assert_array_equal(table.columns[column].numpy(), expected.column(column).to_numpy(), name)
    assert tables["csv"].position_name == "line"
    assert tables["csv"].positions[:3].tolist() == [2, 3, 4]
    assert tables["dir"].positions[:3].tolist() == [0, 1, 2]


def test_the_data_module_splits_a_directory_as_it_splits_one_file(files: dict[str, Path]) -> None:
    modules = [
        TableRegressionData(str(files[name]), target="y", features=["a", "b", "c"]) for name in ("parquet", "dir")
    ]
    for dm in modules:
        dm.setup("fit")
    # The same rows in the same order; the statistics are merged record batch by record batch, so row groups
    # of other sizes change them in float64's last digits, and the standardised values in float32's at most.
    for one, other in zip(modules[0].train_data, modules[1].train_data, strict=True):
        torch.testing.assert_close(one, other, rtol=1e-6, atol=1e-6)


def test_streaming_statistics_and_least_squares_match_in_memory_ones_on_the_same_rows(files: dict[str, Path]) -> None:
    for name in ("parquet", "dir", "csv"):
        dm = TableRegressionData(str(files[name]), target="y", features=["a", "b", "c"], in_memory=False)
        dm.setup("fit")
        # The independent truth: the rows the hash puts in training, taken from the whole table in memory.
        table = make_arrow_table()
        Z = torch.tensor(np.column_stack([table.column(c).to_numpy() for c in ("a", "b", "c", "y")]))
        train = Z[split_rows(len(Z), 0.1, 0.1, seed=0)[0]]
        torch.testing.assert_close(dm.standardizer.x_mean, train[:, :3].mean(0), rtol=1e-12, atol=0)
        torch.testing.assert_close(dm.standardizer.x_std, train[:, :3].std(0, correction=0), rtol=1e-12, atol=0)
        assert dm.standardizer.y_std == pytest.approx(train[:, 3].std(correction=0).item(), rel=1e-12)
        standardised = (train - train.mean(0)) / train.std(0, correction=0)
        ols = dm.reference()
        design = torch.cat([standardised[:, :3], torch.ones(len(train), 1, dtype=torch.float64)], dim=1)
        solution = torch.linalg.lstsq(design, standardised[:, 3:]).solution.view(-1)
        torch.testing.assert_close(ols.w, solution[:3], rtol=1e-10, atol=1e-12)
        reference = fit_least_squares(standardised[:, :3], standardised[:, 3])
        torch.testing.assert_close(ols.covariance.diagonal().sqrt(), reference.standard_errors, rtol=1e-8, atol=0)


def test_moments_merged_batch_by_batch_equal_those_of_all_rows_at_once() -> None:
    Z = torch.randn(1000, 4, dtype=torch.float64, generator=torch.Generator().manual_seed(0)) * 1e-2 + 1e6
    moments = Moments.empty(4)
    for block in Z.split(77):
        moments.update(block)
    centred = Z - Z.mean(0)
    # Values of 1e6 carry ~1e-10 of absolute rounding in float64: the spread of 1e-2 keeps 8 digits.
    torch.testing.assert_close(moments.comoment, centred.T @ centred, rtol=1e-6, atol=1e-9)
    fit = least_squares_from_moments(moments)
    torch.testing.assert_close(fit.w, fit_least_squares(Z[:, :3], Z[:, 3]).w, rtol=1e-5, atol=1e-7)


def test_a_streamed_epoch_covers_every_training_row_once_in_a_new_order_each_epoch(files: dict[str, Path]) -> None:
    dm = TableRegressionData(
        str(files["dir"]), "y", ["a", "b", "c"], in_memory=False, batch_size=64, shuffle_buffer=300
    )
    dm.setup("fit")
    loader = dm.train_dataloader()
    epochs = []
    for epoch in (0, 1):
        loader.sampler.set_epoch(epoch)
        epochs.append(torch.cat([x for x, _ in loader]))
    assert len(loader) == len(list(loader)) == -(-len(epochs[0]) // 64)
    assert not torch.equal(epochs[0], epochs[1])
    assert torch.equal(epochs[0][epochs[0][:, 0].argsort()], epochs[1][epochs[1][:, 0].argsort()])


def test_read_ahead_gives_the_items_in_order_raises_at_the_failing_one_and_stops_when_left() -> None:
    assert list(read_ahead(iter(range(10)), depth=3)) == list(range(10))
    assert list(read_ahead(iter([]))) == []

    def failing():
        yield 1
        raise UserInputError("bad cell")

    items = read_ahead(failing())
    assert next(items) == 1
    with pytest.raises(UserInputError, match="bad cell"):
        next(items)

    produced, closed = [], threading.Event()

    def endless():
        try:
            for i in range(10**6):
                produced.append(i)
                yield i
        finally:
            closed.set()

    items = read_ahead(endless(), depth=2)
    assert [next(items) for _ in range(3)] == [0, 1, 2]
    items.close()
    assert closed.is_set()
    assert len(produced) <= 3 + 2  # at most depth items past the last one taken
    assert not any(t.name.startswith("linreg-read-ahead") for t in threading.enumerate())


def test_a_streamed_loader_resumes_where_its_state_says(files: dict[str, Path]) -> None:
    dm = TableRegressionData(
        str(files["parquet"]), "y", ["a", "b", "c"], in_memory=False, batch_size=32, shuffle_buffer=100
    )
    dm.setup("fit")
    loader = dm.train_dataloader()
    loader.set_epoch(1)
    batches = iter(loader)
    seen = [next(batches) for _ in range(7)]
    state = loader.state_dict()
    rest = list(batches)
    resumed = dm.train_dataloader()
    resumed.set_epoch(1)
    resumed.load_state_dict(state)
    after = list(resumed)
    assert len(after) == len(rest) == len(loader) - len(seen)
    assert all(torch.equal(a[0], b[0]) and torch.equal(a[1], b[1]) for a, b in zip(after, rest, strict=True))


@pytest.mark.parametrize(
    ("column", "values", "message"),
    [
        ("b", {7: None}, r"row 7, column 'b': the cell is empty"),
        ("b", {9: float("nan")}, r"row 9, column 'b': nan is not a finite number"),
        ("y", {4: float("inf")}, r"row 4, column 'y': inf is not a finite number"),
        ("a", {3: "n/a"}, r"row 3, column 'a': 'n/a' is not a number"),
    ],
)
@pytest.mark.parametrize("in_memory", [True, False])
def test_bad_parquet_cells_are_refused_naming_file_row_and_column(
    tmp_path: Path, column: str, values: dict, message: str, in_memory: bool
) -> None:
    table = make_arrow_table(n=40)
    cells = table.column(column).to_pylist()
    for row, value in values.items():
        cells[row] = value
    kind = pa.string() if any(isinstance(v, str) for v in values.values()) else pa.float64()
    cells = [str(v) if kind == pa.string() and v is not None else v for v in cells]
    table = table.set_column(table.schema.get_field_index(column), column, pa.array(cells, kind))
    (tmp_path / "d").mkdir()
    pq.write_table(table.slice(0, 20), tmp_path / "d" / "a.parquet")
    pq.write_table(table.slice(20), tmp_path / "d" / "b.parquet")
    for path in (tmp_path / "d" / "a.parquet", tmp_path / "d"):
        dm = TableRegressionData(str(path), target="y", features=["a", "b", "c"], in_memory=in_memory)
        with pytest.raises(UserInputError, match=r"a\.parquet: " + message):
            dm.setup("fit")


@pytest.mark.parametrize(
    ("setup", "message"),
    [
        ("constant", r"column 'b' is constant on the training split"),
        ("few", r"data rows are too few"),
        ("missing", r"no column 'price' \(target\); the columns are 'id', 'a', 'b', 'c', 'y'"),
        ("empty-dir", r"is a directory that holds no Parquet files"),
    ],
)
@pytest.mark.parametrize("in_memory", [True, False])
def test_bad_parquet_tables_are_refused_in_one_line(tmp_path: Path, setup: str, message: str, in_memory: bool) -> None:
    table = make_arrow_table(n=3 if setup == "few" else 40)
    if setup == "constant":
        table = table.set_column(2, "b", pa.array([1.5] * 40))
    path = tmp_path / "t.parquet"
    pq.write_table(table, path)
    if setup == "empty-dir":
        (tmp_path / "empty").mkdir()
        path = tmp_path / "empty"
    features = None if setup == "missing" else ["a", "b", "c"]

    def build_and_set_up() -> None:  # the header is checked when built, the rows in setup
        target = "price" if setup == "missing" else "y"
        TableRegressionData(str(path), target, features, in_memory=in_memory).setup("fit")

    with pytest.raises(UserInputError, match=message):
        build_and_set_up()


def test_the_parquet_config_fits_a_streamed_directory_and_reports_least_squares(
    files: dict[str, Path], tmp_path: Path
) -> None:
    run_cli(
        "fit", "--config", str(ROOT / "configs" / "parquet.yaml"),
        "--data.path", str(files["dir"]), "--data.target", "y", "--data.features", "[a, b, c]",
        "--data.in_memory", "false", "--trainer.max_epochs", "2",
        "--trainer.logger.init_args.save_dir", str(tmp_path),
    )  # fmt: skip
    assert (tmp_path / "parquet" / "version_0" / "report.json").is_file()


def streamed_resume_args(path: str, save_dir: Path) -> list[str]:
    """A streamed fit of 2 epochs that writes last.ckpt every 10 steps, mid-epoch."""
    return [
        "fit", "--config", str(ROOT / "configs" / "parquet.yaml"),
        "--data.path", path, "--data.target", "y", "--data.features", "[a, b, c]",
        "--data.in_memory", "false", "--data.batch_size", "64", "--data.shuffle_buffer", "500",
        "--trainer.max_epochs", "2", "--last.every_n_train_steps", "10",
        "--trainer.logger.init_args.save_dir", str(save_dir),
    ]  # fmt: skip


@pytest.mark.slow  # a whole process or several fits: seconds
def test_a_streaming_fit_resumed_from_a_mid_epoch_kill_point_ends_bit_identical(
    files: dict[str, Path], tmp_path: Path
) -> None:
    args = streamed_resume_args(str(files["parquet"]), tmp_path)
    # Every version of last.ckpt is what a kill -9 just after its (atomic) write would leave.
    with keeping_every_write(tmp_path / "history"), contextlib.redirect_stdout(io.StringIO()):
        run_cli(*args)
    mid_epoch = [
        p for p in sorted((tmp_path / "history").iterdir()) if p.name.endswith(("-step50.ckpt", "-step10.ckpt"))
    ]
    assert len(mid_epoch) == 2
    final = torch.load(tmp_path / "parquet" / "version_0" / "checkpoints" / "last.ckpt", weights_only=True)
    for version, checkpoint in enumerate(mid_epoch, start=1):
        with contextlib.redirect_stdout(io.StringIO()):
            run_cli(*args, "--ckpt_path", str(checkpoint))
        resumed = tmp_path / "parquet" / f"version_{version}" / "checkpoints" / "last.ckpt"
        assert_same_training_state(final, torch.load(resumed, weights_only=True))


@pytest.mark.parametrize("name", ["parquet", "csv"])
def test_streaming_and_reading_whole_split_the_same_rows(files: dict[str, Path], name: str) -> None:
    """``in_memory`` changes how the table is read, never which rows train, validate and test."""
    whole, streamed = (
        TableRegressionData(str(files[name]), "y", ["a", "b", "c"], in_memory=mode, eval_batch_size=128)
        for mode in (True, False)
    )
    whole.setup("fit")
    streamed.setup("fit")
    torch.testing.assert_close(streamed.standardizer.x_mean, whole.standardizer.x_mean, rtol=1e-12, atol=1e-12)
    torch.testing.assert_close(streamed.standardizer.x_std, whole.standardizer.x_std, rtol=1e-12, atol=0)
    # The statistics agree to float64 rounding (one pass of moments, or the rows at once); the rows to float32's.
    same = {"rtol": 1e-6, "atol": 1e-6}
    for split, tensors in (("val", whole.val_data), ("test", whole.test_data)):
        rows = list(streamed.split_chunks(split))  # in table order, as the in-memory split's ascending indices
        torch.testing.assert_close(torch.cat([x for x, _ in rows]), tensors[0], **same, msg=split)
        torch.testing.assert_close(torch.cat([y.view(-1) for _, y in rows]), tensors[1].view(-1), **same, msg=split)
    trained = torch.cat([torch.cat(batch, dim=1) for batch in streamed.train_dataloader()])
    expected = torch.cat(whole.train_data, dim=1)
    torch.testing.assert_close(trained[trained[:, 0].argsort()], expected[expected[:, 0].argsort()], **same)


def test_a_streamed_tables_held_out_rows_come_from_the_first_pass(tmp_path: Path) -> None:
    """The validation and test rows of a streamed table are kept as the first pass reads them: standardising them
    reads the file no more (it is gone), and gives the rows a full read of the same table gives."""
    (tmp_path / "a").mkdir(), (tmp_path / "b").mkdir()
    whole = TableRegressionData(str(write_files(tmp_path / "a")["parquet"]), "y", ["a", "b", "c"], in_memory=True)
    whole.setup("fit")
    path = write_files(tmp_path / "b")["parquet"]
    streamed = TableRegressionData(str(path), "y", ["a", "b", "c"], in_memory=False)
    streamed.prepare_data()  # the first pass
    path.unlink()
    streamed.setup("fit")
    for ours, full in ((streamed.val_data, whole.val_data), (streamed.test_data, whole.test_data)):
        assert all(torch.equal(a, b) for a, b in zip(ours, full, strict=True))


@pytest.mark.parametrize(
    ("line", "message"),
    [("r5,1,2\n", r"line 7 has 3 fields, the header has 5"), ("r5,1,x,3,4\n", r"line 7, column 'b': 'x' is not a")],
)
def test_a_streamed_csv_file_names_its_bad_line(tmp_path: Path, line: str, message: str) -> None:
    """Counting the rows of a streamed CSV file reads it first: its errors name the line, as a full read's do."""
    lines = ["id,a,b,c,y\n", *(f"r{i},{i},{i % 3},{i % 5},{2 * i}\n" for i in range(40))]
    lines[6] = line  # line 7 of the file
    (tmp_path / "t.csv").write_text("".join(lines))
    with pytest.raises(UserInputError, match=message):
        TableRegressionData(str(tmp_path / "t.csv"), "y", ["a", "b", "c"], in_memory=False).setup("fit")


def test_a_bad_cell_is_named_before_a_later_short_row(tmp_path: Path) -> None:
    """Both for a full read and for the count of a streamed table's rows, whichever line comes first is named."""
    lines = ["id,a,b,c,y\n", *(f"r{i},{i},{i % 3},{i % 5},{2 * i}\n" for i in range(40))]
    lines[4], lines[8] = "r3,3,x,3,6\n", "r7,7\n"  # lines 5 and 9 of the file
    (tmp_path / "t.csv").write_text("".join(lines))
    for in_memory in (True, False):
        with pytest.raises(UserInputError, match=r"line 5, column 'b': 'x' is not a number"):
            TableRegressionData(str(tmp_path / "t.csv"), "y", ["a", "b", "c"], in_memory=in_memory).setup("fit")


@pytest.mark.slow
def test_a_read_error_met_mid_epoch_ends_the_run_in_one_line(
    files: dict[str, Path], tmp_path: Path, capsys: pytest.CaptureFixture[str], monkeypatch: pytest.MonkeyPatch
) -> None:
    """The file is damaged once training has started: its row groups past the middle cannot be read. Its size and
    modification time are kept, and its content fingerprint still tells the damage: the run ends in one line
    naming the file, before it reads a damaged row group. (Unreadable pages themselves: tests/test_table.py.)"""
    path, train_dataloader = files["parquet"], TableRegressionData.train_dataloader

    def damaging(self: TableRegressionData) -> object:
        loader = train_dataloader(self)
        status, data = path.stat(), path.read_bytes()
        path.write_bytes(data[: len(data) // 2] + bytes(len(data) - len(data) // 2))
        os.utime(path, ns=(status.st_atime_ns, status.st_mtime_ns))
        return loader

    monkeypatch.setattr(TableRegressionData, "train_dataloader", damaging)
    with pytest.raises(SystemExit) as exit_info:
        run_cli(
            "fit", "--config", str(ROOT / "configs" / "parquet.yaml"),
            "--data.path", str(path), "--data.target", "y", "--data.features", "[a, b, c]",
            "--data.in_memory", "false", "--data.batch_size", "100", "--trainer.max_epochs", "1",
            "--trainer.logger.init_args.save_dir", str(tmp_path / "runs"),
        )  # fmt: skip
    err = capsys.readouterr().err
    assert exit_info.value.code == 2
    errors = [line for line in err.splitlines() if ": error: " in line]
    assert len(errors) == 1, err
    assert errors[0].startswith(f"linreg: error: {path}: changed since this run first read it")
    assert "Traceback" not in err
