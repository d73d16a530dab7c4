"""The least-squares reference against numpy's solver and the textbook formulas, chunked or not."""

from __future__ import annotations

from collections.abc import Callable

import numpy as np
import pytest
import torch

from linreg.stats import ols
from linreg.stats.ols import fit_least_squares, mean_squared_error, transform
from linreg.validation import UserInputError


def _problem(n: int = 400, d: int = 4, seed: int = 0) -> tuple[torch.Tensor, torch.Tensor]:
    """Features of mixed scales and offsets (a harder case than N(0, 1)) and noisy linear labels."""
    g = torch.Generator().manual_seed(seed)
    scale = torch.logspace(-1, 1, d)
    offset = torch.linspace(-5, 20, d)
    X = torch.randn(n, d, generator=g) * scale + offset
    y = X @ torch.linspace(-2, 3, d) + 1.5 + 0.3 * torch.randn(n, generator=g)
    return X, y.unsqueeze(1)


def _numpy_reference(X: torch.Tensor, y: torch.Tensor) -> tuple[np.ndarray, float, np.ndarray]:
    """(coefficients [w, b], s², standard errors) from numpy.linalg.lstsq and s² (AᵀA)⁻¹, in float64."""
    A = np.column_stack([X.double().numpy(), np.ones(len(X))])
    target = y.double().numpy().reshape(-1)
    beta = np.linalg.lstsq(A, target, rcond=None)[0]
    residual = target - A @ beta
    s2 = residual @ residual / (A.shape[0] - A.shape[1])
    return beta, s2, np.sqrt(np.diag(s2 * np.linalg.inv(A.T @ A)))


@pytest.mark.parametrize(
    ("n", "d", "dtype"), [(400, 4, torch.float32), (50, 1, torch.float64), (3000, 12, torch.float32)]
)
def test_estimate_and_standard_errors_match_numpy(n: int, d: int, dtype: torch.dtype) -> None:
    X, y = _problem(n, d)
    X, y = X.to(dtype), y.to(dtype)
    fit = fit_least_squares(X, y)
    beta, s2, se = _numpy_reference(X, y)
    np.testing.assert_allclose(torch.cat([fit.w, fit.b.view(1)]).numpy(), beta, rtol=0, atol=1e-6)
    assert fit.residual_variance == pytest.approx(s2, rel=1e-9)
    np.testing.assert_allclose(fit.standard_errors.numpy(), se, rtol=1e-6)
    assert fit.target_variance == pytest.approx(np.var(y.double().numpy()), rel=1e-9)
    assert fit.num_examples == n
    assert fit.degrees_of_freedom == n - d - 1


def test_chunked_and_single_pass_agree(monkeypatch: pytest.MonkeyPatch) -> None:
    X, y = _problem(1003, 5)
    whole = fit_least_squares(X, y)
    monkeypatch.setattr(ols, "CHUNK_ELEMENTS", 7 * 5)  # chunks of 7 rows, the last one partial
    chunked = fit_least_squares(X, y)
    torch.testing.assert_close(chunked.w, whole.w, rtol=0, atol=1e-10)
    torch.testing.assert_close(chunked.b, whole.b, rtol=0, atol=1e-10)
    torch.testing.assert_close(chunked.covariance, whole.covariance, rtol=1e-9, atol=0)
    assert mean_squared_error(X, y, whole.w, whole.b) == pytest.approx(whole.residual_variance * 997 / 1003)


def test_mean_squared_error_of_any_coefficients() -> None:
    X, y = _problem(200, 3)
    w, b = torch.tensor([1.0, -1.0, 0.5]), 2.0
    expected = np.mean((X.double().numpy() @ w.double().numpy() + b - y.double().numpy().reshape(-1)) ** 2)
    assert mean_squared_error(X, y, w, b) == pytest.approx(expected, rel=1e-12)


@pytest.mark.parametrize("offset", [0.0, 1e4])
def test_training_mse_from_the_moments_equals_the_mse_over_the_rows(offset: float) -> None:
    X, y = _problem(300, 4)
    X = X + offset  # large feature means: the centred form must not lose the excess to cancellation
    fit = fit_least_squares(X, y)
    A, target = np.column_stack([X.double().numpy(), np.ones(len(X))]), y.double().numpy().reshape(-1)
    g = torch.Generator().manual_seed(1)
    for scale in (1.0, 1e-3, 1e-6, 0.0):  # far from OLS, near it, at it
        w = fit.w + scale * torch.randn(4, generator=g, dtype=torch.float64)
        b = fit.b + scale * torch.randn((), generator=g, dtype=torch.float64)
        expected = np.mean((A @ np.append(w.numpy(), b.item()) - target) ** 2)
        excess = expected - np.mean((A @ np.linalg.lstsq(A, target, rcond=None)[0] - target) ** 2)
        assert fit.training_mse(w, b) == pytest.approx(expected, rel=1e-9, abs=1e-12), scale
        assert fit.training_mse(w, b) - fit.least_squares_mse == pytest.approx(excess, rel=1e-5, abs=1e-12), scale


