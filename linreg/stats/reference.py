"""The exact optimum of the objective a model minimises on its training split: the reference a fit is judged by.

The objective, in the units the model trains in, over ``θ = (w, b)``:
``F(w, b) = mean loss(x w + b, y) + weight_decay / 2 · |w|²`` (the bias is not penalised, as in the book).

- MSE without a penalty, more rows than coefficients: least squares, with standard errors (``ols.py``).
- MSE without a penalty and no more rows than coefficients: the minimum-norm least-squares solution. It is not
  unique; SGD started near 0 moves only within the span of the rows, so it goes to that one.
- MSE with a penalty: ridge, in closed form from the moments, with its sandwich standard errors.
- Huber: Newton's method over the rows (``optimum.huber_fit``); no standard errors.

For the quadratic objectives the Hessian ``H`` is exact everywhere, so the gap ``F(θ) - F(θ*) = ½ δᵀ H δ`` is
computed from the moments in ``d²`` operations at any step, without cancellation.
"""

from __future__ import annotations

import math
from collections.abc import Callable, Iterable, Sequence
from dataclasses import dataclass

import torch
from torch import Tensor

from linreg.stats import optimum
from linreg.stats.ols import LeastSquaresFit, Moments, least_squares_from_moments
from linreg.stats.optimum import Curvature

Chunks = Callable[[], Iterable[tuple[Tensor, Tensor]]]


@dataclass(frozen=True)
class Objective:
    """What a model minimises: ``loss`` (``mse`` or ``huber`` with ``delta``) plus ``weight_decay / 2 · |w|²``.

    Example:
        >>> Objective().describe(), Objective("huber", 1.5, 0.1).describe()
        ('MSE', 'Huber loss (delta 1.5) + 0.1/2·|w|²')
    """

    loss: str = "mse"
    delta: float = 1.0
    weight_decay: float = 0.0

    @property
    def quadratic(self) -> bool:
        return self.loss == "mse"

    def describe(self) -> str:
        loss = "MSE" if self.quadratic else f"Huber loss (delta {self.delta:g})"
        return loss + (f" + {self.weight_decay:g}/2·|w|²" if self.weight_decay else "")


MSE = Objective()  # the book's objective


@dataclass(frozen=True)
class Reference:
    """The optimum ``(w, b)`` of ``objective`` on the training rows, in the model's units (float64, CPU).

    Attributes:
        kind: ``least squares``, ``minimum-norm least squares``, ``ridge`` or ``Huber``; ``tag`` its short name.
        value: ``F`` at the optimum.
        hessian: ``(d + 1, d + 1)``, of ``F`` at the optimum (everywhere, for the quadratic objectives).
        covariance: of ``(w, b)``, where standard errors mean something; else None, and ``why`` says why.
        residual_variance: the label noise the rows show at the least-squares fit (None if they cannot tell).
        least_squares: the unpenalised least-squares (or minimum-norm) fit, for the training MSE of any ``θ``.
    """

    objective: Objective
    kind: str
    tag: str
    w: Tensor
    b: Tensor
    value: float
    hessian: Tensor
    num_examples: int
    target_variance: float
    least_squares: LeastSquaresFit
    covariance: Tensor | None = None
    residual_variance: float | None = None
    why: str | None = None

    @property
    def standard_errors(self) -> Tensor | None:
        return None if self.covariance is None else self.covariance.diagonal().sqrt()

    @property
    def curvature(self) -> Curvature:
        return Curvature.of(self.hessian)

    def gap(self, w: Tensor, b: Tensor) -> float:
        """``F(w, b) - F(w*, b*)``, exact from the Hessian for MSE (the quadratic's own, at the optimum for Huber)."""
        delta = torch.cat([w.detach().to("cpu", torch.float64).view(-1) - self.w, (b.detach().cpu() - self.b).view(1)])
        return max(0.5 * float(delta @ self.hessian @ delta), 0.0)

    def training_mse(self, w: Tensor, b: Tensor) -> float:
        """The training MSE of ``(w, b)``, exact from the moments (``LeastSquaresFit.training_mse``)."""
        return self.least_squares.training_mse(w, b)

    def objective_at(self, w: Tensor, b: Tensor, chunks: Chunks | None = None) -> float:
        """``F(w, b)``: from the moments for MSE; from one pass over ``chunks`` for Huber."""
        if self.objective.quadratic:
            return self.value + self.gap(w, b)
        assert chunks is not None, "the Huber objective needs the rows"
        o = self.objective
        return optimum.objective_value(chunks, _flat(w), _scalar(b), o.loss, o.delta, o.weight_decay)


