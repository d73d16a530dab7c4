"""``TableRegressionData``: a table of numeric columns (CSV, CSV.gz, Parquet) as a LightningDataModule.

The header is read in ``__init__`` (the CLI needs ``input_dim`` before anything else runs), the rows in
``prepare_data``/``setup``. Features and target are standardised with statistics of the training split
(see ``linreg.data.scaling`` for why), and those statistics are saved in checkpoints, so ``validate``,
``test`` and ``predict`` from a checkpoint apply the transform the model was trained with, even if the
file has changed since.

A table that fits in memory is read whole (``linreg.data.table``) and split by a seeded permutation.
One that does not is streamed from disk (``linreg.data.stream``): split row by row by a seeded hash,
its statistics and least-squares reference accumulated in one pass, its batches read each epoch.
``in_memory`` chooses; ``auto`` compares the table's size with the memory available.
"""

from __future__ import annotations

import math
import os
from collections.abc import Iterator
from dataclasses import replace
from pathlib import Path
from typing import Any, Literal

import torch
from torch import Tensor

from linreg.data.base import RegressionData
from linreg.data.scaling import Standardizer
from linreg.data.splits import TEST, TRAIN, VAL, split_rows
from linreg.data.stream import Scan, StreamLoader, pieces, scan
from linreg.data.table import Table, is_parquet, parquet_files, read_header, read_table, select_columns
from linreg.stats.ols import LeastSquaresFit, least_squares_from_moments
from linreg.validation import UserInputError, check_float, check_int

SPLITS = {"train": TRAIN, "val": VAL, "test": TEST}


# The largest magnitude whose square float64 holds (about 1.3e154), rounded down.
_LARGEST_SQUARABLE = 1e154


