"""The objective SGD minimises over the rows, its curvature, and the Huber loss's optimum.

Over ``θ = (w, b)`` and rows ``a = [x, 1]``, in the units the model trains in::

    F(w, b) = mean_i loss(x_i·w + b, y_i) + (weight_decay / 2)·||w||²      (the bias is not penalised)

with ``loss`` torch's ``mse_loss`` (``r²``) or ``HuberLoss(delta)`` (``r²/2`` for ``|r| <= delta``, else
``delta·(|r| - delta/2)``). MSE's optimum is in closed form from the moments (``ols``); Huber's is found by Newton's
method over passes of row chunks. All in float64; results on the CPU. ``chunks`` arguments are zero-argument
callables returning a fresh iterable of ``(X (rows, d), y (rows,))`` blocks, so a table can be streamed several times.
"""

from __future__ import annotations

from collections.abc import Callable, Iterable
from dataclasses import dataclass

import torch
from torch import Tensor

from linreg.stats.ols import RANK_RTOL, Moments, optimum_from_moments, theta

Chunks = Callable[[], Iterable[tuple[Tensor, Tensor]]]
# Huber's Newton iteration stops when |∇F| <= GRADIENT_RTOL x the size of the terms summed into it.
GRADIENT_RTOL = 1e-12
# Huber's line search tries these fractions of each step, all in one pass: 1, 1/2, ..., 2⁻²⁰.
STEPS = 0.5 ** torch.arange(21, dtype=torch.float64)
# The relative round-off of F summed in float64 over up to millions of rows (about sqrt(n)·eps).
ROUND_OFF = 1e-12


def hessian(moments: Moments, weight_decay: float) -> Tensor:
    """MSE's Hessian in ``θ``: ``2·E[a aᵀ] + wd·D``, ``E[a aᵀ] = [[C + x̄x̄ᵀ, x̄], [x̄ᵀ, 1]]``, ``(d + 1, d + 1)``."""
    n, d, gram, _, x_mean, _, _ = moments.cpu().split()
    second = torch.ones(d + 1, d + 1, dtype=torch.float64)
    second[:d, :d] = gram / n + torch.outer(x_mean, x_mean)
    second[:d, d] = second[d, :d] = x_mean
    return 2 * second + weight_decay * _penalty(d + 1)


