"""R² of a split: scikit-learn's value from two rows on, NaN (undefined) for one row instead of an error."""

from __future__ import annotations

import math

import pytest
import torch
from sklearn.metrics import r2_score

from linreg.stats.r2 import DefinedR2Score


def test_r2_equals_scikit_learns_from_two_rows() -> None:
    predicted, actual = torch.tensor([1.0, 2.5, 2.0]).double(), torch.tensor([1.2, 2.0, 3.0]).double()
    metric = DefinedR2Score().set_dtype(torch.float64)
    metric.update(predicted, actual)
    assert float(metric.compute()) == pytest.approx(r2_score(actual.numpy(), predicted.numpy()))


def test_r2_of_one_row_is_undefined() -> None:
    metric = DefinedR2Score()
    metric.update(torch.tensor([1.0]), torch.tensor([2.0]))
    assert math.isnan(float(metric.compute()))
