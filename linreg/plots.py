"""Figures of the final fit on the validation set: a parity plot and a residual histogram.

Drawn once at the end of ``fit`` with matplotlib's Agg canvas (no display needed, no pyplot state),
in the target's own units (``RegressionData.to_target_units``), logged to TensorBoard's Images tab
as ``plots/val_parity`` and ``plots/val_residuals``, and saved as ``val_parity.png`` and
``val_residuals.png`` in the run directory. A validation set larger than
``max_points`` is drawn from a seeded random subset of that many examples, so plotting stays fast.
"""

from __future__ import annotations

from pathlib import Path

import numpy as np
import torch
from lightning.pytorch import Callback, LightningModule, Trainer
from lightning.pytorch.loggers import TensorBoardLogger
from matplotlib.backends.backend_agg import FigureCanvasAgg
from matplotlib.figure import Figure
from matplotlib.image import imsave
from torchmetrics.functional import r2_score

from linreg.trainer_state import logging_step, regression_data
from linreg.validation import check_int


def parity_figure(actual: np.ndarray, predicted: np.ndarray, of_total: int, target: str = "y") -> Figure:
    """Predicted against actual labels, with the identity line a perfect model would lie on."""
    fig = Figure(figsize=(5.5, 5))
    FigureCanvasAgg(fig)
    ax = fig.add_subplot()
    fig.subplots_adjust(left=0.16, right=0.96, bottom=0.11, top=0.87)  # fixed: a layout engine costs ~0.3 s
    r2 = r2_score(torch.from_numpy(predicted), torch.from_numpy(actual)).item()
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
    ax.legend(title=f"mean {residuals.mean():.3g}, std {residuals.std(ddof=1):.3g}", loc="upper right")
    return fig


def render(fig: Figure) -> np.ndarray:
    """The figure drawn as an RGB image, shape ``(height, width, 3)``, uint8."""
    fig.canvas.draw()
    return np.asarray(fig.canvas.buffer_rgba())[..., :3].copy()


def _shown(shown: int, total: int) -> str:
    return f"all {total} examples" if shown == total else f"random {shown} of {total} examples"


class FitPlots(Callback):
    """Draws the parity plot and residual histogram of the final model at the end of ``fit``.

    Args:
        max_points: examples drawn at most; a larger validation set is subsampled (seeded).
    """

    def __init__(self, max_points: int = 10_000) -> None:
        self.max_points = check_int("max_points", max_points, 2)

    def on_fit_end(self, trainer: Trainer, pl_module: LightningModule) -> None:
        log_dir = trainer.log_dir  # on every rank: it is broadcast from rank zero
        data = regression_data(trainer, type(self).__name__)
        if not trainer.is_global_zero or data is None or data.val_data is None:
            return
        X, y = data.val_data
        n = X.shape[0]
        if n > self.max_points:
            rows = torch.randperm(n, generator=torch.Generator().manual_seed(0))[: self.max_points]
            X, y = X[rows], y[rows]
        with torch.no_grad():
            predicted = data.to_target_units(pl_module(X.to(pl_module.device)).view(-1).double().cpu()).numpy()
        actual = data.to_target_units(y.view(-1).double().cpu()).numpy()
        figures = {
            "val_parity": parity_figure(actual, predicted, n, data.target_name),
            "val_residuals": residual_figure(actual - predicted, n, data.target_name),
        }
        for name, fig in figures.items():
            image = render(fig)  # drawn once, for the file and for TensorBoard
            if log_dir is not None:
                imsave(Path(log_dir, f"{name}.png"), image)
            for logger in trainer.loggers:
                if isinstance(logger, TensorBoardLogger):
                    logger.experiment.add_image(f"plots/{name}", image, logging_step(trainer), dataformats="HWC")
