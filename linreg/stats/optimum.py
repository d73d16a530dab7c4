"""The exact optimum of the objective SGD minimizes, and its curvature: the reference a run is judged against.

Over ``θ = (w, b)`` and rows ``a = [x, 1]``, in the units the model trains in::

    F(w, b) = mean_i loss(x_i·w + b, y_i) + (weight_decay / 2)·||w||²      (the bias is not penalized)

with ``loss`` torch's ``mse_loss`` (``r²``) or ``HuberLoss(delta)`` (``r²/2`` for ``|r| <= delta``, else
``delta·(|r| - delta/2)``). MSE is quadratic: its optimum, value and Hessian follow from the ``Moments`` of
``[X y]`` alone, with no pass over the rows. Huber is solved by Newton's method over passes of row chunks. All
in float64; results on the CPU. ``chunks`` arguments are zero-argument callables returning a fresh iterable of
``(X (rows, d), y (rows,))`` blocks, such as ``lambda: row_chunks(X, y, device)``, so a table can be streamed
several times.
"""

from __future__ import annotations

from collections.abc import Callable, Iterable
from dataclasses import dataclass
from typing import Literal

import torch
from torch import Tensor

from linreg.stats.ols import COLLINEAR_PIVOT, Moments

Chunks = Callable[[], Iterable[tuple[Tensor, Tensor]]]
# Eigenvalues of a Gram matrix (XᵀX, a Hessian) below this fraction of the largest are zero: forming the
# product squares the singular values, so round-off alone leaves ~k·eps·λmax there; singular values below
# sqrt(1e-11) ≈ 3e-6 of the largest are not resolved.
RANK_RTOL = 1e-11
# Huber's Newton iteration stops when |∇F| <= GRADIENT_RTOL x the size of the terms summed into it.
GRADIENT_RTOL = 1e-12
# Huber's line search tries these fractions of each step, all in one pass: 1, 1/2, ..., 2⁻²⁰.
STEPS = 0.5 ** torch.arange(21, dtype=torch.float64)
# The relative round-off of F summed in float64 over up to millions of rows (about sqrt(n)·eps).
ROUND_OFF = 1e-12


def ridge_from_moments(moments: Moments, weight_decay: float) -> tuple[Tensor, Tensor]:
    """The minimizer of the MSE objective: ``(G + n·wd/2·I) w = Xcᵀyc`` and ``b = ȳ - x̄ᵀw``, for any ``n``.

    ``G`` and ``Xcᵀyc`` are the centred cross-products; at ``weight_decay = 0`` this is least squares.

    Raises:
        ValueError: ``weight_decay = 0`` and the design has no unique solution (use ``min_norm_from_moments``).

    Example:
        >>> m = Moments.empty(2); m.update(torch.tensor([[0.0, 1.0], [1.0, 3.0], [2.0, 5.0]]))
        >>> [round(float(v), 6) for v in ridge_from_moments(m, 0.0)], ridge_from_moments(m, 4 / 3)[0].item()
        ([2.0, 1.0], 1.0)
    """
    n, d = moments.count, moments.mean.numel() - 1
    gram = moments.comoment[:d, :d] + (n * weight_decay / 2) * torch.eye(
        d, dtype=torch.float64, device=moments.mean.device
    )
    if weight_decay == 0 and not _unique(moments):
        raise ValueError(f"least squares has no unique solution on {n} rows of {d} features; use min_norm_from_moments")
    w = torch.linalg.solve(gram, moments.comoment[:d, d])
    return w.cpu(), (moments.mean[d] - moments.mean[:d] @ w).cpu()


