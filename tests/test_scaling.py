"""Standardisation: its statistics, its inverse, and coefficients carried back to the columns' own units."""

from __future__ import annotations

import io

import numpy as np
import torch

from linreg.data.rows import Standardizer


def raw_table(n: int = 500, seed: int = 0) -> tuple[torch.Tensor, torch.Tensor]:
    """Features on scales 1e3, 1e-2, 1 and 10 with offsets; a noisy linear target around 5e4."""
    g = torch.Generator().manual_seed(seed)
    scale = torch.tensor([1e3, 1e-2, 1.0, 10.0], dtype=torch.float64)
    X = 3 * scale + scale * torch.randn(n, 4, generator=g, dtype=torch.float64)
    y = 5e4 + X @ torch.tensor([2.0, 300.0, -7.0, 0.5], dtype=torch.float64) + torch.randn(n, generator=g)
    return X, y


def fitted(X: torch.Tensor, y: torch.Tensor) -> Standardizer:
    """The statistics of the table (population standard deviations), computed by numpy."""
    X_np, y_np = X.numpy(), y.numpy()
    x_mean, x_std = torch.from_numpy(X_np.mean(0)), torch.from_numpy(X_np.std(0))
    return Standardizer(x_mean, x_std, float(y_np.mean()), float(y_np.std()))


def lstsq(X: np.ndarray, y: np.ndarray) -> tuple[np.ndarray, float]:
    """Ordinary least squares with an intercept: (w, b)."""
    solution, *_ = np.linalg.lstsq(np.column_stack([X, np.ones(len(X))]), y, rcond=None)
    return solution[:-1], float(solution[-1])


def test_transformed_training_data_have_mean_zero_and_std_one() -> None:
    X, y = raw_table()
    s = fitted(X, y)
    X_s, y_s = s.transform_x(X), s.transform_y(y)
    torch.testing.assert_close(X_s.mean(0), torch.zeros(4, dtype=torch.float64), atol=1e-12, rtol=0)
    torch.testing.assert_close(X_s.std(0, correction=0), torch.ones(4, dtype=torch.float64))
    assert abs(y_s.mean().item()) < 1e-12
    assert abs(y_s.std(correction=0).item() - 1) < 1e-12


def test_inverse_y_undoes_transform_y() -> None:
    X, y = raw_table()
    s = fitted(X, y)
    torch.testing.assert_close(s.inverse_y(s.transform_y(y)), y)


def test_least_squares_on_standardised_data_in_original_units_is_least_squares_on_raw_data() -> None:
    X, y = raw_table()
    s = fitted(X, y)
    w_s, b_s = lstsq(s.transform_x(X).numpy(), s.transform_y(y).numpy())
    w, b = s.to_original_units(torch.from_numpy(w_s), torch.tensor(b_s))
    w_raw, b_raw = lstsq(X.numpy(), y.numpy())
    np.testing.assert_allclose(w.numpy(), w_raw, rtol=1e-8)
    assert abs(b.item() - b_raw) < 1e-8 * abs(b_raw)


def test_statistics_survive_a_weights_only_checkpoint_round_trip() -> None:
    s = fitted(*raw_table())
    buffer = io.BytesIO()
    torch.save(s.state_dict(), buffer)
    buffer.seek(0)
    restored = Standardizer.from_state_dict(torch.load(buffer, weights_only=True))
    assert torch.equal(restored.x_mean, s.x_mean)
    assert torch.equal(restored.x_std, s.x_std)
    assert (restored.y_mean, restored.y_std) == (s.y_mean, s.y_std)
