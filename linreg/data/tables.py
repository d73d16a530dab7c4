"""``TableRegressionData``: a table of numeric columns (CSV, CSV.gz, Parquet) as a LightningDataModule.

The header is read in ``__init__`` (the CLI needs ``input_dim`` first), the rows in ``prepare_data``/``setup``.
The training split's statistics are saved in checkpoints, so a later ``validate``/``test``/``predict`` applies the
transform the model was trained with, even if the file has changed since.

The rows are counted, then one pass checks every cell and accumulates the training moments in float64. A table
held in memory is read once more into float32 tensors, a streamed one each epoch by a ``StreamLoader``; both split
alike, so ``in_memory`` changes speed and memory, never which rows train.
"""

from __future__ import annotations

import math
from collections import deque
from collections.abc import Generator, Iterable, Iterator, Sequence
from concurrent.futures import ThreadPoolExecutor
from typing import Any, Literal, TypeVar

import numpy as np
import torch
from torch import Tensor

from linreg.constraints import check
from linreg.data.base import RegressionData
from linreg.data.batches import EpochPosition
from linreg.data.reading import Piece, Table, pieces, read_header, read_piece, read_table, select_columns
from linreg.data.rows import SPLITS, TRAIN, SplitPlan, Standardizer
from linreg.stats.ols import Moments
from linreg.validation import UserInputError, available_memory

T = TypeVar("T")
_END = object()  # what next() gives read_ahead for an exhausted iterator

BYTES_PER_VALUE = 4  # a table held in memory: its float32 tensors (record batches are read one at a time)
# The statistics of k columns are (k, k) float64 matrices: the moments, a batch's ZᵀZ added to them, and the
# least-squares solve's copies, this many at once at most.
MOMENT_MATRICES = 4
AUTO_BATCH_SIZES = (16, 4096)  # batch_size auto: the smallest and the largest
# A streamed table keeps its validation and test rows in memory when their float32 tensors take at most this:
# validation after every epoch, the report and the plots then read nothing from disk. The first pass keeps them as
# read (up to twice this, as float64) until they are standardised, so that needs no second pass.
HELD_OUT_IN_MEMORY = 64 << 20


