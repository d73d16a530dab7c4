"""``StreamedTable``: a table read in pieces, whether held in memory or streamed from disk, and split alike.

No Lightning here. One pass over the table (``linreg.data.stream.scan``) checks every cell, counts each
split per piece, and accumulates the training split's moments in float64; the standardisation
statistics and the least-squares reference come from those moments. Then ``materialize`` reads the
splits into tensors, or each split is read again whenever its ``loader`` is iterated.

Also here: ``check_statistics_memory``, which refuses more features than the statistics have memory for, and
``exceeds_memory``, which ``in_memory=auto`` asks to choose between the two.
"""

from __future__ import annotations

import math

import numpy as np
import torch
from torch import Tensor

from linreg.data.files import is_parquet, parquet_files, version
from linreg.data.scaling import Standardizer
from linreg.data.splits import TEST, TRAIN, VAL, SplitPlan
from linreg.data.storage import name
from linreg.data.stream import Scan, StreamLoader, scan, standardized
from linreg.data.table import pieces, read_piece
from linreg.stats.ols import Moments
from linreg.validation import UserInputError, available_memory

SPLITS = {"train": TRAIN, "val": VAL, "test": TEST}
BYTES_PER_VALUE = 4  # a table held in memory: its float32 tensors (record batches are read one at a time)
# The statistics of k columns are (k, k) float64 matrices: the moments, a batch's ZᵀZ added to them, and the
# least-squares solve's copies, this many at once at most.
MOMENT_MATRICES = 4


class StreamedTable:
    """A table's splits read from disk: one pass for checks and statistics, then a loader per split.

    Args:
        path: a CSV file or a Parquet file or directory.
        names: the columns read, features then target.
        val_fraction, test_fraction, seed: the split (``SplitPlan``).
        shuffle_buffer: rows shuffled together by the training loader.
    """

    def __init__(
        self, path: str, names: list[str], val_fraction: float, test_fraction: float, seed: int, shuffle_buffer: int
    ) -> None:
        self.path, self.names, self.seed, self.shuffle_buffer = path, names, seed, shuffle_buffer
        check_statistics_memory(path, len(names) - 1)
        self.pieces = pieces(path, count=names[0])  # the split is planned on the rows counted as read
        rows = sum(piece.rows or 0 for piece in self.pieces)
        self.plan = SplitPlan.of(rows, val_fraction, test_fraction, seed, path)
        self.scan: Scan = scan(self.pieces, names, self.plan)

    def standardizer(self) -> Standardizer:
        """Means and standard deviations (population) of the training split, from the pass's moments."""
        mean, std, d = self.scan.moments.mean, self.scan.moments.std, len(self.names) - 1
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
        rows = [count[SPLITS[split]] for count in self.scan.counts]  # of the split, per piece
        # Every process takes as many steps (DDP steps together): as many as the process of fewest rows.
        num_batches = min(math.ceil(sum(rows[r::world_size]) / batch_size) for r in range(world_size))
        shift, scale = _shift_and_scale(standardizer)
        return StreamLoader(
            self.names,
            self.pieces[rank::world_size],
            SPLITS[split],
            self.plan,
            shift.numpy(),
            scale.numpy(),
            batch_size,
            num_batches,
            shuffle=split == "train",
            seed=self.seed,
            rank=rank,
            shuffle_buffer=self.shuffle_buffer if split == "train" else batch_size,
        )

    def materialize(
        self, standardizer: Standardizer, splits: tuple[str, ...] = ("train", "val", "test")
    ) -> dict[str, tuple[Tensor, Tensor]]:
        """``splits`` as float32 tensors ``(X, y)`` in the model's units, rows in table order: one more pass.

        What a table held in memory trains on. Memory: the tensors themselves and one record batch.
        """
        parts = [SPLITS[name] for name in splits]
        shift, scale = (t.numpy() for t in _shift_and_scale(standardizer))
        d = len(self.names) - 1
        counts = [n if part in parts else 0 for part, n in enumerate(self.plan.counts)]  # by TRAIN, VAL, TEST
        X, y = [np.empty((n, d), np.float32) for n in counts], [np.empty((n, 1), np.float32) for n in counts]
        filled = [0, 0, 0]
        for piece in self.pieces:
            for start, columns in read_piece(piece, self.names):
                split = self.plan.of_rows(start, len(columns[0]))
                for part in parts:
                    keep = split == part
                    rows = slice(filled[part], filled[part] + int(keep.sum()))
                    # float64 arithmetic rounded once to float32, as the streamed loader does; computed column by
                    # column into a (columns, rows) block, then written to the row-major tensors in one copy.
                    block = np.empty((d + 1, rows.stop - rows.start))
                    for j, column in enumerate(columns):
                        block[j] = standardized(column[keep], shift[j], scale[j])
                    X[part][rows], y[part][rows, 0] = block[:d].T, block[d]
                    filled[part] = rows.stop
        return {name: (torch.from_numpy(X[SPLITS[name]]), torch.from_numpy(y[SPLITS[name]])) for name in splits}

    def moments(self, standardizer: Standardizer) -> Moments:
        """The training split's moments in the model's units (``standardizer``'s)."""
        return self.scan.moments.rescaled(*_shift_and_scale(standardizer))


def _shift_and_scale(standardizer: Standardizer) -> tuple[torch.Tensor, torch.Tensor]:
    """Per column, features then target, float64: the model's units are ``(value - shift) / scale``."""
    s = standardizer
    return (
        torch.cat([s.x_mean, torch.tensor([s.y_mean], dtype=torch.float64)]),
        torch.cat([s.x_std, torch.tensor([s.y_std], dtype=torch.float64)]),
    )


def check_statistics_memory(path: str, features: int) -> None:
    """Refuses ``features`` columns whose statistics (``MOMENT_MATRICES`` float64 matrices of ``(d + 1)²``) would
    not fit in the memory available now: before anything is read or allocated.

    Raises:
        UserInputError: naming d and the bytes needed and available.
    """
    needed = MOMENT_MATRICES * 8 * (features + 1) ** 2
    available = available_memory()
    if available is not None and needed > available:
        raise UserInputError(
            f"{path}: {features} features need {needed / 1e9:.3g} GB for their statistics ({MOMENT_MATRICES}"
            f" float64 matrices of (d + 1)² values, d = {features}) and {available / 1e9:.3g} GB is available;"
            " choose fewer columns with data.features"
        )


def exceeds_memory(path: str, columns: int, fraction: float = 0.5) -> bool:
    """Whether the tensors of ``columns`` columns of the table at ``path`` would take over ``fraction`` of the
    memory available now.

    Held in memory, a table costs its float32 tensors, ``BYTES_PER_VALUE`` a value (it is read a record
    batch at a time). The rows of Parquet are estimated from its metadata; those of a CSV file from
    its size (a value takes at least 2 bytes of text, a gzipped file at least 5 times less).
    """
    if is_parquet(path):
        values = sum(metadata.num_rows for _, metadata in parquet_files(path)) * columns
    else:
        values = version(path).size * (5 if name(path).endswith(".gz") else 1) // 2
    available = available_memory()
    return available is not None and BYTES_PER_VALUE * values > fraction * available