def min_norm_from_moments(moments: Moments) -> tuple[Tensor, Tensor]:
    """The least-squares solution of least Euclidean norm over ``θ = (w, b)``: ``pinv([X 1]) y``.

    Where ``n <= d + 1`` or the columns are dependent, least squares has a line (or more) of solutions, and
    this is the one that gradient descent started at ``θ = 0`` converges to: each step
    ``-lr·A_Bᵀ(A_B θ - y_B)`` lies in the row space of ``A = [X 1]``, so the iterates never leave it, and the
    only least-squares solution in that space is ``pinv(A) y``. Started at ``θ₀ ≈ 0`` (as d2l initializes,
    ``w ~ N(0, 0.01²)``), SGD ends within ``|θ₀|`` of it.

    Solved centred, where offsets cost no digits: ``Aθ = Xc w + (b + x̄ᵀw)1`` with orthogonal parts, so the
    solutions are ``b + x̄ᵀw = ȳ`` and ``w = w₀ + N z``, ``w₀ = pinv(Xc) yc`` and ``N`` an orthonormal basis of
    ``Xc``'s null space (``G``'s eigenvalues below ``RANK_RTOL`` of the largest). ``|w|² + b² = |w₀|² + |z|² +
    (e - uᵀz)²`` with ``u = Nᵀx̄`` and ``e = ȳ - x̄ᵀw₀`` is least at ``z = e·u / (1 + |u|²)``.
    """
    d = moments.mean.numel() - 1
    x_mean, y_mean = moments.mean[:d], moments.mean[d]
    values, vectors = torch.linalg.eigh(moments.comoment[:d, :d])
    keep = values > RANK_RTOL * values[-1].clamp(min=0)
    w = vectors[:, keep] @ ((vectors[:, keep].T @ moments.comoment[:d, d]) / values[keep])  # pinv(Xc) yc
    null = vectors[:, ~keep]  # (d, d - rank)
    u = null.T @ x_mean
    w = w + null @ (u * (y_mean - x_mean @ w) / (1 + u @ u))
    return w.cpu(), (y_mean - x_mean @ w).cpu()


def optimum_from_moments(moments: Moments, weight_decay: float) -> tuple[Tensor, Tensor]:
    """The MSE objective's minimizer: ridge, least squares, or least squares' minimum-norm solution."""
    if weight_decay > 0 or _unique(moments):
        return ridge_from_moments(moments, weight_decay)
    return min_norm_from_moments(moments)


def mse_excess(
    moments: Moments, w: Tensor, b: Tensor | float, weight_decay: float, optimum: tuple[Tensor, Tensor] | None = None
) -> float:
    """``F(w, b) - min F`` for MSE, exactly and in ``d²`` operations: ``½ δθᵀ H δθ`` with ``δθ = θ - θ̂``.

    ``F`` is quadratic with gradient 0 at any minimizer ``θ̂``; centred, ``½ δθᵀHδθ = δwᵀCδw + (δb + x̄ᵀδw)²
    + (wd/2)|δw|²`` with ``C`` the feature covariance, where nothing cancels. Pass ``optimum`` (from
    ``optimum_from_moments``) to skip solving for it at every call.
    """
    d = moments.mean.numel() - 1
    w_hat, b_hat = optimum_from_moments(moments, weight_decay) if optimum is None else optimum
    dw = w.detach().to(torch.float64).cpu().view(-1) - w_hat
    db = torch.as_tensor(b, dtype=torch.float64).cpu().view(()) - b_hat
    covariance, x_mean = (moments.comoment[:d, :d] / moments.count).cpu(), moments.mean[:d].cpu()
    return float(dw @ covariance @ dw + (db + x_mean @ dw).square() + weight_decay / 2 * dw.square().sum())


def mse_objective(
    moments: Moments, w: Tensor, b: Tensor | float, weight_decay: float, optimum: tuple[Tensor, Tensor] | None = None
) -> float:
    """``F(w, b)`` for MSE from the moments: ``min F + mse_excess``, where ``min F = (S_yy - mᵀŵ) / n``.

    The normal equations ``(G + n·wd/2·I) ŵ = m`` fold the penalty into ``mᵀŵ``; they hold at any minimizer.
    """
    d = moments.mean.numel() - 1
    optimum = optimum_from_moments(moments, weight_decay) if optimum is None else optimum
    s_yy, moment = float(moments.comoment[d, d]), moments.comoment[:d, d].cpu()
    return max(s_yy - float(moment @ optimum[0]), 0.0) / moments.count + mse_excess(
        moments, w, b, weight_decay, optimum
    )


