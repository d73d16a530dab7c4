"""``TableRegressionData``: a table of numeric columns (CSV, CSV.gz, Parquet) as a LightningDataModule.

The header is read in ``__init__`` (the CLI needs ``input_dim`` before anything else runs), the rows in
``prepare_data``/``setup``. Features and target are standardised with statistics of the training split
(see ``linreg.data.scaling`` for why), and those statistics are saved in checkpoints, so ``validate``,
``test`` and ``predict`` from a checkpoint apply the transform the model was trained with, even if the
file has changed since.

The table is read in pieces (``linreg.data.table``), its statistics and least-squares
reference accumulated in one pass (``linreg.data.streamed``); then a table that fits in memory is held
as tensors, and one that does not is read from disk again each epoch. Both split the rows alike
(``linreg.data.splits``: by a seeded hash of each row's position), so ``in_memory`` (``auto`` compares
the table's size with the memory available) changes speed and memory, never which rows are trained on.
"""

from __future__ import annotations

from collections.abc import Iterator
from dataclasses import replace
from typing import Any, Literal

import torch
from torch import Tensor

from linreg.constraints import check, check_int
from linreg.data.base import RegressionData
from linreg.data.scaling import Standardizer
from linreg.data.splits import TRAIN
from linreg.data.stream import StreamLoader
from linreg.data.streamed import SPLITS, StreamedTable, exceeds_memory
from linreg.data.table import Table, read_header, read_table, select_columns
from linreg.stats.ols import Moments
from linreg.validation import UserInputError

# The largest magnitude whose square float64 holds (about 1.3e154), rounded down.
_LARGEST_SQUARABLE = 1e154
# The smallest whose square is a normal float64 (about 1.5e-154), rounded up: below it the moments underflow (a
# spread of 1e-200 computes as 0), and the statistics and MSEs of the column cannot be trusted.
_SMALLEST_SQUARABLE = 1e-154
# The smallest spread, relative to a column's mean, whose coefficient the model's float32 arithmetic resolves.
_RESOLUTION = 2.0**-24
AUTO_BATCH_SIZES = (16, 4096)  # batch_size auto: the smallest and the largest
# A streamed table keeps its validation and test rows in memory when their float32 tensors take at most this:
# validation after every epoch, the report and the plots then read nothing from disk.
HELD_OUT_IN_MEMORY = 64 << 20


