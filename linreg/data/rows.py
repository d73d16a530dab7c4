"""A table's rows: which split each belongs to, and their standardisation. Plain functions, no Lightning.

**Split.** A row's split depends only on its position, the number of rows and the seed: the rows of smallest
seeded hash validate, the next test, the rest train. The plan is two thresholds on the hash, so a table read whole
and one streamed are split alike, row for row, and memory grows with the held-out rows, not the table.

**Standardisation.** One learning rate cannot fit features on scales of 1e3 and 1e-2 at once. The target is
standardised too: Adam moves a parameter by about ``lr`` a step, so a raw intercept of 50 000 would take millions
of steps, and float32's ~7 digits are too few for residuals of 1 around values of 1e6.
"""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass, replace
from typing import Any

import numpy as np
import torch
from torch import Tensor

from linreg.validation import UserInputError

TRAIN, VAL, TEST = 0, 1, 2
SPLITS = {"train": TRAIN, "val": VAL, "test": TEST}
KEY_CHUNK = 1 << 20  # positions hashed at a time when the thresholds are found (8 MB of keys each)
# The largest magnitude whose square float64 holds (about 1.3e154), rounded down.
LARGEST_SQUARABLE = 1e154
# The smallest whose square is a normal float64 (about 1.5e-154), rounded up: below it the moments underflow (a
# spread of 1e-200 computes as 0), and the statistics and MSEs of the column cannot be trusted.
SMALLEST_SQUARABLE = 1e-154
# The smallest spread, relative to a column's mean, whose coefficient the model's float32 arithmetic resolves.
RESOLUTION = 2.0**-24


def row_keys(positions: np.ndarray, seed: int) -> np.ndarray:
    """Each row's uint64 key, a seeded SplitMix64 finaliser of its position: a bijection, so keys are distinct."""
    with np.errstate(over="ignore"):  # uint64 arithmetic wraps around, as the hash intends
        z = positions.astype(np.uint64) + np.uint64(seed % 2**64) * np.uint64(0x9E3779B97F4A7C15)
        z = (z ^ (z >> np.uint64(30))) * np.uint64(0xBF58476D1CE4E5B9)
        z = (z ^ (z >> np.uint64(27))) * np.uint64(0x94D049BB133111EB)
        return z ^ (z >> np.uint64(31))


