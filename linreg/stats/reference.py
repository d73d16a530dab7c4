"""The exact optimum of the objective a model minimises on its training split: the reference a fit is judged by.

For MSE: least squares, its minimum-norm solution (no more rows than coefficients: where SGD started near 0 goes), or
ridge, in closed form, with ``F(θ) - F(θ*)`` exact from the moments at any step; for Huber, Newton's method.
"""

from __future__ import annotations

from collections.abc import Callable, Sequence
from dataclasses import dataclass

from torch import Tensor

from linreg.stats import ols
from linreg.stats.ols import LeastSquaresFit, Moments
from linreg.stats.optimum import Chunks, Curvature, hessian, huber_fit, huber_pass


@dataclass(frozen=True)
class Objective:
    """What a model minimises: ``loss`` (``mse`` or ``huber`` with ``delta``) plus ``weight_decay / 2 · |w|²``."""

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

    ``value`` and ``hessian`` ``(d + 1, d + 1)`` are ``F``'s there; ``least_squares``, the unpenalised (or minimum-norm)
    fit, gives the training MSE of any ``θ``; ``covariance`` is None where standard errors mean nothing (``why``).
    """

    objective: Objective
    kind: str
    tag: str
    w: Tensor
    b: Tensor
    value: float
    hessian: Tensor
    least_squares: LeastSquaresFit
    covariance: Tensor | None = None
    why: str | None = None

    @property
    def curvature(self) -> Curvature:
        return Curvature.of(self.hessian)

    def gap(self, w: Tensor, b: Tensor, chunks: Chunks | None = None) -> float:
        """``F(w, b) - F(w*, b*)``: from the moments for MSE; from one pass over ``chunks`` for Huber."""
        o = self.objective
        if o.quadratic:
            return ols.mse_excess(self.least_squares.moments, w, b, o.weight_decay, (self.w, self.b))
        assert chunks is not None, "the Huber objective needs the rows"
        value = huber_pass(chunks, ols.theta(w, b), o.delta, o.weight_decay, curvature=False).value
        return max(value - self.value, 0.0)


def solve(
    objective: Objective,
    moments: Moments,
    chunks: Chunks,
    feature_names: Sequence[str] | None = None,
    residual_sum: Callable[[Tensor, Tensor], float] | None = None,
) -> Reference:
    """The exact optimum of ``objective`` on the rows ``chunks`` (for Huber's passes) of ``moments`` (of ``[X y]``).

    ``residual_sum(w, b)``, the RSS from a pass over the rows, makes least squares' noise estimate exact.

    Raises:
        UserInputError: no penalty, more rows than coefficients, yet no unique least squares (named by ``ols``).
    """
    n, d, wd = moments.count, moments.mean.numel() - 1, objective.weight_decay
    unique = n > d + 1  # then least squares is unique unless a column depends on others, which is refused by name
    if unique:
        least = ols.least_squares_from_moments(moments, feature_names, residual_sum)
    else:
        least = ols.min_norm_fit(moments)
    w, b = (least.w, least.b) if wd == 0 else ols.ridge_from_moments(moments, wd)
    covariance, why = None, None
    if not objective.quadratic:
        # Without a penalty and unique, the least-squares fit fits every row: it minimises any loss of them.
        if wd > 0 or unique:
            w, b = huber_fit(chunks, d, objective.delta, wd, start=(w, b))
        why = "the Huber fit has no standard errors here (its spread depends on the unknown noise distribution)"
        at = huber_pass(chunks, ols.theta(w, b), objective.delta, wd)
        return Reference(objective, "Huber", "Huber", w, b, at.value, at.hessian, least, covariance, why)
    if wd > 0:
        kind = tag = "ridge"
        if unique:
            covariance = ols.ridge_covariance(moments, wd)  # σ² from ridge's residuals and degrees of freedom
        else:
            why = f"no standard errors: {n} examples cannot estimate the noise of {d + 1} coefficients"
    elif unique:
        kind, tag, covariance = "least squares", "OLS", least.covariance
    else:
        kind, tag = "minimum-norm least squares", "min-norm"
        why = (
            f"{n} examples for {d + 1} coefficients: least squares fits the training rows exactly in many ways,"
            " none better than another, so there are no standard errors. SGD started near 0 only moves within the"
            " span of the rows, so it heads for the solution of least norm, shown here"
        )
    value = least.training_mse(w, b) + wd / 2 * float(w @ w)
    return Reference(objective, kind, tag, w, b, value, hessian(moments, wd), least, covariance, why)