def auto_batch_size(train_rows: int) -> int:
    """Rows per SGD step for ``batch_size: auto``: a twentieth of the training rows, from 16 to 4096.

    A step's cost is mostly fixed (about half a millisecond on a CPU) up to thousands of rows.

    Example:
        >>> auto_batch_size(320), auto_batch_size(100), auto_batch_size(800_000)
        (16, 16, 4096)
    """
    low, high = AUTO_BATCH_SIZES
    return min(high, max(low, train_rows // 20))


class TableRegressionData(RegressionData):
    """Train, validation and test splits of the rows of a table; ``predict`` runs on every row.

    Args:
        path: a CSV file (``.csv``, ``.csv.gz``), a Parquet file or directory; local or ``s3://``, ``gs://``, ...
        target: the column to predict.
        features: the columns to predict it from; all other columns when not given.
        val_fraction: share of the rows held out for validation (``val/loss`` every epoch); 0 turns it off.
        test_fraction: share of the rows held out for ``test``; may be 0.
        predict_path: a table of rows to predict instead of every row of ``path`` (the target may be blank).
        batch_size: rows per SGD step; ``auto``: a twentieth of the training rows, from 16 to 4096.
        eval_batch_size: rows per validation/test/predict batch (no gradient step: large is faster).
        seed: seeds the split and the shuffling order.
        in_memory: ``True`` holds the table in memory, ``False`` streams it, ``auto`` streams past half the memory free.
        shuffle_buffer: when streaming, rows shuffled together (memory: 4 bytes x columns x this).

    Example:
        >>> import tempfile, os
        >>> f = tempfile.NamedTemporaryFile("w", suffix=".csv", delete=False)
        >>> _ = f.write("x,y\\n" + "".join(f"{i},{2 * i + 1}\\n" for i in range(10))); f.close()
        >>> dm = CSVRegressionData(f.name, target="y", val_fraction=0.2, test_fraction=0.0)
        >>> dm.setup("fit")
        >>> dm.input_dim, dm.feature_names, dm.train_data[0].shape
        (1, ['x'], torch.Size([8, 1]))
        >>> os.remove(f.name)
    """

    def __init__(
        self,
        path: str,
        target: str,
        features: list[str] | None = None,
        val_fraction: float = 0.1,
        test_fraction: float = 0.1,
        predict_path: str | None = None,
        batch_size: int | Literal["auto"] = "auto",
        eval_batch_size: int = 10_000,
        seed: int = 0,
        in_memory: bool | Literal["auto"] = "auto",
        shuffle_buffer: int = 1 << 18,
    ) -> None:
        super().__init__(AUTO_BATCH_SIZES[0] if batch_size == "auto" else batch_size, eval_batch_size, seed)
        self.auto_batch_size = batch_size == "auto"  # then set once the training rows are counted
        self.in_memory = check("data.in_memory", in_memory)
        self.shuffle_buffer = check("data.shuffle_buffer", shuffle_buffer)
        self.val_fraction = check("data.val_fraction", val_fraction)
        self.test_fraction = check("data.test_fraction", test_fraction)
        if self.val_fraction + self.test_fraction >= 1:
            raise UserInputError(
                "val_fraction + test_fraction must be < 1 (the rest is for training),"
                f" got {val_fraction} + {test_fraction}"
            )
        self.path = path
        self.target = target
        self.predict_path = predict_path
        self._features = select_columns(path, read_header(path), target, features)
        self.standardizer: Standardizer | None = None
        self._predict_table: Table | None = None  # the rows `predict` runs on, raw
        self._predict_x: Tensor | None = None  # ... standardised
        self._streamed: StreamedTable | None = None  # the table, once scanned; streamed, or held in memory

    @property
    def input_dim(self) -> int:
        return len(self._features)

    @property
    def target_name(self) -> str:
        return self.target

    @property
    def feature_names(self) -> list[str]:
        return list(self._features)

    def prepare_data(self) -> None:
        # Lightning calls this before the logger makes the run directory: a bad file stops the run with
        # nothing written. setup() reads the file only where this did not run (other processes under DDP).
        stage = self.trainer.state.fn if self.trainer is not None else None  # a TrainerFn, which is a str
        self._read(stage or "fit")

    def setup(self, stage: str) -> None:
        self._read(stage)
        if self.val_data is None and self._in_memory_splits():
            self._standardize()

    @property
    def streaming(self) -> bool:
        """Whether the table is streamed; ``in_memory: auto`` decides once, on the rows the scan counted."""
        if self.in_memory == "auto":
            needed, available = BYTES_PER_VALUE * self.scanned.plan.num_rows * (self.input_dim + 1), available_memory()
            self.in_memory = available is None or needed <= available / 2
        return not self.in_memory

    @property
    def scanned(self) -> StreamedTable:
        assert self._streamed is not None, "setup() must run before the table is read"
        return self._streamed

    @property
    def stats(self) -> Standardizer:
        assert self.standardizer is not None, "setup() must run before the statistics are known"
        return self.standardizer

    @property
    def ready(self) -> bool:
        return self._streamed is not None and (self.streaming or self.train_data is not None)

    def _read(self, stage: str) -> None:
        """Scans the table once (rows counted, cells checked, statistics); for ``predict``, reads its rows."""
        if self._streamed is None:
            names = [*self._features, self.target]
            self._streamed = StreamedTable(
                self.path, names, self.val_fraction, self.test_fraction, self.seed, self.shuffle_buffer
            )
            if self.auto_batch_size:
                self.batch_size = auto_batch_size(self._streamed.plan.counts[TRAIN])
            if self.standardizer is None:  # not already restored from a checkpoint
                # Training needs statistics it can learn from. validate/test/predict usually get the
                # training run's from the checkpoint (load_state_dict, after setup), whatever the file
                # holds now; these stand in until then.
                self.standardizer = self._streamed.standardizer().checked(self.path, names, for_training=stage == "fit")
        if stage == "predict" and self._predict_table is None:
            path = self.predict_path if self.predict_path is not None else self.path
            self._predict_table = read_table(path, self._features, optional=[self.target])
            self._predict_x = self._standardized_inputs(self._predict_table)

    def _standardized_inputs(self, table: Table) -> Tensor:
        """The feature columns of ``table`` in the model's units, float32.

        Raises:
            UserInputError: naming the line or row and the column of the first value that overflows float32.
        """
        shift, scale = (t[: self.input_dim].numpy() for t in self.stats.shift_and_scale())
        columns = [table.columns[name].numpy() for name in self._features]
        with np.errstate(over="ignore"):  # a value beyond float32 becomes inf, refused below
            x = torch.from_numpy(standardized(columns, np.ones(len(table), dtype=bool), shift, scale))
        bad = (~torch.isfinite(x)).nonzero()
        if len(bad):
            row, column = (int(i) for i in bad[0])
            value = table.columns[self._features[column]][row].item()
            raise UserInputError(
                f"{table.path}: {table.position_name} {table.positions[row].item()}, column"
                f" {self._features[column]!r}: {value:g} is beyond float32 once standardised (the training mean and"
                " standard deviation); the model cannot predict from it"
            )
        return x

    def _in_memory_splits(self) -> tuple[str, ...]:
        """The splits kept in memory as tensors: all of them, or, when streaming, the held-out ones if small."""
        if not self.streaming:
            return ("train", "val", "test")
        return ("val", "test") if self.scanned.held_out is not None else ()

    def _standardize(self) -> None:
        """The splits held in memory (``_in_memory_splits``) as float32 tensors in the units the model is trained in."""
        splits = self.scanned.materialize(self.stats, self._in_memory_splits())
        self.train_data, self.val_data, self.test_data = (splits.get(name) for name in ("train", "val", "test"))

    def _stream(self, split: str, batch_size: int, this_process: bool = True) -> StreamLoader:
        """A loader of one split of the streamed table; under DDP, of this process's share of it."""
        trainer = self.trainer if this_process else None
        rank, world = (trainer.global_rank, trainer.world_size) if trainer is not None else (0, 1)
        return self.scanned.loader(split, batch_size, self.stats, rank, world)

    def train_dataloader(self) -> Any:
        return self._stream("train", self.batch_size) if self.streaming else super().train_dataloader()

    def val_dataloader(self) -> Any:
        return super().val_dataloader() if self.val_data is not None else self._stream("val", self.eval_batch_size)

    def test_dataloader(self) -> Any:
        return super().test_dataloader() if self.test_data is not None else self._stream("test", self.eval_batch_size)

    def split_chunks(self, split: str) -> Iterator[tuple[Tensor, Tensor]] | None:
        """Every row of a split: from memory where it is held there, else read from disk (by this process alone)."""
        if split in self._in_memory_splits():
            return super().split_chunks(split)
        if self.scanned.plan.counts[SPLITS[split]] == 0:
            return None  # an empty split, as in memory (val_fraction or test_fraction 0)
        return iter(self._stream(split, self.eval_batch_size, this_process=False))

    def training_moments(self) -> Moments:
        """From the pass over the table, in the model's units (in memory or streamed): no second read."""
        return self.scanned.raw_moments.rescaled(*self.stats.shift_and_scale())

    def residual_sum(self) -> None:
        return None

    def state_dict(self) -> dict[str, Any]:
        """The standardisation statistics and the columns they belong to: plain tensors, floats and strings."""
        if self.standardizer is None:
            return {}
        # The seed with the statistics: the split is drawn from it, and a test with another would score training rows.
        state = {"target": self.target, "features": list(self._features), "seed": self.seed}
        return state | self.standardizer.state_dict()

    def load_state_dict(self, state_dict: dict[str, Any]) -> None:
        """Restores the checkpoint's statistics (after ``setup``; checked by ``linreg.checkpointing.admission``)."""
        restored = Standardizer.from_state_dict(state_dict)
        changed = self.standardizer is None or not restored.same_as(self.standardizer)
        self.standardizer = restored
        if changed and self.val_data is not None:  # the file's statistics differ from the training run's
            self._standardize()
        if changed and self._predict_table is not None:
            self._predict_x = self._standardized_inputs(self._predict_table)

    def to_original_units(self, w: Tensor, b: Tensor) -> tuple[Tensor, Tensor]:
        """Coefficients of the standardised model as those of ``target = columns @ w' + b'`` (float64)."""
        return self.stats.to_original_units(w, b)

    def to_target_units(self, values: Tensor) -> Tensor:
        return self.stats.inverse_y(values)

    @property
    def target_scale(self) -> float:
        return self.stats.y_std

    def prediction_columns(self, predictions: Tensor) -> dict[str, Tensor]:
        """``line`` (of a CSV file) or ``row`` (of Parquet), the actual target where the file has it, the prediction."""
        assert self._predict_table is not None, "setup('predict') comes first"
        position = self._predict_table.position_name
        columns = {position: self._predict_table.positions}
        if self.target in self._predict_table.columns:
            actual = self.target if self.target not in (position, "prediction") else f"actual_{self.target}"
            columns[actual] = self._predict_table.columns[self.target]
        columns["prediction"] = self.to_target_units(predictions.reshape(-1))
        return columns

    def predict_inputs(self) -> tuple[Tensor] | None:
        """Every row of ``path``, or of ``predict_path`` when given."""
        return (self._predict_x,) if self._predict_x is not None else None


class CSVRegressionData(TableRegressionData):
    """A table of your own, CSV or Parquet: ``TableRegressionData`` by the name ``configs/csv.yaml`` uses."""


class StreamedTable:
    """The splits of ``names`` (features, target) read from disk: one pass for checks and statistics, then loaders."""

    def __init__(
        self, path: str, names: list[str], val_fraction: float, test_fraction: float, seed: int, shuffle_buffer: int
    ) -> None:
        self.path, self.names, self.seed, self.shuffle_buffer = path, names, seed, shuffle_buffer
        needed, available, d = MOMENT_MATRICES * 8 * len(names) ** 2, available_memory(), len(names) - 1
        if available is not None and needed > available:  # refused before anything is read
            raise UserInputError(
                f"{path}: {d} features need {needed / 1e9:.3g} GB for their statistics ({MOMENT_MATRICES}"
                f" float64 matrices of (d + 1)² values, d = {d}) and {available / 1e9:.3g} GB is available;"
                " choose fewer columns with data.features"
            )
        self.pieces = pieces(path, count=names)  # the split is planned on the rows counted as read
        rows = sum(piece.rows or 0 for piece in self.pieces)
        self.plan = SplitPlan.of(rows, val_fraction, test_fraction, seed, path)
        # One pass checking every cell: the rows of each split per piece, the training rows' moments, and the
        # held-out rows as read where they are small (HELD_OUT_IN_MEMORY): materialize needs no second pass for them.
        self.raw_moments, self.counts = Moments.empty(len(names)), []  # counts[piece][split]
        small = BYTES_PER_VALUE * sum(self.plan.counts[1:]) * len(names) <= HELD_OUT_IN_MEMORY
        self.held_out: list[tuple[np.ndarray, list[np.ndarray]]] | None = [] if small else None
        for piece in self.pieces:
            count = np.zeros(3, dtype=np.int64)
            for split, columns in self.batches([piece]):
                train = split == TRAIN
                # The training rows, float64, one copy, column by column: Z is built column-major, as (k, rows) and
                # transposed, so each column is one contiguous write (and XᵀX is as fast either way).
                Z = np.empty((len(names), int(train.sum())))
                for j, column in enumerate(columns):
                    Z[j] = column[train]
                self.raw_moments.update(torch.from_numpy(Z).T)
                count += np.bincount(split, minlength=3)
                if self.held_out is not None and not train.all():
                    self.held_out.append((split[~train], [column[~train] for column in columns]))
            self.counts.append(count.tolist())

    def batches(self, pieces: Iterable[Piece]) -> Iterator[tuple[np.ndarray, list[np.ndarray]]]:
        """The checked record batches of ``pieces``: each row's split, and one float array per column."""
        for piece in pieces:
            for start, columns in read_piece(piece, self.names):
                yield self.plan.of_rows(start, len(columns[0])), columns

    def standardizer(self) -> Standardizer:
        """Means and standard deviations (population) of the training split, from the pass's moments."""
        mean, std, d = self.raw_moments.mean, self.raw_moments.std, len(self.names) - 1
        return Standardizer(mean[:d].clone(), std[:d].clone(), float(mean[d]), float(std[d]))

    def loader(
        self, split: str, batch_size: int, standardizer: Standardizer, rank: int = 0, world_size: int = 1
    ) -> StreamLoader:
        """A loader of one split: this process's pieces, the same batch count on every process; ``train`` shuffled."""
        if len(self.pieces) < world_size:
            raise UserInputError(
                f"{self.path}: {len(self.pieces)} row group(s) to share among {world_size} processes; streaming under"
                " DDP needs at least one each (write the table as Parquet with more, smaller row groups)"
            )
        rows = [count[SPLITS[split]] for count in self.counts]  # of the split, per piece
        # Every process takes as many steps (DDP steps together): as many as the process of fewest rows.
        num_batches = min(math.ceil(sum(rows[r::world_size]) / batch_size) for r in range(world_size))
        return StreamLoader(self, SPLITS[split], standardizer, batch_size, num_batches, rank, world_size)

    def materialize(
        self, standardizer: Standardizer, splits: tuple[str, ...] = ("train", "val", "test")
    ) -> dict[str, tuple[Tensor, Tensor]]:
        """``splits`` as float32 tensors ``(X, y)`` in the model's units, rows in table order: one more pass, unless
        they are held-out splits the first pass kept."""
        parts = [SPLITS[name] for name in splits]
        shift, scale = (t.numpy() for t in standardizer.shift_and_scale())
        d = len(self.names) - 1
        counts = [n if part in parts else 0 for part, n in enumerate(self.plan.counts)]  # by TRAIN, VAL, TEST
        X, y = [np.empty((n, d), np.float32) for n in counts], [np.empty((n, 1), np.float32) for n in counts]
        filled = [0, 0, 0]
        kept = self.held_out is not None and TRAIN not in parts
        if TRAIN in parts:  # the whole table is read again: the rows kept are not needed
            self.held_out = None
        for split, columns in self.held_out if kept else self.batches(self.pieces):  # type: ignore[union-attr]
            for part in parts:
                block = standardized(columns, split == part, shift, scale)
                rows = slice(filled[part], filled[part] + len(block))
                X[part][rows], y[part][rows] = block[:, :d], block[:, d:]
                filled[part] = rows.stop
        return {name: (torch.from_numpy(X[SPLITS[name]]), torch.from_numpy(y[SPLITS[name]])) for name in splits}


def standardized(columns: Sequence[np.ndarray], keep: np.ndarray, shift: np.ndarray, scale: np.ndarray) -> np.ndarray:
    """The ``keep`` rows of a record batch's ``columns`` in the model's units, a ``(rows, columns)`` float32 block.

    ``(value - shift) / scale`` in float64, as ``Standardizer.transform_x``, rounded once: streamed or in memory alike.
    """
    block = np.empty((int(keep.sum()), len(columns)), np.float32)
    for j, column in enumerate(columns):  # column by column into the row-major block: the faster layout measured
        block[:, j] = np.subtract(column[keep], shift[j], dtype=np.float64) / scale[j]
    return block


def read_ahead(items: Iterator[T], depth: int = 2) -> Iterator[T]:
    """``items``, computed by one thread up to ``depth`` items ahead of the caller.

    Arrow's decoding and numpy's arithmetic release the GIL, so a streamed table's next record batch is read
    and standardised while SGD steps on this one. The items come in order, and an error raised while computing
    one is raised here, at that item; leaving early stops the thread after the item it is on.
    """
    pool = ThreadPoolExecutor(max_workers=1, thread_name_prefix="linreg-read-ahead")
    pending = deque(pool.submit(next, items, _END) for _ in range(depth))
    try:
        while (item := pending.popleft().result()) is not _END:
            pending.append(pool.submit(next, items, _END))
            yield item
    finally:
        pool.shutdown(wait=True, cancel_futures=True)
        if isinstance(items, Generator):
            items.close()


class StreamLoader:
    """Mini-batches of one split of a streamed table, resumable mid-epoch; Lightning's ``sampler`` protocol.

    Rows are standardised as read into a float32 buffer of ``shuffle_buffer`` rows, cut into batches in a seeded
    order (``TRAIN`` only; its pieces too), rows short of a batch kept for the next fill. Memory: the buffer and
    three record batches. Under DDP, this process reads every ``world_size``-th piece from ``rank``.
    """

    def __init__(
        self,
        table: StreamedTable,
        split: int,
        standardizer: Standardizer,
        batch_size: int,
        num_batches: int,
        rank: int = 0,
        world_size: int = 1,
    ) -> None:
        self.table, self.pieces, self.d = table, table.pieces[rank::world_size], len(table.names) - 1
        self.split, self.shift, self.scale = split, *(t.numpy() for t in standardizer.shift_and_scale())
        self.batch_size, self.num_batches = batch_size, num_batches
        self.shuffle, self.seed, self.rank = split == TRAIN, table.seed, rank
        self.shuffle_buffer = max(table.shuffle_buffer, batch_size) if self.shuffle else batch_size
        # Lightning calls `loader.sampler.set_epoch(epoch)` at the start of every epoch (as for a DistributedSampler),
        # and reads `batch_sampler` to tell a shuffling loader: this object answers both.
        self.sampler = self
        self.batch_sampler = None
        self.epoch = 0
        self.position = EpochPosition(batch_size)

    def set_epoch(self, epoch: int) -> None:
        self.epoch = epoch

    def __len__(self) -> int:
        return self.num_batches

    def __iter__(self) -> Iterator[tuple[Tensor, Tensor]]:
        skip = self.position.start_pass(self.epoch, self.num_batches)
        for done, batch in enumerate(self._rows_in_batches()):  # the skipped batches are read, to keep the order
            if done == self.num_batches:
                return
            if done >= skip:
                self.position.batches_done = done + 1
                yield batch

    def _rows_in_batches(self) -> Iterator[tuple[Tensor, Tensor]]:
        """The split's rows in model units, ``batch_size`` at a time: the pieces in this epoch's order, buffered."""
        rng = np.random.default_rng([self.seed, self.epoch, self.rank])
        order = rng.permutation(len(self.pieces)) if self.shuffle else range(len(self.pieces))
        blocks = (
            standardized(columns, split == self.split, self.shift, self.scale)
            for split, columns in self.table.batches(self.pieces[i] for i in order)
        )
        buffer, filled = np.empty((self.shuffle_buffer, self.d + 1), np.float32), 0
        for rows in read_ahead(blocks):
            done = 0
            while done < len(rows):
                step = min(len(rows) - done, self.shuffle_buffer - filled)
                buffer[filled : filled + step] = rows[done : done + step]
                filled, done = filled + step, done + step
                if filled == self.shuffle_buffer:
                    filled = yield from self._drain(buffer, filled, rng, last=False)
        if filled:
            yield from self._drain(buffer, filled, rng, last=True)

    def _drain(
        self, buffer: np.ndarray, filled: int, rng: np.random.Generator, last: bool
    ) -> Generator[tuple[Tensor, Tensor], None, int]:
        """Batches of the buffer's ``filled`` rows in a random order; returns the rest, moved to its front.

        Gathered by numpy: one thread, no thread pool to wake per batch (torch's costs more than the copy).
        """
        order = rng.permutation(filled) if self.shuffle else np.arange(filled)
        whole = filled if last else filled - filled % self.batch_size
        for start in range(0, whole, self.batch_size):
            rows = order[start : min(start + self.batch_size, whole)]
            # Copies (the buffer is refilled under them), each contiguous.
            yield torch.from_numpy(buffer[rows, : self.d]), torch.from_numpy(buffer[rows, self.d :])
        rest = order[whole:]
        buffer[: len(rest)] = buffer[rest]
        return len(rest)

    def state_dict(self) -> dict[str, Any]:
        """Where the epoch is: restored, a resumed run replays the same order and skips what was trained on."""
        return self.position.state_dict(self.epoch)

    def load_state_dict(self, state: dict[str, Any]) -> None:
        self.position.load_state_dict(state)
