"""``LinearRegression``: the book's ``nn.Sequential(nn.Linear(d, 1))`` trained with MSE, as a LightningModule."""

from __future__ import annotations

import torch
import torch.nn.functional as F
from lightning.pytorch import LightningModule
from lightning.pytorch.cli import OptimizerCallable
from torch import Tensor, nn
from torchmetrics import MeanAbsoluteError, MeanSquaredError, MetricCollection, R2Score

from linreg.validation import check_float, check_int


def d2l_sgd(params: object) -> torch.optim.Optimizer:
    """The book's optimizer: plain SGD with learning rate 0.03."""
    return torch.optim.SGD(params, lr=0.03)  # type: ignore[arg-type]


class LinearRegression(LightningModule):
    """Linear regression ``y = x w + b`` fitted by minimising the mean squared error.

    Args:
        input_dim: number of features (the CLI links it from the data module).
        optimizer: builds the optimizer from the parameters; SGD(lr=0.03) by default, any
            ``torch.optim`` class from the config or command line (``--model.optimizer Adam``).
        init_std: weights start from N(0, init_std); the bias starts at 0.

    Example:
        >>> model = LinearRegression(input_dim=3)
        >>> model(torch.zeros(4, 3)).shape
        torch.Size([4, 1])
    """

    def __init__(self, input_dim: int, optimizer: OptimizerCallable = d2l_sgd, init_std: float = 0.01) -> None:
        super().__init__()
        # The SGD loop is written out in training_step, as in the book: one update per mini-batch, and
        # several mini-batches per step when the data module groups them (see data/loading.py).
        self.automatic_optimization = False
        check_int("input_dim", input_dim, 1)
        check_float("init_std", init_std, 0.0)
        # Plain values only, so checkpoints load with torch.load(weights_only=True).
        self.save_hyperparameters(ignore=["optimizer"])
        self.optimizer = optimizer
        self.net = nn.Sequential(nn.Linear(input_dim, 1))
        nn.init.normal_(self.net[0].weight, mean=0.0, std=init_std)
        nn.init.zeros_(self.net[0].bias)
        # One collection per stage (their states must not mix). For val and test the MSE is the "loss";
        # for training, train/loss is each step's batch loss, so the epoch's MSE over all batches is train/mse.
        self.train_metrics = MetricCollection(
            {"mse": MeanSquaredError(), "mae": MeanAbsoluteError(), "r2": R2Score()}, prefix="train/"
        )
        eval_metrics = MetricCollection({"loss": MeanSquaredError(), "mae": MeanAbsoluteError(), "r2": R2Score()})
        self.val_metrics = eval_metrics.clone(prefix="val/")
        self.test_metrics = eval_metrics.clone(prefix="test/")

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

    def training_step(self, batch: list[tuple[Tensor, Tensor]], batch_idx: int) -> Tensor:
        """One SGD step per mini-batch ``(x, y)`` in ``batch``; returns their losses, shape ``(len(batch),)``."""
        optimizer = self.optimizers()
        losses, preds = [], []
        for x, y in batch:
            pred = self(x)
            loss = F.mse_loss(pred, y)
            optimizer.zero_grad()
            self.manual_backward(loss)
            optimizer.step()
            losses.append(loss.detach())
            preds.append(pred.detach())
        # Once per group: metric updates and logging cost the same for one row or thousands.
        self.train_metrics.update(torch.cat(preds), torch.cat([y for _, y in batch]))
        # sync_dist: under DDP the mean over processes, the loss of the whole batch (free on one device).
        self.log("train/loss", losses[-1], prog_bar=True, batch_size=len(batch[-1][1]), sync_dist=True)
        return torch.stack(losses)

    def on_train_epoch_end(self) -> None:
        # compute() has combined the processes' states, so all hold the same values; sync_dist averages equals.
        self.log_dict(self.train_metrics.compute(), sync_dist=True)
        self.train_metrics.reset()

    def validation_step(self, batch: tuple[Tensor, Tensor], batch_idx: int) -> None:
        self._eval_step(batch, self.val_metrics)

    def test_step(self, batch: tuple[Tensor, Tensor], batch_idx: int) -> None:
        self._eval_step(batch, self.test_metrics)

    def _eval_step(self, batch: tuple[Tensor, Tensor], metrics: MetricCollection) -> None:
        x, y = batch
        metrics.update(self(x), y)
        # Logging the collection lets Lightning compute, sync across processes and reset it per epoch.
        self.log_dict(metrics, prog_bar=metrics.prefix == "val/")

    def predict_step(self, batch: tuple[Tensor, ...], batch_idx: int) -> Tensor:
        return self(batch[0])

    def configure_optimizers(self) -> torch.optim.Optimizer:
        return self.optimizer(self.parameters())