def objective_value(
    chunks: Chunks,
    w: Tensor,
    b: Tensor | float,
    loss: Literal["mse", "huber"] = "mse",
    delta: float = 1.0,
    weight_decay: float = 0.0,
) -> float:
    """``F(w, b)`` by one pass over the rows, for either loss."""
    theta = torch.cat([w.detach().to(torch.float64).view(-1), torch.as_tensor(b, dtype=torch.float64).view(1)])
    if loss == "huber":
        return _huber_pass(chunks, theta, delta, weight_decay, curvature=False).value
    total, n = 0.0, 0
    for x, y in chunks():
        a, t = _rows(x, y)
        total, n = total + float((a @ theta.to(a) - t).square().sum()), n + a.shape[0]
    return total / n + weight_decay / 2 * float(theta[:-1].square().sum())


def hessian(moments: Moments, weight_decay: float) -> Tensor:
    """The MSE objective's Hessian in ``θ = (w, b)``: ``2·E[a aᵀ] + wd·diag(1, ..., 1, 0)``, ``(d + 1, d + 1)``."""
    return (2 * _second_moment(moments) + weight_decay * _penalty(moments.mean.numel(), moments.mean.device)).cpu()


def huber_hessian(chunks: Chunks, w: Tensor, b: Tensor | float, delta: float, weight_decay: float) -> Tensor:
    """The Huber objective's Hessian at ``(w, b)`` by one pass: ``E[1{|r| <= delta} a aᵀ] + wd·diag(1, ..., 1, 0)``."""
    theta = torch.cat([w.detach().to(torch.float64).view(-1), torch.as_tensor(b, dtype=torch.float64).view(1)])
    return _huber_pass(chunks, theta, delta, weight_decay).hessian


@dataclass(frozen=True)
class Curvature:
    """The eigenvalues of an objective's Hessian that set how SGD can run on it.

    Attributes:
        largest, smallest: the extreme eigenvalues.
        smallest_nonzero: the smallest above ``RANK_RTOL·largest``; with fewer rows than coefficients
            (``smallest`` = 0) it sets the rate in the row space, where gradient descent moves.
        trace: the sum of the eigenvalues.
    """

    largest: float
    smallest: float
    smallest_nonzero: float
    trace: float

    @classmethod
    def of(cls, hessian: Tensor) -> Curvature:
        values = torch.linalg.eigvalsh(hessian.to(torch.float64))
        nonzero = values[values > RANK_RTOL * values[-1]]
        return cls(float(values[-1]), float(values[0]), float(nonzero[0]), float(values.sum()))

    @property
    def condition(self) -> float:
        """``largest / smallest_nonzero``: gradient descent's steps to shrink the error ``e``-fold, roughly."""
        return self.largest / self.smallest_nonzero

    def stable_lr(self, momentum: float = 0.0) -> float:
        """The learning rate above which full-batch (heavy-ball) gradient descent diverges: ``2(1 + β)/λmax``."""
        return 2 * (1 + momentum) / self.largest


def noise_floor(lr: float, momentum: float, batch_size: int, residual_variance: float, hessian_trace: float) -> float:
    """The excess MSE objective at which constant-step SGD settles, to leading order in ``lr``.

    Near the optimum a step is ``δθ ← (I - lr·H) δθ - lr·ξ``. With residuals of variance ``s²`` independent
    of the rows, the gradient noise of a batch of ``B`` has covariance ``S = 2s²H/B`` (``Cov(2 a r) =
    4s² E[a aᵀ]``); the stationary covariance solves ``HΣ + ΣH = lr·S``, so ``Σ = (lr s²/B) I`` and the
    expected excess is ``½ tr(HΣ) = lr s² tr(H) / (2B)``. Heavy-ball momentum ``β`` scales the step to
    ``lr / (1 - β)``. Weight decay adds to ``H`` but not to ``S``; counting it in the trace makes this a slight
    overestimate. See Bach & Moulines (2013), "Non-strongly-convex smooth stochastic approximation with
    convergence rate O(1/n)", NeurIPS, for the constant-step analysis of least squares.

    Example:
        >>> round(noise_floor(lr=0.03, momentum=0.0, batch_size=10, residual_variance=1e-4, hessian_trace=6.0), 12)
        9e-07
    """
    return lr / (1 - momentum) * residual_variance * hessian_trace / (2 * batch_size)


