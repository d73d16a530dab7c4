"""Ordinary least squares: the closed-form reference that SGD's estimate is judged against.

Plain functions on tensors, no Lightning. Everything is computed in float64 over chunks of rows, so
the design matrix is never copied whole; the chunks can be moved to another device (a GPU) as they
are read, so the data may stay in host memory.

The intercept is handled by centring: with column means ``x̄`` and ``ȳ`` the slope solves
``(X - x̄)ᵀ(X - x̄) w = (X - x̄)ᵀ(y - ȳ)`` and ``b = ȳ - x̄ᵀw``. This is the same solution as the normal
equations of ``[X 1]`` but does not mix the intercept into the conditioning of the Gram matrix.
"""

from __future__ import annotations

from collections.abc import Callable, Iterator, Sequence
from dataclasses import dataclass

import torch
from torch import Tensor

from linreg.validation import UserInputError

# float64 elements per chunk (32 MB): large enough for fast matrix products, small next to the data.
CHUNK_ELEMENTS = 1 << 22
# A feature explained by the features before it up to R² > 1 - 1e-8 (variance inflation > 1e8) is
# treated as their linear combination: float32 data cannot carry the difference, and the coefficients
# along it would be set by rounding noise. The Cholesky pivot of the correlation matrix is sqrt(1 - R²).
COLLINEAR_PIVOT = 1e-4


