"""The exact optimum of each objective against independent solvers: scikit-learn, numpy, scipy, torch autograd."""

from __future__ import annotations

from collections.abc import Callable

import numpy as np
import pytest
import scipy.optimize
import torch
from sklearn.linear_model import Ridge

from linreg.stats.ols import (
    Moments,
    fit_least_squares,
    min_norm_from_moments,
    optimum_from_moments,
    ridge_covariance,
    ridge_degrees_of_freedom,
    ridge_from_moments,
    row_chunks,
    theta,
)
from linreg.stats.optimum import (
    Chunks,
    Curvature,
    hessian,
    huber_fit,
    huber_pass,
    noise_floor,
    stable_lr,
)
from linreg.stats.reference import Objective, solve

CPU = torch.device("cpu")
F64 = torch.float64


def _table(n: int, d: int, seed: int = 0, outliers: int = 0) -> tuple[torch.Tensor, torch.Tensor]:
    """Features of mixed scales and offsets, noisy linear labels, and optionally gross outliers in y."""
    g = torch.Generator().manual_seed(seed)
    X = torch.randn(n, d, generator=g, dtype=F64) * torch.logspace(-0.5, 0.5, d, dtype=F64) + torch.linspace(-2, 3, d)
    y = X @ torch.linspace(-1, 2, d, dtype=F64) + 0.5 + 0.3 * torch.randn(n, generator=g, dtype=F64)
    y[:outliers] += 20 * torch.randn(outliers, generator=g, dtype=F64)
    return X, y


def _book_table() -> tuple[torch.Tensor, torch.Tensor]:
    """d2l's weight-decay experiment: 20 rows of 200 features, w = 0.01 each, b = 0.05, noise 0.01."""
    g = torch.Generator().manual_seed(1)
    X = torch.randn(20, 200, generator=g, dtype=F64)
    return X, X @ torch.full((200,), 0.01, dtype=F64) + 0.05 + 0.01 * torch.randn(20, generator=g, dtype=F64)


def _moments(X: torch.Tensor, y: torch.Tensor, rows: int | None = None) -> Moments:
    moments = Moments.empty(X.shape[1] + 1)
    for start in range(0, X.shape[0], rows or X.shape[0]):
        moments.update(torch.cat([X, y.view(-1, 1)], dim=1)[start : start + (rows or X.shape[0])])
    return moments


def _theta(w: torch.Tensor, b: torch.Tensor) -> np.ndarray:
    return torch.cat([w.view(-1), b.view(1)]).numpy()


def _relative_error(got: np.ndarray, want: np.ndarray) -> float:
    return float(np.linalg.norm(got - want) / np.linalg.norm(want))


def _lstsq(X: torch.Tensor, y: torch.Tensor) -> np.ndarray:
    """numpy's least-squares solution of [X 1] θ = y, of minimum norm when it is not unique."""
    return np.linalg.lstsq(np.column_stack([X.numpy(), np.ones(len(X))]), y.numpy(), rcond=None)[0]


@pytest.mark.parametrize(("table", "weight_decay"), [("tall", 0.1), ("tall", 3.0), ("book", 3.0), ("book", 0.01)])
def test_ridge_matches_scikit_learn(table: str, weight_decay: float) -> None:
    X, y = _table(300, 5) if table == "tall" else _book_table()
    # scikit-learn minimizes |y - Xw - b|² + alpha·|w|², n times F at alpha = n·wd/2.
    reference = Ridge(alpha=len(X) * weight_decay / 2, fit_intercept=True, solver="svd", tol=1e-12).fit(X, y)
    got = _theta(*ridge_from_moments(_moments(X, y, rows=7), weight_decay))
    assert _relative_error(got, np.append(reference.coef_, reference.intercept_)) <= 1e-6


def test_ridge_without_penalty_is_least_squares() -> None:
    X, y = _table(300, 5)
    assert _relative_error(_theta(*ridge_from_moments(_moments(X, y), 0.0)), _lstsq(X, y)) <= 1e-6


