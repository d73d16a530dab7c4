"""Least squares, plain or penalised (ridge), in closed form from the moments of ``[X y]``: the references SGD's
estimate of ``y = x w + b`` is judged against.

Plain functions on tensors, no Lightning, in float64 over chunks of rows (the design matrix is never copied whole;
chunks may be moved to a GPU as they are read). The intercept is handled by centring: with ``G = Xcᵀ Xc`` and
``m = Xcᵀ yc`` the centred cross-products, ``(G + n·wd/2·I) w = m`` and ``b = ȳ - x̄ᵀw`` minimise
``mean (x w + b - y)² + wd/2·|w|²``, without the intercept in the conditioning of ``G``.
"""

from __future__ import annotations

import math
from collections.abc import Callable, Iterable, Iterator, Sequence
from dataclasses import dataclass

import torch
from torch import Tensor

from linreg.validation import UserInputError

# float64 elements per chunk (32 MB): large enough for fast matrix products, small next to the data.
CHUNK_ELEMENTS = 1 << 22
# A feature explained by the features before it up to R² > 1 - 1e-8 is treated as their linear combination:
# float32 data cannot carry the difference. The Cholesky pivot of the correlation matrix is sqrt(1 - R²).
COLLINEAR_PIVOT = 1e-4
# Eigenvalues of a Gram matrix (XᵀX, a Hessian) below this fraction of the largest are zero: forming the product
# squares the singular values, so round-off alone leaves ~k·eps·λmax there.
RANK_RTOL = 1e-11


@dataclass
class Moments:
    """Count, means ``(k,)`` and centred cross-products ``(Z - mean)ᵀ(Z - mean)`` ``(k, k)`` of ``Z = [X y]``.

    Float64, batch by batch, merged as Chan, Golub and LeVeque (1979) merge variances, each batch centred on its own
    mean, so a column of mean 1e6 and spread 1e-2 keeps its digits.

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
        zeros = lambda *shape: torch.zeros(*shape, dtype=torch.float64, device=device)  # noqa: E731
        return cls(0, zeros(k), zeros(k, k))

    @classmethod
    def of(cls, chunks: Iterable[tuple[Tensor, Tensor]], k: int, device: torch.device | None = None) -> Moments:
        """The moments of ``[x y]`` over ``(x (rows, k - 1), y (rows,))`` blocks."""
        moments = cls.empty(k, device)
        for x, y in chunks:
            moments.update(torch.cat([x.to(torch.float64), y.to(torch.float64).view(-1, 1)], dim=1))
        return moments

    def update(self, Z: Tensor) -> None:
        """Adds the rows of ``Z`` ``(rows, k)``."""
        if Z.shape[0] == 0:
            return
        Z = Z.to(self.mean.device, torch.float64)
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

    def cpu(self) -> Moments:
        return Moments(self.count, self.mean.cpu(), self.comoment.cpu())

    def split(self) -> tuple[int, int, Tensor, Tensor, Tensor, Tensor, float]:
        """``n, d, G (d, d), m (d,), x̄ (d,), ȳ, S_yy``: the centred blocks of ``[X y]``'s moments."""
        d = self.mean.numel() - 1
        c = self.comoment
        return self.count, d, c[:d, :d], c[:d, d], self.mean[:d], self.mean[d], float(c[d, d])


