"""``GroupedStepsRegression``: several SGD steps per Lightning step, for large data sets (opt-in, by ``class_path``).

Lightning's fixed cost per ``training_step`` can exceed a linear model's SGD step (``python -m linreg.benchmark
loops``); this model takes one SGD step per mini-batch of a batch by manual optimization (``configs/large.yaml``).
Given up: the Trainer's gradient clipping and accumulation, and per-step callback hooks (checkpoints and
``max_steps`` count SGD steps but are checked once per batch). ``train/loss`` is the batch's last step's.
"""

from __future__ import annotations

import torch
import torch.nn.functional as F
from lightning.pytorch.cli import LRSchedulerCallable, OptimizerCallable
from torch import Tensor

from linreg.constraints import check
from linreg.model import LinearRegression, d2l_sgd


class GroupedStepsRegression(LinearRegression):
    """``LinearRegression`` taking one SGD step on each ``mini_batch_size`` rows of a training batch."""

    def __init__(
        self,
        input_dim: int,
        mini_batch_size: int = 1024,
        optimizer: OptimizerCallable = d2l_sgd,
        scheduler: LRSchedulerCallable | None = None,
        init_std: float = 0.01,
    ) -> None:
        super().__init__(input_dim, optimizer, scheduler, init_std)
        self.mini_batch_size = check("model.mini_batch_size", mini_batch_size)
        self.automatic_optimization = False

    def training_step(self, batch: tuple[Tensor, Tensor], batch_idx: int) -> Tensor:
        """One SGD step per mini-batch of ``batch``; returns their losses, shape ``(steps,)``."""
        x, y = batch
        optimizer = self.optimizers()
        losses = []
        for x_step, y_step in zip(x.split(self.mini_batch_size), y.split(self.mini_batch_size), strict=True):
            loss = F.mse_loss(self(x_step), y_step)
            optimizer.zero_grad()
            self.manual_backward(loss)
            optimizer.step()
            losses.append(loss.detach())
        self.log("train/loss", losses[-1], prog_bar=True, sync_dist=True)
        return torch.stack(losses)

    def on_train_epoch_end(self) -> None:
        # Manual optimization steps schedulers itself; once per epoch, as Lightning does for LinearRegression.
        scheduler = self.lr_schedulers()
        if scheduler is not None:
            scheduler.step()  # type: ignore[union-attr]
