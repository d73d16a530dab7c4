"""How rows are split into training, validation and test sets: by a seeded permutation, or by a seeded hash.

Plain functions, no Lightning. A table held in memory is split by a permutation (``split_rows``): exact
sizes, at least one row per split, good for small tables. A streamed table is never held whole, so each
row decides alone (``hash_split``): a hash of its position in the table and the seed, read as a number
in [0, 1), puts it in a split. The same row lands in the same split in every epoch, process and run;
the sizes follow the fractions up to sampling noise (±0.1% of a million rows).
"""

from __future__ import annotations

import numpy as np
import torch
from torch import Tensor

from linreg.validation import UserInputError

TRAIN, VAL, TEST = 0, 1, 2


def split_rows(
    num_rows: int, val_fraction: float, test_fraction: float, seed: int, source: str = "the table"
) -> tuple[Tensor, Tensor, Tensor]:
    """Row indices of the training, validation and test splits: a permutation drawn from ``seed``, cut in three.

    A split with a positive fraction gets at least one row; the training split, the rest, at least two.

    Raises:
        UserInputError: if ``num_rows`` is too few for that.

    Example:
        >>> [len(part) for part in split_rows(10, 0.2, 0.1, seed=0)]
        [7, 2, 1]
    """
    num_val = max(1, round(val_fraction * num_rows)) if val_fraction > 0 else 0
    num_test = max(1, round(test_fraction * num_rows)) if test_fraction > 0 else 0
    num_train = num_rows - num_val - num_test
    if num_train < 2:
        needed = 2 + (val_fraction > 0) + (test_fraction > 0)
        raise UserInputError(
            f"{source}: {num_rows} data rows are too few; val_fraction={val_fraction:g} and"
            f" test_fraction={test_fraction:g} need at least {needed} (2 of them for training)"
        )
    order = torch.randperm(num_rows, generator=torch.Generator().manual_seed(seed))
    return order[:num_train], order[num_train : num_train + num_val], order[num_train + num_val :]


def hash_split(positions: Tensor, val_fraction: float, test_fraction: float, seed: int) -> Tensor:
    """The split of each row, ``TRAIN``, ``VAL`` or ``TEST`` (int8, shape of ``positions``), from its position.

    The SplitMix64 finaliser of ``position + seed * golden ratio`` gives 53 uniform bits per row; rows
    below ``val_fraction`` go to validation, the next ``test_fraction`` to test, the rest to training.

    Example:
        >>> split = hash_split(torch.arange(100_000), 0.1, 0.2, seed=0)
        >>> [round((split == s).float().mean().item(), 2) for s in (TRAIN, VAL, TEST)]
        [0.7, 0.1, 0.2]
    """
    with np.errstate(over="ignore"):  # uint64 arithmetic wraps around, as the hash intends
        z = positions.numpy().astype(np.uint64) + np.uint64(seed % 2**64) * np.uint64(0x9E3779B97F4A7C15)
        z = (z ^ (z >> np.uint64(30))) * np.uint64(0xBF58476D1CE4E5B9)
        z = (z ^ (z >> np.uint64(27))) * np.uint64(0x94D049BB133111EB)
        z = z ^ (z >> np.uint64(31))
    uniform = torch.from_numpy((z >> np.uint64(11)).astype(np.float64) / 2.0**53)
    split = torch.full(positions.shape, TRAIN, dtype=torch.int8)
    split[uniform < val_fraction + test_fraction] = TEST
    split[uniform < val_fraction] = VAL
    return split