@dataclass(frozen=True)
class SplitPlan:
    """The split of every row of a table of ``num_rows`` rows: keys below ``val_below`` validate, keys from
    there below ``test_below`` test, the others train."""

    num_rows: int
    counts: tuple[int, int, int]  # rows of TRAIN, VAL, TEST
    seed: int
    val_below: int
    test_below: int

    @classmethod
    def of(
        cls, num_rows: int, val_fraction: float, test_fraction: float, seed: int, source: str = "the table"
    ) -> SplitPlan:
        """The plan for ``num_rows`` rows; a split with a positive fraction gets at least one row, training two.

        Raises:
            UserInputError: if ``num_rows`` is too few for that.

        Example:
            >>> SplitPlan.of(10, 0.2, 0.1, seed=0).counts
            (7, 2, 1)
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
        held_out = num_val + num_test
        smallest = np.empty(0, dtype=np.uint64)  # the held_out + 1 smallest keys so far
        for start in range(0, num_rows, KEY_CHUNK):
            keys = np.concatenate([smallest, row_keys(np.arange(start, min(start + KEY_CHUNK, num_rows)), seed)])
            smallest = np.partition(keys, held_out)[: held_out + 1] if len(keys) > held_out + 1 else keys
        smallest.sort()
        return cls(num_rows, (num_train, num_val, num_test), seed, int(smallest[num_val]), int(smallest[held_out]))

    def of_rows(self, first: int, count: int) -> np.ndarray:
        """The split (``TRAIN``, ``VAL`` or ``TEST``, int8) of the ``count`` rows from position ``first`` on."""
        keys = row_keys(np.arange(first, first + count), self.seed)
        split = np.full(count, TRAIN, dtype=np.int8)
        split[keys < np.uint64(self.test_below)] = TEST
        split[keys < np.uint64(self.val_below)] = VAL
        return split


@dataclass(frozen=True)
class Standardizer:
    """Means and standard deviations (all > 0) of the features, ``(d,)`` float64, and the target, from training."""

    x_mean: Tensor
    x_std: Tensor
    y_mean: float
    y_std: float

    def transform_x(self, X: Tensor) -> Tensor:
        """``(X - x_mean) / x_std``, in X's dtype: ``(n, d) -> (n, d)``."""
        return ((X.double() - self.x_mean) / self.x_std).to(X.dtype)

    def transform_y(self, y: Tensor) -> Tensor:
        """``(y - y_mean) / y_std``, in y's dtype and shape."""
        return ((y.double() - self.y_mean) / self.y_std).to(y.dtype)

    def inverse_y(self, y_s: Tensor) -> Tensor:
        """``y_s * y_std + y_mean``: standardised targets or predictions back in the target's units (float64)."""
        return y_s.double() * self.y_std + self.y_mean

    def to_original_units(self, w: Tensor, b: Tensor | float) -> tuple[Tensor, Tensor]:
        """The float64 coefficients ``(w' (d,), b' ())`` on raw columns of the standardised model's ``(w, b)``.

        Example:
            >>> s = Standardizer(torch.tensor([2.0]), torch.tensor([4.0]), 10.0, 3.0)
            >>> w, b = s.to_original_units(torch.tensor([1.0]), 0.0)  # y = 10 + 3 (x - 2) / 4
            >>> w.tolist(), b.item()
            ([0.75], 8.5)
        """
        w_over_std = w.double().reshape(-1) / self.x_std
        b = torch.as_tensor(b, dtype=torch.float64).reshape(())
        return self.y_std * w_over_std, self.y_mean + self.y_std * (b - (w_over_std * self.x_mean).sum())

    def shift_and_scale(self) -> tuple[Tensor, Tensor]:
        """Per column, features then target, float64: the model's units are ``(value - shift) / scale``."""
        return (
            torch.cat([self.x_mean, torch.tensor([self.y_mean], dtype=torch.float64)]),
            torch.cat([self.x_std, torch.tensor([self.y_std], dtype=torch.float64)]),
        )

    def same_as(self, other: Standardizer) -> bool:
        """Whether ``other`` holds the same statistics, bit for bit."""
        return all(map(torch.equal, self.shift_and_scale(), other.shift_and_scale()))

    def checked(self, path: str, names: Sequence[str], for_training: bool) -> Standardizer:
        """These statistics of ``names`` (features then target), refused by column where they cannot be trusted."""
        stds, means = [*self.x_std.tolist(), self.y_std], [*self.x_mean.tolist(), self.y_mean]
        for name, std, mean in zip(names, stds, means, strict=True):
            if not (abs(mean) <= LARGEST_SQUARABLE and std <= LARGEST_SQUARABLE):
                raise UserInputError(
                    f"{path}: column {name!r} is too large for the statistics (mean {mean:g}, standard deviation"
                    f" {std:g}); values must stay within ±1e154, whose squares float64 holds: rescale the column"
                )
        if not for_training:  # a constant column is kept with a std of 1: no model is fitted to it here
            return replace(self, x_std=torch.where(self.x_std == 0, 1.0, self.x_std), y_std=self.y_std or 1.0)
        for name, std, mean in zip(names, stds, means, strict=True):
            if 0 < max(abs(mean), std) < SMALLEST_SQUARABLE:
                raise UserInputError(
                    f"{path}: column {name!r} is too small for the statistics (mean {mean:g}, standard deviation"
                    f" {std:g}); its squares underflow below 1e-308, the smallest float64: multiply the column by a"
                    " power of ten"
                )
            if std == 0:
                raise UserInputError(
                    f"{path}: column {name!r} is constant on the training split (every value is {mean:g} as a"
                    " float64);"
                    + (" there is nothing to predict" if name == names[-1] else " leave it out of data.features")
                )
            if std < abs(mean) * RESOLUTION:  # e.g. integers near 2**53: float32 weights cannot resolve them
                raise UserInputError(
                    f"{path}: column {name!r} varies too little for its size to be fitted (standard deviation"
                    f" {std:g} around a mean of {mean:g}); subtract a constant from it, or leave it out"
                )
        return self

    def state_dict(self) -> dict[str, Any]:
        """Tensors and floats only, so a checkpoint holding it loads with ``torch.load(weights_only=True)``."""
        return {"x_mean": self.x_mean, "x_std": self.x_std, "y_mean": self.y_mean, "y_std": self.y_std}

    @classmethod
    def from_state_dict(cls, state: dict[str, Any]) -> Standardizer:
        return cls(state["x_mean"].double(), state["x_std"].double(), float(state["y_mean"]), float(state["y_std"]))