def ridge_degrees_of_freedom(moments: Moments, weight_decay: float) -> float:
    """``tr(G (G + n·wd/2·I)⁻¹)``: the trace of ridge's hat matrix on the centred rows (``d`` at ``wd = 0``)."""
    d = moments.mean.numel() - 1
    gram = moments.comoment[:d, :d]
    values = torch.linalg.eigvalsh(gram)
    values = values[values > RANK_RTOL * values[-1]]  # at wd = 0: the rank
    return float((values / (values + moments.count * weight_decay / 2)).sum())


def ridge_covariance(moments: Moments, weight_decay: float, residual_variance: float | None = None) -> Tensor:
    """The sandwich covariance of ridge's ``(ŵ, b̂)`` under homoscedastic noise, ``(d + 1, d + 1)``.

    ``ŵ = R Xcᵀ y`` with ``R = (G + n·wd/2·I)⁻¹`` gives ``Cov(ŵ) = s² R G R`` (``s² G⁻¹``, least squares', at
    ``wd = 0``); ``b̂ = ȳ - x̄ᵀŵ`` with ``ȳ`` uncorrelated with ``ŵ`` (``Xcᵀ1 = 0``) gives
    ``Var(b̂) = s²/n + x̄ᵀCov(ŵ)x̄`` and ``Cov(ŵ, b̂) = -Cov(ŵ)x̄``. It is the spread of the estimate around
    its mean, not around the true weights: ridge's bias is left out, which is what comparing SGD with the
    ridge optimum needs. ``residual_variance`` defaults to ``RSS / (n - df - 1)`` with ``df`` the effective
    degrees of freedom (``ridge_degrees_of_freedom``) and the RSS from the moments.

    Raises:
        ValueError: no residual degrees of freedom are left to estimate ``s²`` from.
    """
    n, d = moments.count, moments.mean.numel() - 1
    gram, x_mean = moments.comoment[:d, :d].cpu(), moments.mean[:d].cpu()
    if weight_decay == 0 and not _unique(moments):
        raise ValueError(f"least squares has no unique solution on {n} rows of {d} features, so no covariance")
    if residual_variance is None:
        residual_df = n - ridge_degrees_of_freedom(moments, weight_decay) - 1
        if residual_df <= 1e-9 * n:
            raise ValueError(f"no residual degrees of freedom to estimate the noise from: {n} rows, {d} features")
        w, _ = optimum_from_moments(moments, weight_decay)
        rss = float(moments.comoment[d, d] - 2 * moments.comoment[:d, d].cpu() @ w + w @ gram @ w)
        residual_variance = max(rss, 0.0) / residual_df
    resolvent = torch.linalg.inv(gram + n * weight_decay / 2 * torch.eye(d, dtype=torch.float64))
    weights = residual_variance * resolvent @ gram @ resolvent  # (d, d)
    full = torch.empty(d + 1, d + 1, dtype=torch.float64)
    full[:d, :d] = weights
    full[:d, d] = full[d, :d] = -(weights @ x_mean)
    full[d, d] = residual_variance / n + x_mean @ weights @ x_mean
    return full