def test_ridge_without_penalty_refuses_a_design_with_many_solutions() -> None:
    X, y = _book_table()
    with pytest.raises(ValueError, match="no unique solution on 20 rows of 200 features"):
        ridge_from_moments(_moments(X, y), 0.0)


@pytest.mark.parametrize(("table", "offset"), [("book", 0.0), ("book", 100.0), ("duplicated column", 1000.0)])
def test_min_norm_matches_numpy_lstsq(table: str, offset: float) -> None:
    # Features far from 0 (offset x their spread) test that centring keeps the digits [X 1]ᵀ[X 1] would lose.
    if table == "book":
        X, y = _book_table()
    else:
        X, y = _table(200, 4)
        X = torch.cat([X, X[:, 1:2]], dim=1)
    X = X + offset
    moments = _moments(X, y, rows=7)
    assert _relative_error(_theta(*min_norm_from_moments(moments)), _lstsq(X, y)) <= 1e-6
    assert _relative_error(_theta(*optimum_from_moments(moments, 0.0)), _lstsq(X, y)) <= 1e-6


def _huber_reference(X: torch.Tensor, y: torch.Tensor, delta: float, weight_decay: float) -> np.ndarray:
    """scipy's BFGS on the Huber objective, with its gradient, from zero."""
    A, t, n = np.column_stack([X.numpy(), np.ones(len(X))]), y.numpy(), len(X)
    mask = np.append(np.ones(X.shape[1]), 0.0)

    def objective(theta: np.ndarray) -> tuple[float, np.ndarray]:
        r = A @ theta - t
        loss = np.where(np.abs(r) <= delta, r**2 / 2, delta * (np.abs(r) - delta / 2)).mean()
        return loss + weight_decay / 2 * theta[:-1] @ theta[:-1], A.T @ np.clip(
            r, -delta, delta
        ) / n + weight_decay * mask * theta

    result = scipy.optimize.minimize(objective, np.zeros(A.shape[1]), jac=True, method="BFGS", options={"gtol": 1e-12})
    return result.x


def _torch_objective(
    X: torch.Tensor, y: torch.Tensor, delta: float, weight_decay: float
) -> Callable[[torch.Tensor], torch.Tensor]:
    """torch's Huber loss plus the penalty, as a function of θ = (w, b)."""
    d = X.shape[1]
    return lambda theta: (
        torch.nn.HuberLoss(delta=delta)(X @ theta[:d] + theta[d], y) + weight_decay / 2 * theta[:d].square().sum()
    )


@pytest.mark.parametrize("weight_decay", [0.0, 0.5])
@pytest.mark.parametrize("delta", [1.0, 0.1])
def test_huber_matches_scipy_and_zeroes_torch_gradient(delta: float, weight_decay: float) -> None:
    X, y = _table(200, 3, outliers=20)
    w, b = huber_fit(lambda: row_chunks(X, y, CPU), 3, delta, weight_decay)
    assert _relative_error(_theta(w, b), _huber_reference(X, y, delta, weight_decay)) <= 1e-6
    theta = torch.cat([w, b.view(1)]).requires_grad_()
    _torch_objective(X, y, delta, weight_decay)(theta).backward()
    assert theta.grad.norm() <= 1e-10


def test_huber_far_from_the_optimum_takes_irls_steps_where_the_hessian_is_zero() -> None:
    X, y = _table(200, 3, outliers=20)
    start = (torch.zeros(3, dtype=F64), torch.tensor(1000.0, dtype=F64))
    far = huber_pass(lambda: row_chunks(X, y, CPU), theta(*start), 1.0, 0.0)
    assert far.hessian.abs().max() == 0  # every |r| > delta
    w, b = huber_fit(lambda: row_chunks(X, y, CPU), 3, 1.0, 0.0, start=start)
    assert _relative_error(_theta(w, b), _huber_reference(X, y, 1.0, 0.0)) <= 1e-6