@dataclass(frozen=True)
class LeastSquaresFit:
    """The least-squares estimate of ``y = x w + b`` and its uncertainty (float64, on the CPU).

    Attributes:
        w: the weights, shape ``(d,)``.
        b: the bias, a scalar tensor.
        covariance: the estimated covariance of ``(w, b)`` (in that order), ``s² ([X 1]ᵀ[X 1])⁻¹``,
            shape ``(d + 1, d + 1)``.
        residual_variance: ``s² = RSS / (n - d - 1)``, the estimate of the label noise variance.
        num_examples: ``n``, the number of rows fitted.
        target_variance: the variance of the fitted labels, ``Σ(y - ȳ)² / n``: the scale of a noise-free fit.
        feature_means: ``x̄``, shape ``(d,)``, and
        feature_covariance: ``(X - x̄)ᵀ(X - x̄) / n``, shape ``(d, d)``: with them ``training_mse`` scores
            any coefficients on the fitted rows without reading them again. None once ``transform`` has
            changed the units (the moments are those of the data as fitted).
    """

    w: Tensor
    b: Tensor
    covariance: Tensor
    residual_variance: float
    num_examples: int
    target_variance: float
    feature_means: Tensor | None = None
    feature_covariance: Tensor | None = None

    @property
    def standard_errors(self) -> Tensor:
        """The standard error of every coefficient, ``(w, b)`` in that order, shape ``(d + 1,)``."""
        return self.covariance.diagonal().sqrt()

    @property
    def degrees_of_freedom(self) -> int:
        """``n - p``: examples left over after fitting the ``p = d + 1`` coefficients."""
        return self.num_examples - self.w.numel() - 1

    @property
    def least_squares_mse(self) -> float:
        """``RSS / n``: the mean squared error of the least-squares solution on the rows it was fitted to."""
        return self.residual_variance * self.degrees_of_freedom / self.num_examples

    def training_mse(self, w: Tensor, b: Tensor) -> float:
        """The mean squared error of ``x w + b`` on the fitted rows, exactly, at the cost of ``d²`` operations.

        Least-squares residuals are orthogonal to the columns of ``[X 1]``, so for any coefficients
        ``MSE(w, b) = RSS / n + δwᵀ C δw + (δb + x̄ᵀ δw)²``, where ``δw = w - ŵ``, ``δb = b - b̂`` and ``C``
        is the feature covariance: the least-squares loss plus the distance from its solution, measured
        by the data. Written in centred form, nothing cancels however large the feature means are.

        Args:
            w: weights, shape ``(d,)``, in the units of the fit, on any device.
            b: bias, a scalar tensor.

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
    """Consecutive row blocks of ``(X, y)`` on ``device`` (in ``dtype``, unless None): ``(rows, d)``, ``(rows,)``.

    A block holds about ``CHUNK_ELEMENTS`` values of ``X``, so no full-size copy of ``X`` is ever made.
    """
    rows = max(1, CHUNK_ELEMENTS // max(1, X.shape[1]))
    for start in range(0, X.shape[0], rows):
        stop = start + rows
        yield X[start:stop].to(device, dtype), y[start:stop].to(device, dtype).view(-1)


def mean_squared_error(X: Tensor, y: Tensor, w: Tensor, b: Tensor | float, device: torch.device | None = None) -> float:
    """The mean of ``(x w + b - y)²`` over the rows of ``X``, in float64, chunk by chunk.

    Args:
        X: features, shape ``(n, d)``, any float dtype, on any device.
        y: labels, shape ``(n,)`` or ``(n, 1)``.
        w: weights, shape ``(d,)``.
        b: bias.
        device: where to compute; ``X.device`` by default.

    Example:
        >>> mean_squared_error(torch.tensor([[1.0], [2.0]]), torch.tensor([3.0, 5.0]), torch.tensor([2.0]), 1.0)
        0.0
    """
    device = X.device if device is None else device
    w = w.to(device, torch.float64).view(-1)
    b = torch.as_tensor(b, dtype=torch.float64, device=device)
    total = torch.zeros((), dtype=torch.float64, device=device)
    for x, t in row_chunks(X, y, device):
        total += (x @ w + b - t).square().sum()  # (rows, d) @ (d,) -> (rows,)
    return total.item() / X.shape[0]


def fit_least_squares(
    X: Tensor, y: Tensor, feature_names: Sequence[str] | None = None, device: torch.device | None = None
) -> LeastSquaresFit:
    """Ordinary least squares with an intercept, with standard errors as statsmodels reports them.

    Args:
        X: features, shape ``(n, d)``, any float dtype, on any device; never copied whole.
        y: labels, shape ``(n,)`` or ``(n, 1)``.
        feature_names: names used in error messages; ``x0, x1, ...`` by default.
        device: where to compute; ``X.device`` by default.

    Returns:
        The estimate, its covariance ``s² ([X 1]ᵀ[X 1])⁻¹`` and ``s² = RSS / (n - d - 1)``.

    Raises:
        UserInputError: if there are no more examples than coefficients, the data are not finite, or
            a feature is constant or a linear combination of others (no unique solution); the
            message names the feature.

    Example:
        >>> X = torch.tensor([[0.0], [1.0], [2.0], [3.0]])
        >>> fit = fit_least_squares(X, 2 * X + 1 + torch.tensor([[0.1], [-0.1], [-0.1], [0.1]]))
        >>> [round(v, 6) for v in (fit.w.item(), fit.b.item(), fit.residual_variance)]
        [2.0, 1.0, 0.02]
    """
    n, d = X.shape
    device = X.device if device is None else device
    x_mean, y_mean = _column_means(X, y, device)
    gram = torch.zeros(d, d, dtype=torch.float64, device=device)  # (X - x̄)ᵀ(X - x̄)
    moment = torch.zeros(d, dtype=torch.float64, device=device)  # (X - x̄)ᵀ(y - ȳ)
    total = torch.zeros((), dtype=torch.float64, device=device)  # (y - ȳ)ᵀ(y - ȳ)
    for x, t in row_chunks(X, y, device):
        x = x - x_mean  # not in place: for float64 input the chunk is a view of X
        gram.addmm_(x.T, x)
        moment.addmv_(x.T, t - y_mean)
        total += (t - y_mean).square().sum()

    def rss(w: Tensor, b: Tensor) -> float:
        return mean_squared_error(X, y, w, b, device) * n

    return _solve(gram, moment, x_mean, y_mean, n, feature_names, total.item(), rss)


@dataclass
class Moments:
    """Count, means and centred cross-products of the columns of ``Z = [X y]``, accumulated batch by batch.

    Batches are merged as Chan, Golub and LeVeque (1979) merge variances: each batch is centred on its
    own mean, so a column of mean 1e6 and spread 1e-2 keeps its digits in float64. One pass over the data
    gives the standardisation statistics and the least-squares solution (``least_squares_from_moments``).

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
    def empty(cls, k: int) -> Moments:
        return cls(0, torch.zeros(k, dtype=torch.float64), torch.zeros(k, k, dtype=torch.float64))

    def update(self, Z: Tensor) -> None:
        """Adds the rows of ``Z`` ``(rows, k)``."""
        if Z.shape[0] == 0:
            return
        Z = Z.to(torch.float64)
        n_b = Z.shape[0]
        mean_b = Z.mean(0)
        centred = Z - mean_b
        delta = mean_b - self.mean
        total = self.count + n_b
        self.comoment += centred.T @ centred + torch.outer(delta, delta) * (self.count * n_b / total)
        self.mean += delta * (n_b / total)
        self.count = total

    @property
    def std(self) -> Tensor:
        """The population standard deviation of each column, shape ``(k,)``."""
        return (self.comoment.diagonal() / max(self.count, 1)).sqrt()

    def rescaled(self, shift: Tensor, scale: Tensor) -> Moments:
        """The moments of ``(Z - shift) / scale``: what they are in standardised units."""
        return Moments(self.count, (self.mean - shift) / scale, self.comoment / torch.outer(scale, scale))


