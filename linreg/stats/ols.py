"""Ordinary least squares: the closed-form reference that SGD's estimate is judged against.

Plain functions on tensors, no Lightning, in float64 over chunks of rows (the design matrix is never
copied whole; chunks may be moved to a GPU as they are read). The intercept is handled by centring:
``(X - x̄)ᵀ(X - x̄) w = (X - x̄)ᵀ(y - ȳ)`` and ``b = ȳ - x̄ᵀw``, the solution of the normal equations of
``[X 1]`` without the intercept in the conditioning of the Gram matrix.
"""

from __future__ import annotations

from collections.abc import Callable, Iterator, Sequence
from dataclasses import dataclass

import torch
from torch import Tensor

from linreg.validation import UserInputError

# float64 elements per chunk (32 MB): large enough for fast matrix products, small next to the data.
CHUNK_ELEMENTS = 1 << 22
# A feature explained by the features before it up to R² > 1 - 1e-8 is treated as their linear combination:
# float32 data cannot carry the difference. The Cholesky pivot of the correlation matrix is sqrt(1 - R²).
COLLINEAR_PIVOT = 1e-4


@dataclass(frozen=True)
class LeastSquaresFit:
    """The least-squares estimate of ``y = x w + b`` and its uncertainty (float64, on the CPU).

    Attributes:
        w: the weights, shape ``(d,)``; b: the bias, a scalar tensor.
        covariance: ``s² ([X 1]ᵀ[X 1])⁻¹``, the covariance of ``(w, b)``, shape ``(d + 1, d + 1)``.
        residual_variance: ``s² = RSS / (n - d - 1)``, the estimated label noise variance.
        num_examples: ``n``.
        target_variance: ``Σ(y - ȳ)² / n``, the scale of a noise-free fit.
        feature_means, feature_covariance: ``x̄`` ``(d,)`` and ``(X - x̄)ᵀ(X - x̄) / n`` ``(d, d)``, for
            ``training_mse``; None after ``transform`` (they are in the units fitted).
    """

    w: Tensor
    b: Tensor
    covariance: Tensor
    residual_variance: float
    num_examples: int
    target_variance: float
    feature_means: Tensor | None = None
    feature_covariance: Tensor | None = None
    minimum_mse: float | None = None  # RSS / n where no degrees of freedom are left to estimate the noise

    @property
    def standard_errors(self) -> Tensor:
        """The standard error of ``(w, b)``, shape ``(d + 1,)``."""
        return self.covariance.diagonal().sqrt()

    @property
    def degrees_of_freedom(self) -> int:
        """``n - d - 1``."""
        return self.num_examples - self.w.numel() - 1

    @property
    def least_squares_mse(self) -> float:
        """``RSS / n`` on the fitted rows."""
        if self.minimum_mse is not None:
            return self.minimum_mse
        return self.residual_variance * self.degrees_of_freedom / self.num_examples

    def training_mse(self, w: Tensor, b: Tensor) -> float:
        """The exact MSE of ``x w + b`` (``w`` ``(d,)``, ``b`` scalar) on the fitted rows, in ``d²`` operations.

        Least-squares residuals are orthogonal to ``[X 1]``, so ``MSE(w, b) = RSS / n + δwᵀ C δw + (δb + x̄ᵀ δw)²``
        with ``δw = w - ŵ``, ``δb = b - b̂`` and ``C`` the feature covariance; centred, nothing cancels.

        Example:
            >>> X = torch.tensor([[0.0], [1.0], [2.0], [3.0]])
            >>> y = 2 * X + 1 + torch.tensor([[0.1], [-0.1], [-0.1], [0.1]])
            >>> w, b = torch.tensor([2.5]), torch.tensor(0.0)
            >>> round(fit_least_squares(X, y).training_mse(w, b), 6), round(mean_squared_error(X, y, w, b), 6)
            (0.385, 0.385)
        """
        if self.feature_means is None or self.feature_covariance is None:
            raise ValueError("training_mse needs the feature moments, which transform() leaves out")
        dw = w.detach().to("cpu", torch.float64).view(-1) - self.w
        db = b.detach().to("cpu", torch.float64).view(()) - self.b
        excess = dw @ self.feature_covariance @ dw + (db + self.feature_means @ dw).square()
        return self.least_squares_mse + excess.item()