def test_huber_over_chunks_equals_huber_over_one_chunk() -> None:
    X, y = _table(500, 4, outliers=30)

    def chunks(rows: int) -> Chunks:
        return lambda: ((X[i : i + rows], y[i : i + rows]) for i in range(0, len(X), rows))

    one = _theta(*huber_fit(chunks(len(X)), 4, 0.5, 0.1))
    assert _relative_error(_theta(*huber_fit(chunks(97), 4, 0.5, 0.1)), one) <= 1e-10


def test_huber_refuses_a_design_with_many_minimizers() -> None:
    X, y = _book_table()
    with pytest.raises(ValueError, match="no unique minimizer"):
        huber_fit(lambda: row_chunks(X, y, CPU), 200, 1.0, 0.0)


def test_huber_that_cannot_converge_in_its_passes_says_so() -> None:
    X, y = _table(200, 3, outliers=20)
    with pytest.raises(RuntimeError, match="did not converge in 2 passes"):
        huber_fit(lambda: row_chunks(X, y, CPU), 3, 0.1, 0.0, max_passes=2)


@pytest.mark.parametrize(("table", "weight_decay"), [("tall", 0.0), ("tall", 0.3), ("book", 3.0), ("book", 0.0)])
def test_mse_objective_from_moments_equals_a_pass_over_the_rows(table: str, weight_decay: float) -> None:
    X, y = _table(300, 5) if table == "tall" else _book_table()
    chunks = lambda: row_chunks(X, y, CPU)  # noqa: E731
    reference = solve(Objective(weight_decay=weight_decay), _moments(X, y), chunks)
    w, b = reference.w + 0.01 * torch.arange(X.shape[1], dtype=F64) / X.shape[1], reference.b - 0.2
    objective = lambda w, b: float((X @ w + b - y).square().mean() + weight_decay / 2 * w.square().sum())  # noqa: E731
    direct, at_optimum = objective(w, b), objective(reference.w, reference.b)
    assert reference.value == pytest.approx(at_optimum, rel=1e-9, abs=1e-15)
    assert reference.value + reference.gap(w, b) == pytest.approx(direct, rel=1e-9, abs=1e-15)
    assert reference.gap(w, b) == pytest.approx(direct - at_optimum, rel=1e-9)


def test_huber_objective_matches_torch_losses() -> None:
    X, y = _table(100, 3, outliers=10)
    w, b = torch.tensor([0.3, -0.2, 1.0], dtype=F64), torch.tensor(0.7, dtype=F64)
    chunks = lambda: row_chunks(X, y, CPU)  # noqa: E731
    huber = _torch_objective(X, y, 0.5, 0.2)(torch.cat([w, b.view(1)]))
    assert huber_pass(chunks, theta(w, b), 0.5, 0.2).value == pytest.approx(float(huber), rel=1e-12)


@pytest.mark.parametrize("weight_decay", [0.0, 0.4])
def test_hessians_match_torch_autograd(weight_decay: float) -> None:
    X, y = _table(100, 3, outliers=10)
    theta = torch.tensor([0.3, -0.2, 1.0, 0.7], dtype=F64)
    mse = lambda t: torch.nn.functional.mse_loss(X @ t[:3] + t[3], y) + weight_decay / 2 * t[:3].square().sum()  # noqa: E731
    reference = torch.autograd.functional.hessian(mse, theta)
    torch.testing.assert_close(hessian(_moments(X, y), weight_decay), reference, rtol=1e-10, atol=1e-12)
    reference = torch.autograd.functional.hessian(_torch_objective(X, y, 0.5, weight_decay), theta)
    got = huber_pass(lambda: row_chunks(X, y, CPU), theta, 0.5, weight_decay).hessian
    torch.testing.assert_close(got, reference, rtol=1e-10, atol=1e-12)


