"""Figures of a fit, a parity plot and a residual histogram, on matplotlib's Agg canvas (no display, no pyplot).

``linreg.callbacks.plots.FitPlots`` draws them at the end of ``fit``.
"""

from __future__ import annotations

import numpy as np
import torch
from matplotlib.backends.backend_agg import FigureCanvasAgg
from matplotlib.figure import Figure

from linreg.stats.r2 import DefinedR2Score


def parity_figure(actual: np.ndarray, predicted: np.ndarray, of_total: int, target: str = "y") -> Figure:
    """Predicted against actual labels, with the identity line a perfect model would lie on."""
    fig = Figure(figsize=(5.5, 5))
    FigureCanvasAgg(fig)
    ax = fig.add_subplot()
    fig.subplots_adjust(left=0.16, right=0.96, bottom=0.11, top=0.87)  # fixed margins: a layout engine is slow
    r2 = DefinedR2Score()(torch.from_numpy(predicted), torch.from_numpy(actual)).item()
    ax.scatter(actual, predicted, s=6, alpha=0.5, linewidths=0, label=f"validation examples (R² = {r2:.6f})")
    low, high = float(min(actual.min(), predicted.min())), float(max(actual.max(), predicted.max()))
    ax.plot([low, high], [low, high], color="black", linestyle="--", linewidth=1, label="predicted = actual")
    ax.set(xlabel=f"actual {target}", ylabel=f"predicted {target}", aspect="equal")
    ax.ticklabel_format(style="sci", scilimits=(-3, 4))  # 7e5 rather than 700000: no overlapping labels
    ax.set_title(f"Parity plot, validation set\n({_shown(len(actual), of_total)})")
    ax.legend(loc="upper left")
    return fig


def residual_figure(residuals: np.ndarray, of_total: int, target: str = "y") -> Figure:
    """A histogram of ``actual - predicted``, centred on the zero a perfect model would have."""
    fig = Figure(figsize=(6, 4))
    FigureCanvasAgg(fig)
    ax = fig.add_subplot()
    fig.subplots_adjust(left=0.12, right=0.96, bottom=0.14, top=0.84)
    ax.hist(residuals, bins=min(60, max(10, len(residuals) // 20)), color="tab:blue", alpha=0.8)
    ax.axvline(0.0, color="black", linestyle="--", linewidth=1, label="zero")
    ax.set(xlabel=f"residual: actual {target} - predicted {target}", ylabel="examples")
    ax.ticklabel_format(axis="x", style="sci", scilimits=(-3, 4))
    ax.set_title(f"Residuals, validation set\n({_shown(len(residuals), of_total)})")
    spread = f", std {residuals.std(ddof=1):.3g}" if residuals.size > 1 else ""  # one residual has no spread
    ax.legend(title=f"mean {residuals.mean():.3g}{spread}", loc="upper right")
    return fig


def render(fig: Figure) -> np.ndarray:
    """The figure drawn as an RGB image, shape ``(height, width, 3)``, uint8."""
    fig.canvas.draw()
    return np.asarray(fig.canvas.buffer_rgba())[..., :3].copy()


def _shown(shown: int, total: int) -> str:
    return f"all {total} examples" if shown == total else f"random {shown} of {total} examples"
