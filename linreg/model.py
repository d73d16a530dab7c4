"""``LinearRegression``: the book's ``nn.Sequential(nn.Linear(d, 1))`` trained with MSE, as a LightningModule."""

from __future__ import annotations

from typing import Any

import torch
from lightning.pytorch import LightningModule, Trainer
from lightning.pytorch.cli import LRSchedulerCallable, OptimizerCallable
from torch import Tensor, nn
from torchmetrics import MeanAbsoluteError, MeanSquaredError, MetricCollection

from linreg.constraints import check
from linreg.stats.r2 import DefinedR2Score
from linreg.stats.reference import Objective
from linreg.validation import UserInputError


def writes_logs(trainer: Trainer) -> bool:
    """Whether Lightning writes what this training batch logs (every ``log_every_n_steps``-th batch)."""
    every = trainer.log_every_n_steps
    return every > 0 and (trainer.fit_loop.total_batch_idx + 1) % every == 0


def d2l_sgd(params: object) -> torch.optim.Optimizer:
    """The book's optimizer: plain SGD with learning rate 0.03."""
    return torch.optim.SGD(params, lr=0.03)  # type: ignore[arg-type]


class LinearRegression(LightningModule):
    """Linear regression ``y = x w + b`` fitted by minimising ``mean loss(x w + b, y) + weight_decay / 2 · |w|²``.

    The objective is stated here only: the report solves it exactly and judges the fit against that optimum.

    Args:
        input_dim: number of features (the CLI links it from the data module).
        optimizer: builds the optimizer from the parameters; the book's SGD(lr=0.03) by default.
        scheduler: builds a learning-rate scheduler, stepped every epoch (``--model.scheduler StepLR``).
        init_std: weights start from N(0, init_std); the bias starts at 0.
        loss: ``torch.nn.MSELoss`` (the default, the book's) or ``torch.nn.HuberLoss`` (robust to outliers).
        weight_decay: the L2 penalty on the weights, not the bias, in the units the model trains in.

    Example:
        >>> model = LinearRegression(input_dim=3)
        >>> model(torch.zeros(4, 3)).shape
        torch.Size([4, 1])
    """

    def __init__(
        self,
        input_dim: int,
        optimizer: OptimizerCallable = d2l_sgd,
        scheduler: LRSchedulerCallable | None = None,
        init_std: float = 0.01,
        loss: nn.Module | None = None,
        weight_decay: float = 0.0,
    ) -> None:
        super().__init__()
        check("model.input_dim", input_dim)
        check("model.init_std", init_std)
        check("model.weight_decay", weight_decay)
        loss = nn.MSELoss() if loss is None else loss
        if not isinstance(loss, (nn.MSELoss, nn.HuberLoss)) or loss.reduction != "mean":
            # Any module passes the parser; the objective's exact optimum is known for these two.
            raise UserInputError(
                f"loss must be torch.nn.MSELoss or torch.nn.HuberLoss with reduction 'mean', got {type(loss).__name__}"
                + (f" with reduction {loss.reduction!r}" if isinstance(loss, (nn.MSELoss, nn.HuberLoss)) else "")
            )
        if isinstance(loss, nn.HuberLoss):
            check("model.loss.delta", loss.delta)
        # Plain values only (no jsonargparse.typing types), so checkpoints load with torch.load(weights_only=True).
        self.save_hyperparameters(ignore=["optimizer", "scheduler", "loss"])
        self.optimizer = optimizer
        self.scheduler = scheduler
        self.loss = loss
        self.weight_decay = float(weight_decay)
        self.net = nn.Sequential(nn.Linear(input_dim, 1))
        nn.init.normal_(self.net[0].weight, mean=0.0, std=init_std)
        nn.init.zeros_(self.net[0].bias)
        # One collection per stage: their states must not mix. For validation and test the MSE is the loss.
        metrics = MetricCollection({"loss": MeanSquaredError(), "mae": MeanAbsoluteError(), "r2": DefinedR2Score()})
        self.val_metrics = metrics.clone(prefix="val/")
        self.test_metrics = metrics.clone(prefix="test/")

    @property
    def weight(self) -> Tensor:
        """The learned weights, shape ``(input_dim,)``."""
        return self.net[0].weight.detach().reshape(-1)

    @property
    def bias(self) -> Tensor:
        """The learned bias, a scalar tensor."""
        return self.net[0].bias.detach().reshape(())

    def forward(self, x: Tensor) -> Tensor:
        return self.net(x)  # (batch, d) -> (batch, 1)

    @property
    def objective(self) -> Objective:
        """What training minimises, as plain values: the loss, its ``delta`` for Huber, the weight decay."""
        huber = isinstance(self.loss, nn.HuberLoss)
        return Objective("huber" if huber else "mse", self.loss.delta if huber else 1.0, self.weight_decay)

    def training_step(self, batch: tuple[Tensor, Tensor], batch_idx: int) -> Tensor:
        """The objective on one mini-batch ``(x, y)``; Lightning takes the optimizer step on it."""
        x, y = batch
        loss = self.loss(self(x), y)
        # self.log costs more than this model's step, and Lightning writes only every log_every_n_steps-th.
        # sync_dist: under DDP the mean over processes, the loss of the whole batch. The loss, not the penalty:
        # train/loss and val/loss measure the same thing.
        if writes_logs(self.trainer):
            self.log("train/loss", loss, prog_bar=True, sync_dist=True)
        if self.weight_decay:
            return loss + self.weight_decay / 2 * self.net[0].weight.square().sum()
        return loss

    def validation_step(self, batch: tuple[Tensor, Tensor], batch_idx: int) -> None:
        self.evaluate(batch, self.val_metrics)

    def test_step(self, batch: tuple[Tensor, Tensor], batch_idx: int) -> None:
        self.evaluate(batch, self.test_metrics)

    def evaluate(self, batch: tuple[Tensor, Tensor], metrics: MetricCollection) -> None:
        """Updates ``metrics`` with one batch; Lightning computes, syncs across processes and resets them per epoch."""
        x, y = batch
        metrics.update(self(x), y)
        self.log_dict(metrics, prog_bar=metrics.prefix == "val/")

    def predict_step(self, batch: tuple[Tensor, ...], batch_idx: int) -> Tensor:
        return self(batch[0])

    def configure_optimizers(self) -> Any:
        optimizer = self.optimizer(self.parameters())
        if self.scheduler is None:
            return optimizer
        return {"optimizer": optimizer, "lr_scheduler": self.scheduler(optimizer)}