def row_chunks(
    X: Tensor, y: Tensor, device: torch.device, dtype: torch.dtype | None = torch.float64
) -> Iterator[tuple[Tensor, Tensor]]:
    """Row blocks of ``(X, y)`` of about ``CHUNK_ELEMENTS`` values, on ``device``: ``(rows, d)``, ``(rows,)``."""
    rows = max(1, CHUNK_ELEMENTS // max(1, X.shape[1]))
    for start in range(0, X.shape[0], rows):
        yield X[start : start + rows].to(device, dtype), y[start : start + rows].to(device, dtype).view(-1)


def mean_squared_error(X: Tensor, y: Tensor, w: Tensor, b: Tensor | float, device: torch.device | None = None) -> float:
    """The mean of ``(x w + b - y)²`` over ``X`` ``(n, d)`` and ``y`` ``(n,)`` or ``(n, 1)``, in float64.

    Example:
        >>> mean_squared_error(torch.tensor([[1.0], [2.0]]), torch.tensor([3.0, 5.0]), torch.tensor([2.0]), 1.0)
        0.0
    """
    device = X.device if device is None else device
    w = w.to(device, torch.float64).view(-1)
    b = torch.as_tensor(b, dtype=torch.float64, device=device)
    total = sum((x @ w + b - t).square().sum() for x, t in row_chunks(X, y, device))  # (rows, d) @ (d,) -> (rows,)
    return float(total) / X.shape[0]


def fit_least_squares(
    X: Tensor, y: Tensor, feature_names: Sequence[str] | None = None, device: torch.device | None = None
) -> LeastSquaresFit:
    """Ordinary least squares with an intercept, with standard errors as statsmodels reports them.

    Args:
        X: features, shape ``(n, d)``, any float dtype, on any device; never copied whole.
        y: labels, shape ``(n,)`` or ``(n, 1)``.
        feature_names: names for error messages; ``x0, x1, ...`` by default.
        device: where to compute; ``X.device`` by default.

    Raises:
        UserInputError: no more examples than coefficients, data not finite, or a feature constant or a
            linear combination of others (no unique solution); the message names the feature.

    Example:
        >>> X = torch.tensor([[0.0], [1.0], [2.0], [3.0]])
        >>> fit = fit_least_squares(X, 2 * X + 1 + torch.tensor([[0.1], [-0.1], [-0.1], [0.1]]))
        >>> [round(v, 6) for v in (fit.w.item(), fit.b.item(), fit.residual_variance)]
        [2.0, 1.0, 0.02]
    """
    device = X.device if device is None else device
    moments = Moments.empty(X.shape[1] + 1, device)
    for x, t in row_chunks(X, y, device):
        moments.update(torch.cat([x, t.view(-1, 1)], dim=1))
    # The RSS from a second pass over the rows: exact where S_yy - mᵀw would cancel.
    return least_squares_from_moments(
        moments, feature_names, lambda w, b: mean_squared_error(X, y, w, b, device) * X.shape[0]
    )


@dataclass
class Moments:
    """Count, means and centred cross-products of the columns of ``Z = [X y]``, accumulated batch by batch.

    Batches are merged as Chan, Golub and LeVeque (1979) merge variances, each centred on its own mean, so
    a column of mean 1e6 and spread 1e-2 keeps its digits.

    Attributes:
        count: rows seen.
        mean: the mean of each column of ``Z``, shape ``(k,)``, float64.
        comoment: ``(Z - mean)ᵀ(Z - mean)``, shape ``(k, k)``, float64.

    Example:
        >>> m = Moments.empty(2)
        >>> m.update(torch.tensor([[1.0, 2.0], [3.0, 6.0]])); m.update(torch.tensor([[5.0, 10.0]]))
        >>> m.count, m.mean.tolist(), m.comoment[0].tolist()
        (3, [3.0, 6.0], [8.0, 16.0])
    """

    count: int
    mean: Tensor
    comoment: Tensor

    @classmethod
    def empty(cls, k: int, device: torch.device | None = None) -> Moments:
        return cls(
            0, torch.zeros(k, dtype=torch.float64, device=device), torch.zeros(k, k, dtype=torch.float64, device=device)
        )

    def update(self, Z: Tensor) -> None:
        """Adds the rows of ``Z`` ``(rows, k)``."""
        if Z.shape[0] == 0:
            return
        Z = Z.to(torch.float64)
        n_b, mean_b = Z.shape[0], Z.mean(0)
        centred, delta, total = Z - mean_b, mean_b - self.mean, self.count + Z.shape[0]
        self.comoment += centred.T @ centred + torch.outer(delta, delta) * (self.count * n_b / total)
        self.mean += delta * (n_b / total)
        self.count = total

    @property
    def std(self) -> Tensor:
        """The population standard deviation of each column, shape ``(k,)``."""
        return (self.comoment.diagonal() / max(self.count, 1)).sqrt()

    def rescaled(self, shift: Tensor, scale: Tensor) -> Moments:
        """The moments of ``(Z - shift) / scale``."""
        return Moments(self.count, (self.mean - shift) / scale, self.comoment / torch.outer(scale, scale))


def least_squares_from_moments(
    moments: Moments,
    feature_names: Sequence[str] | None = None,
    residual_sum: Callable[[Tensor, Tensor], float] | None = None,
) -> LeastSquaresFit:
    """The least-squares fit of the last column of ``Z`` on the others, as ``fit_least_squares``, from moments.

    The centred normal equations are solved from the moments alone; ``residual_sum(w, b)`` gives the RSS,
    ``S_yy - mᵀw`` by default (no second pass over the rows).
    """
    n, d = moments.count, moments.mean.numel() - 1
    gram, moment = moments.comoment[:d, :d], moments.comoment[:d, d]
    x_mean, y_mean = moments.mean[:d], moments.mean[d]
    s_yy = float(moments.comoment[d, d])
    names = list(feature_names) if feature_names is not None else [f"x{j}" for j in range(d)]
    if n <= d + 1:
        raise UserInputError(
            f"least squares needs more training examples than coefficients: got {n} examples"
            f" for {d + 1} coefficients ({d} features and the intercept)"
        )
    if not torch.isfinite(moments.comoment).all():
        raise UserInputError("least squares needs finite training data: X or y holds NaN or infinite values")
    inverse = _inverse_gram(gram, x_mean, n, names)  # (d, d)
    w = inverse @ moment
    b = y_mean - x_mean @ w
    rss = max(s_yy - float(moment @ w), 0.0) if residual_sum is None else residual_sum(w, b)
    sigma2 = rss / (n - d - 1)
    # [X 1]ᵀ[X 1] inverted blockwise from the centred Gram matrix G: [[G⁻¹, -G⁻¹x̄], [-x̄ᵀG⁻¹, 1/n + x̄ᵀG⁻¹x̄]].
    cross = -(inverse @ x_mean)  # (d,)
    full = torch.empty(d + 1, d + 1, dtype=torch.float64, device=gram.device)
    full[:d, :d] = inverse
    full[:d, d] = full[d, :d] = cross
    full[d, d] = 1.0 / n - x_mean @ cross
    return LeastSquaresFit(w.cpu(), b.cpu(), (sigma2 * full).cpu(), sigma2, n, s_yy / n, x_mean.cpu(), (gram / n).cpu())


def _inverse_gram(gram: Tensor, x_mean: Tensor, n: int, names: list[str]) -> Tensor:
    """``gram⁻¹`` via Cholesky of the correlation matrix; refuses a rank-deficient design by name."""
    d = gram.shape[0]
    scale = gram.diagonal().sqrt()  # sqrt(n) x the standard deviation of each feature
    # A constant float32 column centres to exactly 0; the relative bound also absorbs round-off.
    constant = (scale / n**0.5 <= 1e-12 * x_mean.abs()).nonzero().view(-1).tolist()
    if constant:
        j = constant[0]
        raise UserInputError(
            f"least squares has no unique solution: feature {names[j]!r} is constant"
            f" (every training value is {x_mean[j].item():.6g}); the intercept already fits a constant"
        )
    corr = gram / torch.outer(scale, scale)  # unit diagonal, so pivots compare across features
    factor, info = torch.linalg.cholesky_ex(corr)
    # info = k > 0: the factorisation broke down at feature k - 1; the pivots before it are valid.
    done = int(info) - 1 if int(info) > 0 else d
    weak = (factor.diagonal()[:done] < COLLINEAR_PIVOT).nonzero().view(-1).tolist()
    if not weak and done == d:
        return torch.cholesky_inverse(factor) / torch.outer(scale, scale)
    k = weak[0] if weak else done
    twins = (corr[k, :k].abs() > 1 - 1e-8).nonzero().view(-1).tolist()
    if twins:
        problem = f"is a copy (or a multiple) of feature {names[twins[0]]!r}"
    else:  # regress feature k on those before it (a well-conditioned block) to name them
        beta = torch.linalg.solve(corr[:k, :k], corr[:k, k])
        used = [names[j] for j in (beta.abs() > 1e-3 * beta.abs().max()).nonzero().view(-1).tolist()]
        problem = "is a linear combination of " + ", ".join(map(repr, used[:5])) + (", ..." if len(used) > 5 else "")
    raise UserInputError(f"least squares has no unique solution: feature {names[k]!r} {problem}; remove one of them")


def transform(fit: LeastSquaresFit, affine: Callable[[Tensor, Tensor], tuple[Tensor, Tensor]]) -> LeastSquaresFit:
    """The fit through an affine map ``(w, b) -> (w', b')`` of the coefficients, such as a change of units.

    For ``θ' = A θ + c`` the covariance becomes ``A Σ Aᵀ``; column ``k`` of ``A`` is ``f(θ̂ + e_k) - f(θ̂)``,
    exact for an affine ``f``, which is called with float64 CPU tensors.

    Example:
        >>> fit = LeastSquaresFit(torch.ones(1), torch.tensor(0.0), torch.eye(2, dtype=torch.float64), 1.0, 10, 2.0)
        >>> [round(se, 4) for se in transform(fit, lambda w, b: (3 * w, b + w.sum())).standard_errors.tolist()]
        [3.0, 1.4142]
    """
    d = fit.w.numel()

    def flat(theta: Tensor) -> Tensor:  # (d + 1,) -> (d + 1,)
        w, b = affine(theta[:d], theta[d])
        return torch.cat(
            [torch.as_tensor(w, dtype=torch.float64).view(-1), torch.as_tensor(b, dtype=torch.float64).view(1)]
        )

    theta = torch.cat([fit.w, fit.b.view(1)])
    mapped = flat(theta)
    jacobian = torch.stack([flat(theta + e) - mapped for e in torch.eye(d + 1, dtype=torch.float64)], dim=1)
    covariance = jacobian @ fit.covariance @ jacobian.T
    return LeastSquaresFit(
        mapped[:d], mapped[d], covariance, fit.residual_variance, fit.num_examples, fit.target_variance
    )