def least_squares_from_moments(moments: Moments, feature_names: Sequence[str] | None = None) -> LeastSquaresFit:
    """The least-squares fit of the last column of ``Z`` on the others, from its ``Moments`` alone.

    The same solution and standard errors as ``fit_least_squares`` on the rows themselves; the residual
    sum of squares comes from the moments (``S_yy - mᵀw``) instead of a second pass over the rows.

    Raises:
        UserInputError: as ``fit_least_squares``.
    """
    n, d = moments.count, moments.mean.numel() - 1
    gram, moment, s_yy = moments.comoment[:d, :d], moments.comoment[:d, d], moments.comoment[d, d]
    x_mean, y_mean = moments.mean[:d], moments.mean[d]
    return _solve(
        gram, moment, x_mean, y_mean, n, feature_names, float(s_yy), lambda w, b: max(float(s_yy - moment @ w), 0.0)
    )


def _solve(
    gram: Tensor,
    moment: Tensor,
    x_mean: Tensor,
    y_mean: Tensor,
    n: int,
    feature_names: Sequence[str] | None,
    total_sum: float,
    residual_sum: Callable[[Tensor, Tensor], float],
) -> LeastSquaresFit:
    """The fit from the centred normal equations; ``total_sum`` is ``Σ(y - ȳ)²``, ``residual_sum(w, b)`` the RSS."""
    d = gram.shape[0]
    device = gram.device
    names = list(feature_names) if feature_names is not None else [f"x{j}" for j in range(d)]
    if n <= d + 1:
        raise UserInputError(
            f"least squares needs more training examples than coefficients: got {n} examples"
            f" for {d + 1} coefficients ({d} features and the intercept)"
        )
    if not (torch.isfinite(gram).all() and torch.isfinite(moment).all()):
        raise UserInputError("least squares needs finite training data: X or y holds NaN or infinite values")
    inverse = _inverse_gram(gram, x_mean, n, names)  # (d, d)
    w = inverse @ moment
    b = y_mean - x_mean @ w
    sigma2 = residual_sum(w, b) / (n - d - 1)
    # The inverse of [X 1]ᵀ[X 1] in block form, from the centred Gram matrix G (Schur complement):
    # [[G⁻¹, -G⁻¹x̄], [-x̄ᵀG⁻¹, 1/n + x̄ᵀG⁻¹x̄]].
    cross = -(inverse @ x_mean)  # (d,)
    full = torch.empty(d + 1, d + 1, dtype=torch.float64, device=device)
    full[:d, :d] = inverse
    full[:d, d] = full[d, :d] = cross
    full[d, d] = 1.0 / n - x_mean @ cross
    covariance = (sigma2 * full).cpu()
    return LeastSquaresFit(w.cpu(), b.cpu(), covariance, sigma2, n, total_sum / n, x_mean.cpu(), (gram / n).cpu())