def test_inputs_are_left_unchanged() -> None:
    X, y = _problem(100, 3)
    X, y = X.double(), y.double()  # float64 chunks are views of the input: nothing may write to them
    before = X.clone(), y.clone()
    fit_least_squares(X, y)
    assert torch.equal(X, before[0])
    assert torch.equal(y, before[1])


def test_standard_errors_follow_a_change_of_units() -> None:
    """Fitting standardised data and mapping back equals fitting the original data, errors included."""
    X, y = (t.double() for t in _problem(500, 3))  # so that standardising adds no float32 rounding
    mu, sd = X.mean(0), X.std(0)
    y_mu, y_sd = y.mean(), y.std()
    standardised = fit_least_squares((X - mu) / sd, (y - y_mu) / y_sd)

    def to_original_units(w: torch.Tensor, b: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
        return y_sd * w / sd, y_sd * (b - (w * mu / sd).sum()) + y_mu

    mapped, direct = transform(standardised, to_original_units), fit_least_squares(X, y)
    torch.testing.assert_close(mapped.w, direct.w, rtol=1e-6, atol=1e-9)
    torch.testing.assert_close(mapped.b, direct.b, rtol=1e-6, atol=1e-9)
    torch.testing.assert_close(mapped.standard_errors, direct.standard_errors, rtol=1e-5, atol=0)


def _with_column(X: torch.Tensor, column: torch.Tensor) -> torch.Tensor:
    return torch.cat([X, column.reshape(-1, 1)], dim=1)


@pytest.mark.parametrize(
    ("make", "match"),
    [
        (
            lambda X: _with_column(X, torch.full((len(X),), 3.0)),
            r"feature 'x4' is constant \(every training value is 3\)",
        ),
        (lambda X: _with_column(X, X[:, 1]), r"feature 'x4' is a copy \(or a multiple\) of feature 'x1'"),
        (lambda X: _with_column(X, -2.5 * X[:, 2]), r"feature 'x4' is a copy \(or a multiple\) of feature 'x2'"),
        (lambda X: _with_column(X, X[:, 0] + X[:, 3]), r"feature 'x4' is a linear combination of 'x0', 'x3'"),
        (lambda X: X[:5], r"more training examples than coefficients: got 5 examples for 5 coefficients"),
        (lambda X: torch.where(X > 20, float("nan"), X), r"finite training data"),
    ],
)
def test_a_design_without_a_unique_solution_is_refused_by_name(
    make: Callable[[torch.Tensor], torch.Tensor], match: str
) -> None:
    X, y = _problem(300, 4)
    X = make(X)
    with pytest.raises(UserInputError, match=match):
        fit_least_squares(X, y[: len(X)])


def test_error_messages_use_the_given_feature_names() -> None:
    X, y = _problem(100, 2)
    with pytest.raises(UserInputError, match="feature 'rooms' is a copy"):
        fit_least_squares(_with_column(X, X[:, 0]), y, feature_names=["area", "age", "rooms"])


@pytest.mark.cuda
@pytest.mark.skipif(not torch.cuda.is_available(), reason="needs a CUDA GPU")
def test_cuda_matches_cpu_for_data_on_either_device() -> None:
    X, y = _problem(5000, 8)
    on_cpu = fit_least_squares(X, y)
    for fit in (fit_least_squares(X.cuda(), y.cuda()), fit_least_squares(X, y, device=torch.device("cuda"))):
        torch.testing.assert_close(fit.w, on_cpu.w, rtol=0, atol=1e-9)
        torch.testing.assert_close(fit.covariance, on_cpu.covariance, rtol=1e-7, atol=0)
    assert mean_squared_error(X.cuda(), y.cuda(), on_cpu.w, on_cpu.b) == pytest.approx(
        mean_squared_error(X, y, on_cpu.w, on_cpu.b), rel=1e-10
    )


def test_the_fit_from_moments_has_the_labels_variance() -> None:
    X, y = _problem(300, 3)
    moments = ols.Moments.empty(4)
    for rows in torch.cat([X, y], dim=1).split(64):
        moments.update(rows)
    fit = ols.least_squares_from_moments(moments)
    assert fit.target_variance == pytest.approx(np.var(y.double().numpy()), rel=1e-9)