def huber_fit(
    chunks: Chunks,
    d: int,
    delta: float,
    weight_decay: float,
    start: tuple[Tensor, Tensor] | None = None,
    max_passes: int = 100,
) -> tuple[Tensor, Tensor]:
    """The minimizer of the Huber objective, by Newton's method over passes of the rows, in float64.

    Starts at the MSE objective's optimum (one pass for the moments) unless ``start`` is given. A pass at
    ``θ`` gives ``F``, ``∇F``, the Hessian ``H = E[1{|r| <= delta} a aᵀ] + wd·D`` and the IRLS matrix
    ``W = E[min(1, delta/|r|) a aᵀ] + wd·D`` (``W ⪰ H``: the quadratic of curvature ``W`` touching ``F`` at
    ``θ`` lies above it, so the step ``-W⁻¹∇F`` always lowers ``F``). A second, lighter pass evaluates ``F``
    along Newton's step ``-H⁻¹∇F`` and IRLS's at the fractions ``STEPS`` and moves to the lowest; where ``H``
    is singular (too few residuals within ``delta``) only IRLS's is tried. ``F`` is piecewise quadratic, so
    once the residuals within ``delta`` settle the full Newton step is exact. Stops when
    ``|∇F| <= GRADIENT_RTOL`` x the size of the terms summed into it, or when no step lowers ``F`` beyond
    its round-off.

    Raises:
        ValueError: the minimizer is not unique (``weight_decay = 0`` and ``[X 1]`` of rank below ``d + 1``,
            as with ``n <= d + 1``), or is too ill-conditioned to find.
        RuntimeError: not converged within ``max_passes`` passes over the rows (besides the one for the start).
    """
    if start is None:
        moments = None
        for x, y in chunks():
            z = torch.cat([x.to(torch.float64), y.to(torch.float64).view(-1, 1)], dim=1)  # (rows, d + 1)
            moments = Moments.empty(d + 1, z.device) if moments is None else moments
            moments.update(z)
        start = optimum_from_moments(moments, weight_decay)
    theta = torch.cat([start[0].to(torch.float64).cpu().view(-1), start[1].to(torch.float64).cpu().view(1)])
    here = _huber_pass(chunks, theta, delta, weight_decay)
    values = torch.linalg.eigvalsh(here.majorizer)
    if values[0] <= RANK_RTOL * values[-1]:  # W's weights are all positive: singular exactly where [X 1] is
        raise ValueError(
            f"the Huber objective has no unique minimizer to find: [X 1] has rank below {d + 1} (or nearly) and"
            f" weight_decay is {weight_decay:g}"
        )
    passes = 1
    while here.gradient.norm() > GRADIENT_RTOL * here.scale:
        if passes + 2 > max_passes:
            raise RuntimeError(
                f"the Huber solver did not converge in {max_passes} passes: |∇F| = {float(here.gradient.norm()):.3g}"
                f" against {GRADIENT_RTOL * here.scale:.3g}"
            )
        directions = [-torch.linalg.solve(here.majorizer, here.gradient)]  # IRLS's: lowers F at step 1
        factor, info = torch.linalg.cholesky_ex(here.hessian)
        if info == 0:
            directions.insert(0, -torch.cholesky_solve(here.gradient.view(-1, 1), factor).view(-1))
        values = _values_along(chunks, theta, torch.stack(directions), delta, weight_decay)  # (directions, steps)
        # The longest step, Newton's first, within F's round-off of the lowest value found.
        best = (values <= values.min() + ROUND_OFF * abs(here.value)).view(-1).nonzero()[0].item()
        j, i = divmod(best, STEPS.numel())
        theta = theta + STEPS[i] * directions[j]
        if values[j, i] >= here.value:  # no step lowers F beyond its round-off
            break
        here = _huber_pass(chunks, theta, delta, weight_decay)
        passes += 2
    return theta[:d], theta[d]


def _values_along(chunks: Chunks, theta: Tensor, directions: Tensor, delta: float, weight_decay: float) -> Tensor:
    """``F(θ + s·p)`` for each direction ``p`` (rows of ``directions``) and step ``s`` in ``STEPS``, in one pass."""
    total, n = torch.zeros(directions.shape[0], STEPS.numel(), dtype=torch.float64), 0
    for x, y in chunks():
        a, t = _rows(x, y)
        r, q = a @ theta.to(a) - t, a @ directions.to(a).T  # (rows,), (rows, directions)
        for i, step in enumerate(STEPS.tolist()):
            moved = (r.view(-1, 1) + step * q).abs()
            total[:, i] += torch.where(moved <= delta, moved.square() / 2, delta * (moved - delta / 2)).sum(0).cpu()
        n += a.shape[0]
    moved_w = theta[:-1].view(1, -1, 1) + directions[:, :-1, None] * STEPS  # (directions, d, steps)
    return total / n + weight_decay / 2 * moved_w.square().sum(1)