def _flat(w: Tensor) -> Tensor:
    return w.detach().to("cpu", torch.float64).view(-1)


def _scalar(b: Tensor) -> Tensor:
    return b.detach().to("cpu", torch.float64).view(())


def solve(
    objective: Objective,
    moments: Moments,
    chunks: Chunks,
    feature_names: Sequence[str] | None = None,
    residual_sum: Callable[[Tensor, Tensor], float] | None = None,
) -> Reference:
    """The exact optimum of ``objective`` on the rows whose ``moments`` (of ``[X y]``) are given.

    Args:
        chunks: a fresh iterable of the training rows ``(X, y)`` at each call (Huber's passes).
        residual_sum: the RSS of ``(w, b)`` from a pass over the rows, for least squares' exact noise estimate.

    Raises:
        UserInputError: without a penalty, more rows than coefficients and yet no unique least-squares solution
            (a constant feature, a copy of another): that is a problem of the table, named by ``ols``.
    """
    n, d = moments.count, moments.mean.numel() - 1
    if n > d + 1:  # least squares is unique unless the table has a dependent column, which is refused by name
        least = least_squares_from_moments(moments, feature_names, residual_sum)
        unique = True
    else:
        least = _minimum_norm(moments)
        unique = False
    wd, common = objective.weight_decay, {"num_examples": n, "target_variance": least.target_variance}
    noise = least.residual_variance if unique else None
    if objective.loss == "huber":
        if wd == 0 and not unique:  # it fits every row exactly, so it minimises any loss of the residuals too
            w, b = least.w, least.b
        else:
            w, b = optimum.huber_fit(chunks, d, objective.delta, wd)
        hessian = optimum.huber_hessian(chunks, w, b, objective.delta, wd)
        value = optimum.objective_value(chunks, w, b, "huber", objective.delta, wd)
        why = "the Huber fit has no standard errors here (its spread depends on the unknown noise distribution)"
        return Reference(
            objective,
            "Huber",
            "Huber",
            w,
            b,
            value,
            hessian,
            **common,
            least_squares=least,
            residual_variance=noise,
            why=why,
        )
    hessian = optimum.hessian(moments, wd)
    if wd > 0:
        w, b = optimum.ridge_from_moments(moments, wd)
        kind, tag, covariance, why = "ridge", "ridge", None, None
        if unique:
            covariance = optimum.ridge_covariance(moments, wd)  # σ² from ridge's residuals and degrees of freedom
        else:
            why = f"no standard errors: {n} examples cannot estimate the noise of {d + 1} coefficients"
    elif unique:
        w, b, kind, tag, covariance, why = least.w, least.b, "least squares", "OLS", least.covariance, None
    else:
        w, b, kind, tag, covariance = least.w, least.b, "minimum-norm least squares", "min-norm", None
        why = (
            f"{n} examples for {d + 1} coefficients: least squares fits the training rows exactly in many ways,"
            " none better than another, so there are no standard errors. SGD started near 0 only moves within the"
            " span of the rows, so it heads for the solution of least norm, shown here"
        )
    value = least.training_mse(w, b) + wd / 2 * float(w @ w)
    return Reference(
        objective,
        kind,
        tag,
        w,
        b,
        value,
        hessian,
        **common,
        least_squares=least,
        covariance=covariance,
        residual_variance=noise,
        why=why,
    )


def _minimum_norm(moments: Moments) -> LeastSquaresFit:
    """The minimum-norm least-squares fit as a ``LeastSquaresFit`` without standard errors (no noise estimate)."""
    n, d = moments.count, moments.mean.numel() - 1
    w, b = optimum.min_norm_from_moments(moments)
    x_mean, gram = moments.mean[:d].cpu(), moments.comoment[:d, :d].cpu() / n
    y_mean, c_xy, c_yy = moments.mean[d].cpu(), moments.comoment[:d, d].cpu() / n, moments.comoment[d, d].cpu() / n
    centred = float(w @ gram @ w - 2 * w @ c_xy + c_yy) + float(x_mean @ w + b - y_mean) ** 2
    nan = torch.full((d + 1, d + 1), float("nan"), dtype=torch.float64)
    return LeastSquaresFit(w.cpu(), b.cpu(), nan, math.nan, n, float(c_yy), x_mean, gram, max(centred, 0.0))
