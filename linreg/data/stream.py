"""Streaming a table from disk in record batches: one pass of statistics, and a resumable loader.

For tables larger than memory (``TableRegressionData(in_memory=False)``). No Lightning here but the
loader protocol Lightning uses (``__iter__``, ``__len__``, ``state_dict``/``load_state_dict``, and a
``sampler`` whose ``set_epoch`` Lightning calls at each epoch).

- A table is read in **pieces** (``linreg.data.table.read_piece``): each row group of each Parquet file, or
  a whole CSV file. Under DDP each process reads every ``world_size``-th piece: processes on several
  machines share one data set.
- Each row's split comes from a hash of its position (``linreg.data.splits.SplitPlan``), as for a table
  read whole: nothing is materialised to split the table, and the split is the same in both modes.
- ``scan`` reads the table once: it checks every cell, counts each split per piece, and accumulates the
  training split's ``Moments`` (standardisation statistics and least squares, in float64).
- ``StreamLoader`` yields mini-batches: each epoch, its pieces in a seeded order, rows shuffled within a
  buffer of ``shuffle_buffer`` float32 rows. Memory holds the buffer and one record batch, whatever the
  table's size.
"""

from __future__ import annotations

from collections.abc import Generator, Iterator, Sequence
from dataclasses import dataclass
from typing import Any

import numpy as np
import torch
from torch import Tensor

from linreg.data.loading import EpochPosition
from linreg.data.splits import TRAIN, SplitPlan
from linreg.data.table import Piece, read_piece
from linreg.stats.ols import Moments


def standardized(values: np.ndarray, shift: float, scale: float) -> np.ndarray:
    """``(values - shift) / scale`` in float64, as ``Standardizer.transform_x`` computes it: the one standardisation
    of a table's rows, streamed or held in memory (the caller rounds the result once, to float32).

    Example:
        >>> standardized(np.array([1.0, 3.0], dtype=np.float32), 2.0, 0.5).tolist()
        [-2.0, 2.0]
    """
    return np.subtract(values, shift, dtype=np.float64) / scale


@dataclass
class Scan:
    """What one pass over the table found: rows of each split per piece, and the training split's moments."""

    counts: list[list[int]]  # counts[piece][split]
    moments: Moments  # of the training rows' columns, features then target


def scan(table: Sequence[Piece], names: Sequence[str], plan: SplitPlan) -> Scan:
    """Reads the table's pieces once: checks every cell, counts the splits, accumulates the training moments."""
    moments, counts = Moments.empty(len(names)), []
    for piece in table:
        count = np.zeros(3, dtype=np.int64)
        for start, columns in read_piece(piece, names):
            split = plan.of_rows(start, len(columns[0]))
            train = split == TRAIN
            # The training rows, float64, one copy, column by column: Z is built column-major, as (k, rows) and
            # transposed, so each column is one contiguous write (and XᵀX is as fast either way).
            Z = np.empty((len(names), int(train.sum())))
            for j, column in enumerate(columns):
                Z[j] = column[train]
            moments.update(torch.from_numpy(Z).T)
            count += np.bincount(split, minlength=3)
        counts.append(count.tolist())
    return Scan(counts, moments)


class StreamLoader:
    """Mini-batches of one split of a streamed table, resumable mid-epoch; Lightning's ``sampler`` protocol.

    Rows are standardised as they are read (in float64, as ``Standardizer`` does, then rounded to float32)
    into one float32 buffer of ``shuffle_buffer`` rows; a full buffer is cut into batches in a seeded random
    order (gathered, so the buffer itself is never copied), the rows short of a whole batch staying for the
    next fill. Memory: the buffer (4 bytes x columns x rows) and one record batch, whatever the table's size.

    Args:
        names: the table's columns to read, features then target.
        pieces: this process's pieces of the table.
        split: ``TRAIN``, ``VAL`` or ``TEST``; ``plan``: the split of every row.
        shift, scale: per column of ``names``, the model's units are ``(value - shift) / scale``.
        batch_size: rows per batch; ``num_batches``: batches per epoch (equal on every process under DDP).
        shuffle: seeded piece order and a shuffle buffer of ``shuffle_buffer`` rows; else table order.
        seed: seeds every epoch's order (with the epoch and the process rank).
    """

    def __init__(
        self,
        names: Sequence[str],
        pieces: Sequence[Piece],
        split: int,
        plan: SplitPlan,
        shift: np.ndarray,
        scale: np.ndarray,
        batch_size: int,
        num_batches: int,
        shuffle: bool,
        seed: int,
        rank: int = 0,
        shuffle_buffer: int = 1 << 18,
    ) -> None:
        self.names, self.pieces = list(names), list(pieces)
        self.split, self.plan, self.shift, self.scale = split, plan, shift, scale
        self.batch_size, self.num_batches = batch_size, num_batches
        self.shuffle, self.seed, self.rank = shuffle, seed, rank
        self.shuffle_buffer = max(shuffle_buffer, batch_size)
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
        d = len(self.names) - 1
        X, y = np.empty((self.shuffle_buffer, d), np.float32), np.empty((self.shuffle_buffer, 1), np.float32)
        targets = [X[:, j] for j in range(d)] + [y[:, 0]]  # views: written column by column
        filled = 0
        for i in order:
            for start, columns in read_piece(self.pieces[i], self.names):
                keep = self.plan.of_rows(start, len(columns[0])) == self.split
                rows = [column[keep] for column in columns]
                done, count = 0, len(rows[0])
                while done < count:
                    step = min(count - done, self.shuffle_buffer - filled)
                    for j, (column, target) in enumerate(zip(rows, targets, strict=True)):
                        target[filled : filled + step] = standardized(
                            column[done : done + step], self.shift[j], self.scale[j]
                        )
                    filled, done = filled + step, done + step
                    if filled == self.shuffle_buffer:
                        filled = yield from self._drain(X, y, filled, rng, last=False)
        if filled:
            yield from self._drain(X, y, filled, rng, last=True)

    def _drain(
        self, X: np.ndarray, y: np.ndarray, filled: int, rng: np.random.Generator, last: bool
    ) -> Generator[tuple[Tensor, Tensor], None, int]:
        """Batches of the buffer's ``filled`` rows in a random order; the rest (short of a batch) moved to its front.

        Gathered by numpy: one thread, no thread pool to wake per batch (torch's costs more than the copy).

        Returns:
            The rows left in the buffer.
        """
        order = rng.permutation(filled) if self.shuffle else np.arange(filled)
        whole = filled if last else filled - filled % self.batch_size
        for start in range(0, whole, self.batch_size):
            rows = order[start : min(start + self.batch_size, whole)]
            yield torch.from_numpy(X[rows]), torch.from_numpy(y[rows])  # copies: the buffer is refilled under them
        rest = order[whole:]
        X[: len(rest)], y[: len(rest)] = X[rest], y[rest]
        return len(rest)

    def state_dict(self) -> dict[str, Any]:
        """Where the epoch is: restored, a resumed run replays the same order and skips what was trained on."""
        return self.position.state_dict(self.epoch)

    def load_state_dict(self, state: dict[str, Any]) -> None:
        self.position.load_state_dict(state)