def auto_batch_size(train_rows: int) -> int:
    """Rows per SGD step for ``batch_size: auto``: a twentieth of the training rows, from 16 to 4096.

    A step's cost is mostly fixed (Lightning's machinery, about half a millisecond on a CPU) up to thousands
    of rows, so large tables take large batches; small ones keep 20 steps an epoch, so that the epochs the
    config gives are enough steps.

    Example:
        >>> auto_batch_size(320), auto_batch_size(100), auto_batch_size(800_000)
        (16, 16, 4096)
    """
    low, high = AUTO_BATCH_SIZES
    return min(high, max(low, train_rows // 20))


class TableRegressionData(RegressionData):
    """Train, validation and test splits of the rows of a table; ``predict`` runs on every row.

    Args:
        path: a CSV file (``.csv``, ``.csv.gz``; its first line names the columns), a Parquet file, or a
            directory of Parquet files; local, or on object storage (``s3://bucket/prefix/``, ``gs://``, ...).
        target: the column to predict.
        features: the columns to predict it from; all other columns when not given.
        val_fraction: share of the rows held out for validation (``val/loss`` after every epoch); 0 trains on
            every row (but ``test_fraction``'s) and validation is off.
        test_fraction: share of the rows held out for ``test``; may be 0.
        predict_path: a table of rows to predict instead of every row of ``path``; it needs the
            feature columns, and the target column may be absent or blank. Read in memory.
        batch_size: rows per SGD step; ``auto`` (``auto_batch_size``): a twentieth of the training rows, from 16
            to 4096, so a small table still gets 20 steps an epoch and a large one batches that keep a step's
            fixed cost small beside its arithmetic.
        eval_batch_size: rows per validation/test/predict batch (no gradient step: large is faster).
        seed: seeds the split and the shuffling order.
        in_memory: ``True`` reads the table into memory; ``False`` streams it from disk every epoch;
            ``auto`` streams when its tensors would take more than half the memory available.
        shuffle_buffer: when streaming, rows shuffled together (the pieces of the table come in a new
            order every epoch; rows mix within this many). Memory: 4 bytes x columns x this.

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
        if in_memory not in (True, False, "auto"):
            raise UserInputError(f"in_memory must be true, false or auto, got {in_memory!r}")
        self.in_memory = in_memory
        self.shuffle_buffer = check_int("shuffle_buffer", shuffle_buffer, 1)
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
        """Whether the table is streamed from disk (decided once, by ``in_memory``)."""
        if self.in_memory == "auto":
            self.in_memory = not exceeds_memory(self.path, len(self._features) + 1)
        return not self.in_memory

    @property
    def ready(self) -> bool:
        return self._streamed is not None and (self.streaming or self.train_data is not None)

    def _read(self, stage: str) -> None:
        """One pass over the table, streamed or not: every cell checked, the splits counted, the statistics."""
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
                self.standardizer = self._checked(self._streamed.standardizer(), for_training=stage == "fit")
        if stage == "predict" and self._predict_table is None:
            path = self.predict_path if self.predict_path is not None else self.path
            self._predict_table = read_table(path, self._features, optional=[self.target])
            self._predict_x = self._standardized_inputs(self._predict_table)

    def _standardized_inputs(self, table: Table) -> Tensor:
        """The feature columns of ``table`` in the model's units, float32; a row beyond float32 there is refused.

        Raises:
            UserInputError: naming the line or row and the column of the first value that overflows float32.
        """
        assert self.standardizer is not None
        x = self.standardizer.transform_x(self._x(table)).float()
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

    def _checked(self, standardizer: Standardizer, for_training: bool) -> Standardizer:
        """The training split's statistics; a constant column (std 0) cannot be standardised, nor learnt from.

        ``for_training=False``: a constant column is kept, with a std of 1 (no model is fitted to it here).
        A column whose statistics overflow, or whose squares would (MSEs in its units), is refused by name.
        """
        stds = [*standardizer.x_std.tolist(), standardizer.y_std]
        means = [*standardizer.x_mean.tolist(), standardizer.y_mean]
        for name, std, mean in zip([*self._features, self.target], stds, means, strict=True):
            if not (abs(mean) <= _LARGEST_SQUARABLE and std <= _LARGEST_SQUARABLE):
                raise UserInputError(
                    f"{self.path}: column {name!r} is too large for the statistics (mean {mean:g}, standard deviation"
                    f" {std:g}); values must stay within ±1e154, whose squares float64 holds: rescale the column"
                )
        if not for_training:
            return replace(
                standardizer,
                x_std=torch.where(standardizer.x_std == 0, 1.0, standardizer.x_std),
                y_std=standardizer.y_std or 1.0,
            )
        for name, std, mean in zip([*self._features, self.target], stds, means, strict=True):
            if 0 < max(abs(mean), std) < _SMALLEST_SQUARABLE:
                raise UserInputError(
                    f"{self.path}: column {name!r} is too small for the statistics (mean {mean:g}, standard deviation"
                    f" {std:g}); its squares underflow below 1e-308, the smallest float64: multiply the column by a"
                    " power of ten"
                )
            if std == 0:
                raise UserInputError(
                    f"{self.path}: column {name!r} is constant on the training split (every value is {mean:g} as a"
                    " float64);"
                    + (" there is nothing to predict" if name == self.target else " leave it out of data.features")
                )
            if std < abs(mean) * _RESOLUTION:  # e.g. integers near 2**53: float32 weights cannot resolve them
                raise UserInputError(
                    f"{self.path}: column {name!r} varies too little for its size to be fitted (standard deviation"
                    f" {std:g} around a mean of {mean:g}); subtract a constant from it, or leave it out"
                )
        return standardizer

    def _x(self, table: Table) -> Tensor:
        """The feature columns as ``(n, d)``: float32 if the file stores them so (exact), else float64."""
        columns = [table.columns[name] for name in self._features]
        dtype = torch.float32 if all(c.dtype == torch.float32 for c in columns) else torch.float64
        return torch.stack([c.to(dtype) for c in columns], dim=1)

    def _in_memory_splits(self) -> tuple[str, ...]:
        """The splits kept in memory as tensors: all of them, or, when streaming, the held-out ones if small."""
        if not self.streaming:
            return ("train", "val", "test")
        assert self._streamed is not None, "_read() comes first"
        held_out = sum(self._streamed.plan.counts[1:]) * (self.input_dim + 1) * 4  # float32 bytes
        return ("val", "test") if held_out <= HELD_OUT_IN_MEMORY else ()

    def _standardize(self) -> None:
        """The splits held in memory (``_in_memory_splits``) as float32 tensors in the units the model is trained in."""
        assert self._streamed is not None, "_read() comes first"
        assert self.standardizer is not None
        splits = self._streamed.materialize(self.standardizer, self._in_memory_splits())
        self.train_data, self.val_data, self.test_data = (splits.get(name) for name in ("train", "val", "test"))

    def _stream(self, split: str, batch_size: int, this_process: bool = True) -> StreamLoader:
        """A loader of one split of the streamed table; under DDP, of this process's share of it."""
        assert self._streamed is not None, "setup() must run before the dataloaders are asked for"
        assert self.standardizer is not None
        trainer = self.trainer if this_process else None
        rank, world = (trainer.global_rank, trainer.world_size) if trainer is not None else (0, 1)
        return self._streamed.loader(split, batch_size, self.standardizer, rank, world)

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
        if self._streamed is not None and self._streamed.plan.counts[SPLITS[split]] == 0:
            return None  # an empty split, as in memory (val_fraction or test_fraction 0)
        return iter(self._stream(split, self.eval_batch_size, this_process=False))

    def training_moments(self) -> Moments:
        """From the pass over the table, in the model's units (in memory or streamed): no second read."""
        assert self._streamed is not None, "setup() comes first"
        assert self.standardizer is not None
        return self._streamed.moments(self.standardizer)

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
        """Restores the statistics of the checkpoint's training split (Lightning calls it after ``setup``); the
        command line has checked them (``linreg.checkpointing.admission``)."""
        restored = Standardizer.from_state_dict(state_dict)
        changed = self.standardizer is None or not _same_statistics(restored, self.standardizer)
        self.standardizer = restored
        if changed and self.val_data is not None:  # the file's statistics differ from the training run's
            self._standardize()
        if changed and self._predict_table is not None:
            self._predict_x = self._standardized_inputs(self._predict_table)

    def to_original_units(self, w: Tensor, b: Tensor) -> tuple[Tensor, Tensor]:
        """Coefficients of the standardised model as those of ``target = columns @ w' + b'`` (float64)."""
        assert self.standardizer is not None, "setup() must run before the statistics are known"
        return self.standardizer.to_original_units(w, b)

    def to_target_units(self, values: Tensor) -> Tensor:
        assert self.standardizer is not None, "setup() must run before the statistics are known"
        return self.standardizer.inverse_y(values)

    @property
    def target_scale(self) -> float:
        assert self.standardizer is not None, "setup() must run before the statistics are known"
        return self.standardizer.y_std

    def prediction_columns(self, predictions: Tensor) -> dict[str, Tensor]:
        """``line`` (of a CSV file) or ``row`` (of Parquet), the actual target where the file has it, the prediction."""
        assert self._predict_table is not None, "setup('predict') comes first"
        assert self.standardizer is not None
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


def _same_statistics(a: Standardizer, b: Standardizer) -> bool:
    return (
        torch.equal(a.x_mean, b.x_mean) and torch.equal(a.x_std, b.x_std) and (a.y_mean, a.y_std) == (b.y_mean, b.y_std)
    )
