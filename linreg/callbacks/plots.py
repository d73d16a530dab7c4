"""``FitPlots``: the parity plot and residual histogram of the final fit on the validation set, in target units.

Logged to TensorBoard's Images tab (``plots/val_*``) and saved as ``val_*.png`` in the run directory.
"""

from __future__ import annotations

from collections.abc import Iterable
from pathlib import Path

import torch
from lightning.pytorch import Callback, LightningModule, Trainer
from lightning.pytorch.loggers import TensorBoardLogger
from matplotlib.image import imsave
from torch import Tensor

from linreg.atomic_write import save_atomically
from linreg.callbacks.recovery import regression_data
from linreg.stats.figures import parity_figure, render, residual_figure

MAX_POINTS = 10_000  # examples drawn at most: a scatter of more takes long to draw and shows no more


def sample_rows(chunks: Iterable[tuple[Tensor, Tensor]], size: int, seed: int = 0) -> tuple[Tensor, Tensor, int]:
    """A seeded uniform sample of at most ``size`` rows of ``(X, y)`` blocks (smallest random keys), and rows seen."""
    generator = torch.Generator().manual_seed(seed)
    keys, kept, seen = torch.empty(0), None, 0
    for x, t in chunks:
        x, t = x.cpu(), t.cpu()
        keys = torch.cat([keys, torch.rand(len(x), generator=generator)])
        kept = (x, t) if kept is None else (torch.cat([kept[0], x]), torch.cat([kept[1], t]))
        if len(keys) > size:
            keys, rows = keys.topk(size, largest=False)
            kept = (kept[0][rows], kept[1][rows])
        seen += len(x)
    assert kept is not None, "the split has no rows"
    return kept[0], kept[1], seen


class FitPlots(Callback):
    """Draws the parity plot and residual histogram of the final model at the end of ``fit``."""

    def on_fit_end(self, trainer: Trainer, pl_module: LightningModule) -> None:
        log_dir = trainer.log_dir  # on every rank: it is broadcast from rank zero
        data = regression_data(trainer, type(self).__name__)
        chunks = data.split_chunks("val") if data is not None and trainer.is_global_zero else None
        if chunks is None:
            return
        X, y, n = sample_rows(chunks, MAX_POINTS)
        with torch.no_grad():
            x = trainer.precision_plugin.convert_input(X.to(pl_module.device))  # in the weights' dtype at *-true
            predicted = data.to_target_units(pl_module(x).view(-1).double().cpu()).numpy()
        actual = data.to_target_units(y.view(-1).double().cpu()).numpy()
        figures = {
            "val_parity": parity_figure(actual, predicted, n, data.target_name),
            "val_residuals": residual_figure(actual - predicted, n, data.target_name),
        }
        for name, fig in figures.items():
            image = render(fig)  # drawn once, for the file and for TensorBoard
            if log_dir is not None:  # atomically: a disk that fills leaves no truncated PNG
                save_atomically(image, Path(log_dir, f"{name}.png"), lambda img, file: imsave(file, img, format="png"))
            for logger in trainer.loggers:
                if isinstance(logger, TensorBoardLogger):
                    logger.experiment.add_image(f"plots/{name}", image, trainer.global_step, dataformats="HWC")