class TableRegressionData(RegressionData):
    """Train, validation and test splits of the rows of a table; ``predict`` runs on every row.

    Args:
        path: a CSV file (``.csv``, ``.csv.gz``; its first line names the columns), a Parquet file, or a
            directory of Parquet files.
        target: the column to predict.
        features: the columns to predict it from; all other columns when not given.
        val_fraction: share of the rows held out for validation (``val/loss`` after every epoch).
        test_fraction: share of the rows held out for ``test``; may be 0.
        predict_path: a table of rows to predict instead of every row of ``path``; it needs the
            feature columns, and the target column may be absent or blank. Read in memory.
        batch_size: rows per SGD step.
        eval_batch_size: rows per validation/test/predict batch (no gradient step: large is faster).
        seed: seeds the split and the shuffling order.
        in_memory: ``True`` reads the table into memory; ``False`` streams it from disk every epoch;
            ``auto`` streams when its tensors would take more than half the memory available.
        shuffle_buffer: when streaming, rows shuffled together (the pieces of the table come in a new
            order every epoch; rows mix within this many). Memory: 8 bytes x columns x this.

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
        batch_size: int = 32,
        eval_batch_size: int = 10_000,
        seed: int = 0,
        in_memory: bool | Literal["auto"] = "auto",
        shuffle_buffer: int = 1 << 18,
    ) -> None:
        super().__init__(batch_size, eval_batch_size, seed)
        if in_memory not in (True, False, "auto"):
            raise UserInputError(f"in_memory must be true, false or auto, got {in_memory!r}")
        self.in_memory = in_memory
        self.shuffle_buffer = check_int("shuffle_buffer", shuffle_buffer, 1)
        self.val_fraction = check_float("val_fraction", val_fraction, 0.0, strict=True)
        self.test_fraction = check_float("test_fraction", test_fraction, 0.0)
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
        self._table: Table | None = None  # every row of `path`, raw
        self._splits: tuple[Tensor, Tensor, Tensor] | None = None  # row indices of train, val, test
        self._predict_table: Table | None = None  # the rows `predict` runs on, raw
        self._predict_x: Tensor | None = None  # ... standardised
        self._scan: Scan | None = None  # what one pass over a streamed table found
        self._least_squares: tuple[Standardizer, LeastSquaresFit] | None = None  # of a streamed table

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
        if not self.streaming:
            self._standardize()

    @property
    def streaming(self) -> bool:
        """Whether the table is streamed from disk (decided once, by ``in_memory``)."""
        if self.in_memory == "auto":
            self.in_memory = not exceeds_memory(self.path, len(self._features) + 1)
        return not self.in_memory

    @property
    def ready(self) -> bool:
        return self._scan is not None if self.streaming else self.train_data is not None

    def _read(self, stage: str) -> None:
        if self.streaming and self._scan is None:
            self._scan = self._scan_table()
            if self.standardizer is None:
                self.standardizer = self._checked(self._standardizer_of(self._scan), for_training=stage == "fit")
        elif not self.streaming and self._table is None:
            self._table = read_table(self.path, [*self._features, self.target])
            self._splits = split_rows(len(self._table), self.val_fraction, self.test_fraction, self.seed, self.path)
            if self.standardizer is None:  # not already restored from a checkpoint
                # Training needs statistics it can learn from. validate/test/predict usually get the
                # training run's from the checkpoint (load_state_dict, after setup), whatever the file
                # holds now; these stand in until then.
                train = self._splits[0]
                fitted = Standardizer.fit(self._x(self._table)[train], self._table.columns[self.target][train])
                self.standardizer = self._checked(fitted, for_training=stage == "fit")
        if stage == "predict" and self._predict_table is None:
            if self.predict_path is not None:
                self._predict_table = read_table(self.predict_path, self._features, optional=[self.target])
            else:
                self._predict_table = (
                    self._table if self._table is not None else read_table(self.path, [*self._features, self.target])
                )
            if self.streaming:
                self._predict_x = self.standardizer.transform_x(self._x(self._predict_table)).float()

    def _scan_table(self) -> Scan:
        """One pass over a streamed table: every cell checked, the splits counted, the training moments."""
        found = scan(self.path, [*self._features, self.target], self.val_fraction, self.test_fraction, self.seed)
        train, val, test = (sum(count[s] for count in found.counts) for s in (TRAIN, VAL, TEST))
        if train < 2 or (self.val_fraction > 0 and val == 0) or (self.test_fraction > 0 and test == 0):
            raise UserInputError(
                f"{self.path}: {train + val + test} data rows are too few; val_fraction={self.val_fraction:g} and"
                f" test_fraction={self.test_fraction:g} left {train} for training, {val} for validation and"
                f" {test} for test (streamed tables are split row by row; read small ones with in_memory=true)"
            )
        return found

    def _standardizer_of(self, found: Scan) -> Standardizer:
        mean, std, d = found.moments.mean, found.moments.std, len(self._features)
        return Standardizer(mean[:d].clone(), std[:d].clone(), float(mean[d]), float(std[d]))

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
            if std == 0:
                raise UserInputError(
                    f"{self.path}: column {name!r} is constant on the training split (every value is {mean:g});"
                    + (" there is nothing to predict" if name == self.target else " leave it out of data.features")
                )
        return standardizer

    def _x(self, table: Table) -> Tensor:
        return torch.stack([table.columns[name] for name in self._features], dim=1)  # (n, d), float64

    def _standardize(self) -> None:
        """The splits (and predict rows) in the units the model is trained in: standardised, float32."""
        assert self._table is not None, "_read() comes first"
        assert self._splits is not None
        assert self.standardizer is not None
        X, y = self._x(self._table), self._table.columns[self.target].reshape(-1, 1)  # (n, d), (n, 1)
        X_s, y_s = self.standardizer.transform_x(X).float(), self.standardizer.transform_y(y).float()
        self.train_data, self.val_data, self.test_data = ((X_s[rows], y_s[rows]) for rows in self._splits)
        if self._predict_table is not None:
            self._predict_x = self.standardizer.transform_x(self._x(self._predict_table)).float()

    def _to_model_units(self, Z: Tensor) -> tuple[Tensor, Tensor]:
        """Rows of a streamed table, ``(rows, d + 1)`` float64, as ``(X, y)`` standardised float32."""
        assert self.standardizer is not None
        d = len(self._features)
        return self.standardizer.transform_x(Z[:, :d]).float(), self.standardizer.transform_y(Z[:, d:]).float()

    def _stream(
        self, split: str, batch_size: int, rank: int = 0, world_size: int = 1, training: bool = False
    ) -> StreamLoader:
        """A loader of one split of the streamed table: this process's pieces, the same batch count on each."""
        assert self._scan is not None, "setup() must run before the dataloaders are asked for"
        every = list(zip(pieces(self.path), self._scan.first_rows, self._scan.counts, strict=True))
        if len(every) < world_size:
            raise UserInputError(
                f"{self.path}: {len(every)} row group(s) to share among {world_size} processes; streaming under"
                " DDP needs at least one each (write the table as Parquet with more, smaller row groups)"
            )
        share = [
            [(p, first, count[SPLITS[split]]) for p, first, count in every[r::world_size]] for r in range(world_size)
        ]
        rows = [sum(n for *_, n in part) for part in share]
        num_batches = min(math.ceil(n / batch_size) for n in rows)  # equal on every process: DDP steps together
        return StreamLoader(
            self.path,
            [*self._features, self.target],
            share[rank],
            SPLITS[split],
            (self.val_fraction, self.test_fraction),
            self._to_model_units,
            batch_size,
            num_batches,
            shuffle=training,
            seed=self.seed,
            rank=rank,
            shuffle_buffer=self.shuffle_buffer,
        )

    def _loader_of(self, split: str, batch_size: int) -> StreamLoader:
        trainer = self.trainer
        rank, world = (trainer.global_rank, trainer.world_size) if trainer is not None else (0, 1)
        return self._stream(split, batch_size, rank, world, training=split == "train")

    def train_dataloader(self) -> Any:
        return self._loader_of("train", self.batch_size) if self.streaming else super().train_dataloader()

    def val_dataloader(self) -> Any:
        return self._loader_of("val", self.eval_batch_size) if self.streaming else super().val_dataloader()

    def test_dataloader(self) -> Any:
        return self._loader_of("test", self.eval_batch_size) if self.streaming else super().test_dataloader()

    def split_chunks(self, split: str) -> Iterator[tuple[Tensor, Tensor]] | None:
        """Every row of a split, read from disk when streaming (by this process alone)."""
        if not self.streaming:
            return super().split_chunks(split)
        return iter(self._stream(split, self.eval_batch_size))  # type: ignore[return-value]

    def least_squares(self, device: torch.device | None = None) -> LeastSquaresFit:
        """When streaming, the fit from the moments of the pass over the table, in the model's units."""
        if not self.streaming:
            return super().least_squares(device)
        assert self._scan is not None, "setup() comes first"
        assert self.standardizer is not None
        if self._least_squares is None or self._least_squares[0] is not self.standardizer:
            s = self.standardizer
            shift = torch.cat([s.x_mean, torch.tensor([s.y_mean], dtype=torch.float64)])
            scale = torch.cat([s.x_std, torch.tensor([s.y_std], dtype=torch.float64)])
            moments = self._scan.moments.rescaled(shift, scale)
            self._least_squares = (s, least_squares_from_moments(moments, self._features))
        return self._least_squares[1]

    def state_dict(self) -> dict[str, Any]:
        """The standardisation statistics and the columns they belong to: plain tensors, floats and strings."""
        if self.standardizer is None:
            return {}
        return {"target": self.target, "features": list(self._features), **self.standardizer.state_dict()}

    def load_state_dict(self, state_dict: dict[str, Any]) -> None:
        """Restores the statistics of the checkpoint's training split (Lightning calls it after ``setup``)."""
        saved = (state_dict["target"], list(state_dict["features"]))
        if saved != (self.target, self._features):
            raise UserInputError(
                f"the checkpoint was trained to predict {saved[0]!r} from {saved[1]};"
                f" this run asks for {self.target!r} from {self._features}"
            )
        self.standardizer = Standardizer.from_state_dict(state_dict)
        if self._table is not None and not self.streaming:
            self._standardize()

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
    """``TableRegressionData`` under the name ``configs/csv.yaml`` and earlier checkpoints use."""


def exceeds_memory(path: str, columns: int, fraction: float = 0.5) -> bool:
    """Whether the tensors of ``columns`` columns of the table at ``path`` would take over ``fraction`` of the
    memory available now.

    Reading costs about 24 bytes a value (Arrow's float64, the float64 tensor, the float32 splits). The
    rows of Parquet are known from its metadata; those of a CSV file are guessed from its size (a value
    takes at least 2 bytes of text, a gzipped file at least 5 times less).
    """
    if is_parquet(path):
        values = sum(metadata.num_rows for _, metadata in parquet_files(path)) * columns
    else:
        size = Path(path).stat().st_size if Path(path).is_file() else 0
        values = size * (5 if path.endswith(".gz") else 1) // 2
    return 24 * values > fraction * available_memory()


def available_memory() -> int:
    """Bytes of memory available to a new allocation (Linux's MemAvailable; free pages elsewhere)."""
    try:
        with open("/proc/meminfo") as meminfo:
            for line in meminfo:
                if line.startswith("MemAvailable:"):
                    return int(line.split()[1]) * 1024
    except OSError:
        pass
    return os.sysconf("SC_AVPHYS_PAGES") * os.sysconf("SC_PAGE_SIZE")