def test_curvature_of_a_known_spectrum() -> None:
    curvature = Curvature.of(torch.diag(torch.tensor([4.0, 0.0, 0.5, 1.0], dtype=F64)))
    assert (curvature.largest, curvature.smallest, curvature.smallest_nonzero) == (4.0, 0.0, 0.5)
    assert (curvature.condition, curvature.trace, stable_lr(curvature.largest, 0.5)) == (8.0, 5.5, 0.75)


def test_curvature_with_fewer_rows_than_coefficients_matches_the_singular_values() -> None:
    X, y = _book_table()
    A = np.column_stack([X.numpy(), np.ones(len(X))])
    singular = np.linalg.svd(A, compute_uv=False)  # 20 nonzero of 201
    curvature = Curvature.of(hessian(_moments(X, y), 0.0))  # H = 2 AᵀA / n
    assert curvature.largest == pytest.approx(2 * singular[0] ** 2 / len(X), rel=1e-10)
    assert curvature.smallest_nonzero == pytest.approx(2 * singular[-1] ** 2 / len(X), rel=1e-8)
    assert abs(curvature.smallest) <= 1e-12 * curvature.largest
    assert curvature.trace == pytest.approx(2 * (singular**2).sum() / len(X), rel=1e-12)


@pytest.mark.parametrize(("lr", "momentum"), [(0.01, 0.0), (0.005, 0.5)])
def test_noise_floor_matches_a_simulation_of_online_sgd(lr: float, momentum: float) -> None:
    # Fresh N(0, I) rows each step, so H = 2 E[a aᵀ] = 2 I (a = [x, 1]); 100 chains from the optimum, averaged
    # after 200 steps (the excess settles in about 1/(4·lr) steps).
    g = torch.Generator().manual_seed(0)
    d, batch, sigma, chains = 2, 4, 0.5, 100
    error, velocity = torch.zeros(chains, d + 1, dtype=F64), torch.zeros(chains, d + 1, dtype=F64)
    excess = []
    for step in range(700):
        a = torch.randn(chains, batch, d + 1, generator=g, dtype=F64)
        a[..., d] = 1  # the intercept's column
        noise = sigma * torch.randn(chains, batch, generator=g, dtype=F64)
        r = (a @ error.unsqueeze(2)).squeeze(2) - noise  # (chains, batch)
        velocity = momentum * velocity + 2 * (a * r.unsqueeze(2)).mean(1)
        error = error - lr * velocity
        if step >= 200:
            excess.append(error.square().sum(1).mean())  # δθᵀ E[a aᵀ] δθ = ½ δθᵀ H δθ
    floor = noise_floor(lr, momentum, batch, sigma**2, hessian_trace=2.0 * (d + 1))
    assert float(torch.stack(excess).mean()) == pytest.approx(floor, rel=0.1)


@pytest.mark.parametrize(("table", "weight_decay"), [("tall", 0.0), ("tall", 0.5), ("book", 3.0)])
def test_ridge_covariance_is_the_sandwich_and_least_squares_at_zero(table: str, weight_decay: float) -> None:
    X, y = _table(300, 5) if table == "tall" else _book_table()
    moments = _moments(X, y)
    got = ridge_covariance(moments, weight_decay)
    A = np.column_stack([X.numpy(), np.ones(len(X))])
    # θ̂ = L y with L = (AᵀA + λD)⁻¹Aᵀ; its hat matrix A L has trace df + 1, and Cov(θ̂) = σ² L Lᵀ.
    L = np.linalg.solve(A.T @ A + len(X) * weight_decay / 2 * np.diag(np.append(np.ones(X.shape[1]), 0)), A.T)
    residual = y.numpy() - A @ (L @ y.numpy())
    df = np.trace(A @ L) - 1
    assert ridge_degrees_of_freedom(moments, weight_decay) == pytest.approx(df, rel=1e-9)
    want = residual @ residual / (len(X) - df - 1) * L @ L.T
    assert np.abs(got.numpy() - want).max() <= 1e-6 * np.abs(want).max()
    if weight_decay == 0:
        torch.testing.assert_close(got, fit_least_squares(X, y).covariance, rtol=1e-8, atol=0)