def _column_means(X: Tensor, y: Tensor, device: torch.device) -> tuple[Tensor, Tensor]:
    """``(x̄, ȳ)`` in float64: shape ``(d,)`` and a scalar."""
    x_sum = torch.zeros(X.shape[1], dtype=torch.float64, device=device)
    y_sum = torch.zeros((), dtype=torch.float64, device=device)
    for x, t in row_chunks(X, y, device):
        x_sum += x.sum(0)
        y_sum += t.sum()
    return x_sum / X.shape[0], y_sum / X.shape[0]


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
    if weak or done < d:
        k = weak[0] if weak else done
        raise UserInputError(f"least squares has no unique solution: {_dependence(corr, k, names)}")
    return torch.cholesky_inverse(factor) / torch.outer(scale, scale)


def _dependence(corr: Tensor, k: int, names: list[str]) -> str:
    """Says how feature ``k`` depends on the features before it: a copy of one, or a combination."""
    twins = (corr[k, :k].abs() > 1 - 1e-8).nonzero().view(-1).tolist()
    if twins:
        return f"feature {names[k]!r} is a copy (or a multiple) of feature {names[twins[0]]!r}; remove one of them"
    # Regress feature k on those before it (their correlation block is well conditioned) to name them.
    beta = torch.linalg.solve(corr[:k, :k], corr[:k, k])
    used = [names[j] for j in (beta.abs() > 1e-3 * beta.abs().max()).nonzero().view(-1).tolist()]
    listed = ", ".join(repr(name) for name in used[:5]) + (", ..." if len(used) > 5 else "")
    return f"feature {names[k]!r} is a linear combination of {listed}; remove one of them"


def transform(fit: LeastSquaresFit, affine: Callable[[Tensor, Tensor], tuple[Tensor, Tensor]]) -> LeastSquaresFit:
    """The fit expressed through an affine map of the coefficients, such as a change of units.

    For ``θ' = A θ + c`` the covariance becomes ``A Σ Aᵀ``, so the standard errors follow the
    coefficients. ``A`` is read off the map itself: its column ``k`` is ``f(θ̂ + e_k) - f(θ̂)``, exact
    for an affine ``f`` (every standardisation of features or labels is one).

    Args:
        fit: the fit in the units it was computed in.
        affine: ``(w, b) -> (w', b')``, affine in ``(w, b)``; called with float64 CPU tensors.

    Example:
        >>> fit = LeastSquaresFit(torch.ones(1), torch.tensor(0.0), torch.eye(2, dtype=torch.float64), 1.0, 10, 2.0)
        >>> [round(se, 4) for se in transform(fit, lambda w, b: (3 * w, b + w.sum())).standard_errors.tolist()]
        [3.0, 1.4142]
    """
    d = fit.w.numel()

    def flat(theta: Tensor) -> Tensor:  # (d + 1,) -> (d + 1,)
        w, b = affine(theta[:d], theta[d])
        w, b = torch.as_tensor(w, dtype=torch.float64), torch.as_tensor(b, dtype=torch.float64)
        return torch.cat([w.view(-1), b.view(1)])

    theta = torch.cat([fit.w, fit.b.view(1)])
    mapped = flat(theta)
    jacobian = torch.stack([flat(theta + e) - mapped for e in torch.eye(d + 1, dtype=torch.float64)], dim=1)
    covariance = jacobian @ fit.covariance @ jacobian.T
    return LeastSquaresFit(
        mapped[:d], mapped[d], covariance, fit.residual_variance, fit.num_examples, fit.target_variance
    )