@dataclass(frozen=True)
class Curvature:
    """The eigenvalues of an objective's Hessian that set how SGD can run on it.

    With fewer rows than coefficients (``smallest`` = 0), ``smallest_nonzero`` sets the rate where gradient descent
    moves: in the row space.
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


def stable_lr(largest: float, momentum: float = 0.0) -> float:
    """The learning rate above which full-batch (heavy-ball) gradient descent diverges: ``2(1 + β)/λmax``."""
    return 2 * (1 + momentum) / largest


def noise_floor(lr: float, momentum: float, batch_size: int, residual_variance: float, hessian_trace: float) -> float:
    """The excess MSE objective at which constant-step SGD settles, to leading order in ``lr``: ``lr s² tr(H)/(2B)``.

    A step near the optimum is ``δθ ← (I - lr·H) δθ - lr·ξ``; residuals of variance ``s²`` give a batch of ``B`` the
    gradient noise ``S = 2s²H/B``, so the stationary ``HΣ + ΣH = lr·S`` has ``Σ = (lr s²/B) I`` and excess
    ``½ tr(HΣ)``. Momentum ``β`` scales the step to ``lr / (1 - β)``; weight decay in ``tr(H)`` overestimates slightly.
    Bach & Moulines (2013), NeurIPS, analyse constant-step least squares.
    """
    return lr / (1 - momentum) * residual_variance * hessian_trace / (2 * batch_size)


def huber_fit(
    chunks: Chunks,
    d: int,
    delta: float,
    weight_decay: float,
    start: tuple[Tensor, Tensor] | None = None,
    max_passes: int = 100,
) -> tuple[Tensor, Tensor]:
    """The minimiser of the Huber objective, by Newton's method over passes of the rows, in float64.

    Starts at MSE's optimum unless ``start`` is given. A pass at ``θ`` gives ``F``, ``∇F``, the Hessian ``H =
    E[1{|r| <= delta} a aᵀ] + wd·D`` and the IRLS matrix ``W = E[min(1, delta/|r|) a aᵀ] + wd·D``; ``W ⪰ H``, so
    ``-W⁻¹∇F`` always lowers ``F``. A lighter pass evaluates ``F`` along that step and Newton's ``-H⁻¹∇F`` at the
    fractions ``STEPS`` and moves to the lowest; ``F`` is piecewise quadratic, so once the residuals within ``delta``
    settle the Newton step is exact.

    Raises:
        ValueError: no unique minimiser; RuntimeError: not converged within ``max_passes`` passes over the rows.
    """
    if start is None:
        start = optimum_from_moments(Moments.of(chunks(), d + 1), weight_decay)
    at = theta(*start)
    here = huber_pass(chunks, at, delta, weight_decay)
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
        values = _values_along(chunks, at, torch.stack(directions), delta, weight_decay)  # (directions, steps)
        # The longest step, Newton's first, within F's round-off of the lowest value found.
        best = (values <= values.min() + ROUND_OFF * abs(here.value)).view(-1).nonzero()[0].item()
        j, i = divmod(best, STEPS.numel())
        at = at + STEPS[i] * directions[j]
        if values[j, i] >= here.value:  # no step lowers F beyond its round-off
            break
        here = huber_pass(chunks, at, delta, weight_decay)
        passes += 2
    return at[:d], at[d]


def _values_along(chunks: Chunks, theta: Tensor, directions: Tensor, delta: float, weight_decay: float) -> Tensor:
    """``F(θ + s·p)`` for each direction ``p`` (rows of ``directions``) and step ``s`` in ``STEPS``, in one pass."""
    total, n = torch.zeros(directions.shape[0], STEPS.numel(), dtype=torch.float64), 0
    for x, y in chunks():
        a, t = _rows(x, y)
        r, q = a @ theta.to(a) - t, a @ directions.to(a).T  # (rows,), (rows, directions)
        for i, step in enumerate(STEPS.tolist()):
            total[:, i] += _huber(r.view(-1, 1) + step * q, delta).sum(0).cpu()
        n += a.shape[0]
    moved_w = theta[:-1].view(1, -1, 1) + directions[:, :-1, None] * STEPS  # (directions, d, steps)
    return total / n + weight_decay / 2 * moved_w.square().sum(1)


@dataclass
class HuberPass:
    """``F``, ``∇F`` ``(k,)``, ``H`` and ``W`` ``(k, k)`` at one ``θ``; ``scale``: ``mean|ψ(r)|·|a| + wd·|w|``."""

    value: float
    gradient: Tensor
    hessian: Tensor
    majorizer: Tensor
    scale: float


def huber_pass(chunks: Chunks, theta: Tensor, delta: float, weight_decay: float, curvature: bool = True) -> HuberPass:
    """Huber's ``F``, ``∇F``, Hessian ``E[1{|r| <= delta} a aᵀ] + wd·D`` and IRLS matrix at ``θ = (w, b)`` ``(d + 1,)``,
    by one pass over the rows (MSE's come from the moments); ``H`` and ``W`` are the penalty's without ``curvature``."""
    k = theta.numel()
    value, n, scale = 0.0, 0, 0.0
    gradient, hessian, majorizer = torch.zeros(k, dtype=torch.float64), *torch.zeros(2, k, k, dtype=torch.float64)
    for x, y in chunks():
        a, t = _rows(x, y)
        r = a @ theta.to(a) - t  # (rows,)
        inside = r.abs() <= delta
        psi = r.clamp(-delta, delta)  # the loss's derivative
        value += float(_huber(r, delta).sum())
        gradient += (a.T @ psi).cpu()
        scale += float((psi.abs() * a.norm(dim=1)).sum())
        n += a.shape[0]
        if curvature:
            hessian += (a.T @ (a * inside.view(-1, 1))).cpu()
            majorizer += (a.T @ (a * (delta / r.abs().clamp(min=delta)).view(-1, 1))).cpu()
    w = theta[:-1]
    penalty = weight_decay * _penalty(k)
    return HuberPass(
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


def _huber(r: Tensor, delta: float) -> Tensor:
    """torch's ``HuberLoss(delta)`` of each residual, unreduced."""
    return torch.where(r.abs() <= delta, r.square() / 2, delta * (r.abs() - delta / 2))


def _penalty(k: int) -> Tensor:
    """``D = diag(1, ..., 1, 0)``: weight decay's Hessian, the bias not penalised."""
    out = torch.eye(k, dtype=torch.float64)
    out[-1, -1] = 0
    return out