@dataclass
class _HuberPass:
    """``F``, ``∇F`` ``(k,)``, ``H`` and ``W`` ``(k, k)`` at one ``θ``; ``scale``: ``mean|ψ(r)|·|a| + wd·|w|``."""

    value: float
    gradient: Tensor
    hessian: Tensor
    majorizer: Tensor
    scale: float


def _huber_pass(chunks: Chunks, theta: Tensor, delta: float, weight_decay: float, curvature: bool = True) -> _HuberPass:
    """One pass over the rows at ``θ`` ``(d + 1,)``; ``H`` and ``W`` are left at the penalty's without ``curvature``."""
    k = theta.numel()
    value, n, scale = 0.0, 0, 0.0
    gradient, hessian, majorizer = torch.zeros(k, dtype=torch.float64), *torch.zeros(2, k, k, dtype=torch.float64)
    for x, y in chunks():
        a, t = _rows(x, y)
        r = a @ theta.to(a) - t  # (rows,)
        inside = r.abs() <= delta
        psi = r.clamp(-delta, delta)  # the loss's derivative
        value += float(torch.where(inside, r.square() / 2, delta * (r.abs() - delta / 2)).sum())
        gradient += (a.T @ psi).cpu()
        scale += float((psi.abs() * a.norm(dim=1)).sum())
        n += a.shape[0]
        if curvature:
            hessian += (a.T @ (a * inside.view(-1, 1))).cpu()
            majorizer += (a.T @ (a * (delta / r.abs().clamp(min=delta)).view(-1, 1))).cpu()
    w = theta[:-1]
    penalty = weight_decay * _penalty(k, None)
    return _HuberPass(
        value / n + weight_decay / 2 * float(w.square().sum()),
        gradient / n + penalty @ theta,
        hessian / n + penalty,
        majorizer / n + penalty,
        scale / n + weight_decay * float(w.norm()),
    )


def _rows(x: Tensor, y: Tensor) -> tuple[Tensor, Tensor]:
    """``a = [x, 1]`` ``(rows, d + 1)`` and ``y`` ``(rows,)``, in float64."""
    x = x.to(torch.float64)
    return torch.cat([x, torch.ones(x.shape[0], 1, dtype=x.dtype, device=x.device)], dim=1), y.to(x).view(-1)


def _second_moment(moments: Moments) -> Tensor:
    """``E[a aᵀ]`` for ``a = [x, 1]``: ``[[C + x̄x̄ᵀ, x̄], [x̄ᵀ, 1]]``, ``(d + 1, d + 1)``."""
    d = moments.mean.numel() - 1
    x_mean = moments.mean[:d]
    out = torch.ones(d + 1, d + 1, dtype=torch.float64, device=moments.mean.device)
    out[:d, :d] = moments.comoment[:d, :d] / moments.count + torch.outer(x_mean, x_mean)
    out[:d, d] = out[d, :d] = x_mean
    return out


def _penalty(k: int, device: torch.device | None) -> Tensor:
    """``diag(1, ..., 1, 0)``: weight decay's Hessian, the bias not penalized."""
    out = torch.eye(k, dtype=torch.float64, device=device)
    out[-1, -1] = 0
    return out


def _unique(moments: Moments) -> bool:
    """Whether least squares has one solution: no feature constant or (nearly) a combination of others, as ``ols``."""
    n, d = moments.count, moments.mean.numel() - 1
    if n <= d + 1:
        return False
    scale = moments.comoment[:d, :d].diagonal().sqrt()
    if not bool((scale > 1e-12 * n**0.5 * moments.mean[:d].abs()).all() and (scale > 0).all()):  # a constant column
        return False
    factor, info = torch.linalg.cholesky_ex(moments.comoment[:d, :d] / torch.outer(scale, scale))
    return int(info) == 0 and bool((factor.diagonal() >= COLLINEAR_PIVOT).all())