def row_chunks(
    X: Tensor, y: Tensor, device: torch.device, dtype: torch.dtype | None = torch.float64
) -> Iterator[tuple[Tensor, Tensor]]:
    """Row blocks of ``(X, y)`` of about ``CHUNK_ELEMENTS`` values, on ``device``: ``(rows, d)``, ``(rows,)``."""
    rows = max(1, CHUNK_ELEMENTS // max(1, X.shape[1]))
    for start in range(0, X.shape[0], rows):
        yield X[start : start + rows].to(device, dtype), y[start : start + rows].to(device, dtype).view(-1)


def mean_squared_error(X: Tensor, y: Tensor, w: Tensor, b: Tensor | float, device: torch.device | None = None) -> float:
    """The mean of ``(x w + b - y)²`` over ``X`` ``(n, d)`` and ``y`` ``(n,)`` or ``(n, 1)``, in float64."""
    device = X.device if device is None else device
    w = w.to(device, torch.float64).view(-1)
    b = torch.as_tensor(b, dtype=torch.float64, device=device)
    total = sum((x @ w + b - t).square().sum() for x, t in row_chunks(X, y, device))  # (rows, d) @ (d,) -> (rows,)
    return float(total) / X.shape[0]


def mse(moments: Moments, w: Tensor, b: Tensor | float) -> float:
    """The MSE of ``x w + b`` from the moments: ``(S_yy - 2mᵀw + wᵀGw) / n + (x̄ᵀw + b - ȳ)²``."""
    n, _, gram, moment, x_mean, y_mean, s_yy = moments.cpu().split()
    w, b = theta(w, b).tensor_split([-1])
    return max(s_yy - 2 * float(moment @ w) + float(w @ gram @ w), 0.0) / n + float(x_mean @ w + b[0] - y_mean) ** 2


def mse_excess(moments: Moments, w: Tensor, b: Tensor | float, wd: float, optimum: tuple[Tensor, Tensor]) -> float:
    """``F(w, b) - F(ŵ, b̂)`` for ``F = MSE + wd/2·|w|²`` and its minimiser ``optimum``, exactly, in ``d²`` operations.

    ``F`` is quadratic with gradient 0 at ``θ̂``, so the excess is ``½ δθᵀHδθ``; centred, ``δwᵀCδw + (δb + x̄ᵀδw)²
    + wd/2·|δw|²`` with ``C`` the feature covariance, where nothing cancels.
    """
    n, _, gram, _, x_mean, _, _ = moments.cpu().split()
    delta = theta(w, b) - theta(*optimum)
    dw, db = delta[:-1], delta[-1]
    return max(float(dw @ gram @ dw / n + (db + x_mean @ dw).square() + wd / 2 * dw.square().sum()), 0.0)


def theta(w: Tensor, b: Tensor | float) -> Tensor:
    """``θ = (w, b)`` as one float64 CPU vector ``(d + 1,)``, from a model's weights of any shape and device."""
    b = torch.as_tensor(b, dtype=torch.float64).detach().cpu().view(1)
    return torch.cat([w.detach().to("cpu", torch.float64).view(-1), b])


def ridge_from_moments(moments: Moments, weight_decay: float) -> tuple[Tensor, Tensor]:
    """The minimiser of ``MSE + wd/2·|w|²``: ``(G + n·wd/2·I) w = m``, ``b = ȳ - x̄ᵀw``; least squares at ``wd = 0``.

    Raises:
        ValueError: ``weight_decay = 0`` and the design has no unique solution (use ``min_norm_from_moments``).
    """
    n, d, gram, moment, x_mean, y_mean, _ = moments.split()
    if weight_decay == 0 and not unique(moments):
        raise ValueError(f"least squares has no unique solution on {n} rows of {d} features; use min_norm_from_moments")
    w = torch.linalg.solve(gram + n * weight_decay / 2 * torch.eye(d, dtype=gram.dtype, device=gram.device), moment)
    return w.cpu(), (y_mean - x_mean @ w).cpu()


def min_norm_from_moments(moments: Moments) -> tuple[Tensor, Tensor]:
    """The least-squares solution of least Euclidean norm over ``θ = (w, b)``: ``pinv([X 1]) y``.

    Where ``n <= d + 1`` or the columns are dependent, least squares has many solutions; gradient descent started at
    ``θ = 0`` stays in the row space of ``[X 1]`` (each step is ``-lr·A_Bᵀ r_B``), where ``pinv(A) y`` is the only one.
    Centred: ``w = w₀ + N z`` with ``w₀ = pinv(Xc) yc`` and ``N`` a basis of ``Xc``'s null space; ``b = ȳ - x̄ᵀw``.
    ``|w|² + b²`` is least at ``z = e·u / (1 + |u|²)``, ``u = Nᵀx̄``, ``e = ȳ - x̄ᵀw₀``.
    """
    _, _, gram, moment, x_mean, y_mean, _ = moments.split()
    values, vectors = torch.linalg.eigh(gram)
    keep = values > RANK_RTOL * values[-1].clamp(min=0)
    w = vectors[:, keep] @ ((vectors[:, keep].T @ moment) / values[keep])  # pinv(Xc) yc
    null = vectors[:, ~keep]  # (d, d - rank)
    u = null.T @ x_mean
    w = w + null @ (u * (y_mean - x_mean @ w) / (1 + u @ u))
    return w.cpu(), (y_mean - x_mean @ w).cpu()


def optimum_from_moments(moments: Moments, weight_decay: float) -> tuple[Tensor, Tensor]:
    """The minimiser of ``MSE + wd/2·|w|²``: ridge, least squares, or least squares' minimum-norm solution."""
    if weight_decay > 0 or unique(moments):
        return ridge_from_moments(moments, weight_decay)
    return min_norm_from_moments(moments)


def ridge_degrees_of_freedom(moments: Moments, weight_decay: float) -> float:
    """``tr(G (G + n·wd/2·I)⁻¹)``: the trace of ridge's hat matrix on the centred rows (the rank at ``wd = 0``)."""
    values = torch.linalg.eigvalsh(moments.split()[2])
    values = values[values > RANK_RTOL * values[-1]]
    return float((values / (values + moments.count * weight_decay / 2)).sum())


def ridge_covariance(moments: Moments, weight_decay: float) -> Tensor:
    """The sandwich covariance of ridge's ``(ŵ, b̂)`` under homoscedastic noise, ``(d + 1, d + 1)``.

    ``ŵ = R m`` with ``R = (G + n·wd/2·I)⁻¹`` has ``Cov(ŵ) = s² R G R`` (least squares' ``s² G⁻¹`` at ``wd = 0``).
    It is the spread around the estimate's mean: ridge's bias is left out, as comparing SGD with ridge's optimum
    needs. ``s² = RSS / (n - df - 1)``, ``df`` from ``ridge_degrees_of_freedom``.

    Raises:
        ValueError: no unique least-squares solution, or no residual degrees of freedom for ``s²``.
    """
    n, d, gram, _, x_mean, _, _ = moments.cpu().split()
    w, b = ridge_from_moments(moments, weight_decay)  # refuses a design without a unique solution
    residual_df = n - ridge_degrees_of_freedom(moments, weight_decay) - 1
    if residual_df <= 1e-9 * n:
        raise ValueError(f"no residual degrees of freedom to estimate the noise from: {n} rows, {d} features")
    residual_variance = mse(moments, w, b) * n / residual_df
    resolvent = torch.linalg.inv(gram + n * weight_decay / 2 * torch.eye(d, dtype=torch.float64))
    return coefficient_covariance(residual_variance * resolvent @ gram @ resolvent, x_mean, residual_variance / n)


def coefficient_covariance(weights: Tensor, x_mean: Tensor, mean_variance: float) -> Tensor:
    """The covariance of ``(ŵ, b̂)`` ``(d + 1, d + 1)`` from ``Cov(ŵ)`` ``(d, d)``, for ``b̂ = ȳ - x̄ᵀŵ``.

    ``ȳ`` (variance ``s²/n``) is uncorrelated with ``ŵ`` (``Xcᵀ1 = 0``), so ``Var(b̂) = s²/n + x̄ᵀCov(ŵ)x̄`` and
    ``Cov(ŵ, b̂) = -Cov(ŵ)x̄``.
    """
    d = x_mean.numel()
    full = torch.empty(d + 1, d + 1, dtype=torch.float64, device=weights.device)
    full[:d, :d] = weights
    full[:d, d] = full[d, :d] = -(weights @ x_mean)
    full[d, d] = mean_variance + x_mean @ weights @ x_mean
    return full


@dataclass(frozen=True)
class LeastSquaresFit:
    """The least-squares estimate ``w (d,)``, ``b ()`` of ``y = x w + b`` and its uncertainty (float64, CPU).

    ``covariance``: ``s² ([X 1]ᵀ[X 1])⁻¹`` of ``(w, b)``, with ``s² = RSS / (n - d - 1)`` the residual variance;
    ``target_variance``: ``Σ(y - ȳ)² / n``; ``moments``: of the rows fitted, None after ``transform`` (they are in
    the units fitted); ``least_squares_mse``: ``RSS / n``.
    """

    w: Tensor
    b: Tensor
    covariance: Tensor
    residual_variance: float
    num_examples: int
    target_variance: float
    moments: Moments | None = None
    least_squares_mse: float = math.nan

    @property
    def standard_errors(self) -> Tensor:
        return self.covariance.diagonal().sqrt()

    @property
    def degrees_of_freedom(self) -> int:
        return self.num_examples - self.w.numel() - 1

    def training_mse(self, w: Tensor, b: Tensor) -> float:
        """The exact MSE of ``x w + b`` on the fitted rows, in ``d²`` operations: ``RSS / n`` plus ``mse_excess``."""
        if self.moments is None:
            raise ValueError("training_mse needs the moments, which transform() leaves out")
        return self.least_squares_mse + mse_excess(self.moments, w, b, 0.0, (self.w, self.b))


def fit_least_squares(
    X: Tensor, y: Tensor, feature_names: Sequence[str] | None = None, device: torch.device | None = None
) -> LeastSquaresFit:
    """Ordinary least squares with an intercept and statsmodels' standard errors, on ``X (n, d)``, ``y (n,)``.

    ``X`` is never copied whole; ``device`` (``X.device`` by default) is where to compute. Refuses as
    ``least_squares_from_moments``.

    Example:
        >>> X = torch.tensor([[0.0], [1.0], [2.0], [3.0]])
        >>> fit = fit_least_squares(X, 2 * X + 1 + torch.tensor([[0.1], [-0.1], [-0.1], [0.1]]))
        >>> [round(v, 6) for v in (fit.w.item(), fit.b.item(), fit.residual_variance)]
        [2.0, 1.0, 0.02]
    """
    device = X.device if device is None else device
    moments = Moments.of(row_chunks(X, y, device), X.shape[1] + 1, device)
    # The RSS from a second pass over the rows: exact where S_yy - mᵀw would cancel.
    return least_squares_from_moments(
        moments, feature_names, lambda w, b: mean_squared_error(X, y, w, b, device) * X.shape[0]
    )


def least_squares_from_moments(
    moments: Moments,
    feature_names: Sequence[str] | None = None,
    residual_sum: Callable[[Tensor, Tensor], float] | None = None,
) -> LeastSquaresFit:
    """The least-squares fit of the last column of ``Z`` on the others, from its moments.

    ``residual_sum(w, b)`` gives the RSS; by default it comes from the moments (no second pass over the rows).

    Raises:
        UserInputError: no more examples than coefficients, data not finite, or a feature constant or a linear
            combination of others (no unique solution); the message names the feature.
    """
    n, d, _, moment, x_mean, y_mean, s_yy = moments.split()
    if n <= d + 1:
        raise UserInputError(
            f"least squares needs more training examples than coefficients: got {n} examples"
            f" for {d + 1} coefficients ({d} features and the intercept)"
        )
    if not torch.isfinite(moments.comoment).all():
        raise UserInputError("least squares needs finite training data: X or y holds NaN or infinite values")
    inverse = _inverse_gram(moments, feature_names)  # (d, d)
    w = inverse @ moment
    b = y_mean - x_mean @ w
    rss = mse(moments, w, b) * n if residual_sum is None else residual_sum(w, b)
    sigma2 = rss / (n - d - 1)
    covariance = coefficient_covariance(sigma2 * inverse, x_mean, sigma2 / n)
    return LeastSquaresFit(w.cpu(), b.cpu(), covariance.cpu(), sigma2, n, s_yy / n, moments.cpu(), rss / n)


def min_norm_fit(moments: Moments) -> LeastSquaresFit:
    """The minimum-norm least-squares fit, without standard errors (the rows leave no noise estimate)."""
    w, b = min_norm_from_moments(moments)
    n, d = moments.count, moments.mean.numel() - 1
    nan = torch.full((d + 1, d + 1), math.nan, dtype=torch.float64)
    return LeastSquaresFit(w, b, nan, math.nan, n, float(moments.comoment[d, d]) / n, moments.cpu(), mse(moments, w, b))


def unique(moments: Moments) -> bool:
    """Whether least squares has one solution: more rows than coefficients and no feature the others determine."""
    if moments.count <= moments.mean.numel():
        return False
    try:
        _inverse_gram(moments)
    except UserInputError:
        return False
    return True


def _inverse_gram(moments: Moments, feature_names: Sequence[str] | None = None) -> Tensor:
    """``G⁻¹`` via Cholesky of the correlation matrix; refuses a rank-deficient design by name."""
    n, d, gram, _, x_mean, _, _ = moments.split()
    names = list(feature_names) if feature_names is not None else [f"x{j}" for j in range(d)]
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

    For ``θ' = A θ + c`` the covariance becomes ``A Σ Aᵀ``; column ``k`` of ``A`` is ``f(θ̂ + e_k) - f(θ̂)``, exact
    for an affine ``f``, which is called with float64 CPU tensors.

    Example:
        >>> fit = LeastSquaresFit(torch.ones(1), torch.tensor(0.0), torch.eye(2, dtype=torch.float64), 1.0, 10, 2.0)
        >>> [round(se, 4) for se in transform(fit, lambda w, b: (3 * w, b + w.sum())).standard_errors.tolist()]
        [3.0, 1.4142]
    """
    d, at = fit.w.numel(), theta(fit.w, fit.b)

    def flat(at: Tensor) -> Tensor:  # (d + 1,) -> (d + 1,)
        return theta(*affine(at[:d], at[d]))

    mapped = flat(at)
    jacobian = torch.stack([flat(at + e) - mapped for e in torch.eye(d + 1, dtype=torch.float64)], dim=1)
    covariance = jacobian @ fit.covariance @ jacobian.T
    return LeastSquaresFit(
        mapped[:d], mapped[d], covariance, fit.residual_variance, fit.num_examples, fit.target_variance
    )
