"""``ParameterRecovery``: the exact optimum of the model's objective, and curves of SGD's way towards it.

Logged before the first step and wherever Lightning writes ``train/loss``: ``train/full_loss`` (the book's
per-epoch number, exact from the moments, no pass over the data), ``train/objective_gap`` (``F(w, b) - F(w*, b*)``;
for the Huber loss one pass over the rows, at epoch ends only), ``params/*`` (distances from the true coefficients
and the optimum; the coefficients themselves) and ``convergence/log10_*``, where the noise floor is as visible as
the start. Coefficients are in the data's units, losses in the units the model trains in.
"""

from __future__ import annotations

import math
import re

import torch
from lightning.pytorch import Callback, LightningModule, Trainer
from lightning.pytorch.loggers import TensorBoardLogger
from lightning.pytorch.utilities import rank_zero_warn

from linreg.callbacks.averaging import reported_weights
from linreg.data import RegressionData
from linreg.model import writes_logs
from linreg.stats.reference import MSE, Objective
from linreg.stats.report import learned_coefficients

FULL_LOSS = "train/full_loss"
OBJECTIVE_GAP = "train/objective_gap"
MAX_COEFFICIENT_CURVES = 16  # the coefficients are logged up to this many features: more would bury the rest
# {category: {chart title: ["Multiline", [tag regexes]]}}, as add_custom_scalars takes it; absent tags drop out.
# A layout holds titles and tag patterns only (tensorboard's layout_pb2): the colours (one per run, a marker per
# curve) and the scale (outliers left out, by default) are TensorBoard's choice; the README says where to change it.
LAYOUT: dict[str, dict[str, list]] = {
    "fit": {
        "loss (log10): training set, validation set, and least squares on the training set": [
            "Multiline",
            [r"^convergence/log10_loss_(train_full|val)$", r"^reference/log10_loss_optimum$"],
        ],
        "objective's gap to its optimum (log10): F(w, b) - F(w*, b*)": [
            "Multiline",
            [r"^convergence/log10_objective_gap$"],
        ],
        "distance from the optimum (log10): |w - w*| and |b - b*|": [
            "Multiline",
            [r"^convergence/log10_gap_[wb]$"],
        ],
        "error against the true values: |w - w_true| and |b - b_true|": ["Multiline", [r"^params/[wb]_error$"]],
        "coefficients: w and b": ["Multiline", [r"^params/w/", r"^params/b$"]],
        "mini-batch loss (train/loss)": ["Multiline", [r"^train/loss$"]],
    }
}


def regression_data(trainer: Trainer, needed_by: str) -> RegressionData | None:
    """The trainer's data module when it is a set-up ``RegressionData``; otherwise warns and gives None."""
    data = trainer.datamodule
    if isinstance(data, RegressionData) and data.ready:
        return data
    rank_zero_warn(f"{needed_by} needs a RegressionData data module with its training data; it does nothing")
    return None


def objective_of(model: LightningModule) -> Objective:
    """What ``model`` minimises (``LinearRegression.objective``); the MSE for a model that does not say."""
    return getattr(model, "objective", None) or MSE


def log10(value: float) -> float:
    """``log10(value)``; an exact 0 (a perfect fit of noise-free labels) is drawn at -300 rather than lost."""
    return math.log10(max(value, 1e-300))


class ParameterRecovery(Callback):
    """Logs the training-set loss and recovery curves with ``train/loss``; ``setup`` solves the reference first."""

    def setup(self, trainer: Trainer, pl_module: LightningModule, stage: str) -> None:
        data = regression_data(trainer, type(self).__name__) if stage == "fit" else None
        if data is not None:
            data.reference(objective_of(pl_module))

    def on_train_start(self, trainer: Trainer, pl_module: LightningModule) -> None:
        for logger in trainer.loggers if trainer.is_global_zero else []:  # one event file per run
            if isinstance(logger, TensorBoardLogger):
                logger.experiment.add_custom_scalars(LAYOUT)
        # The curves' starting point, before the first step (self.log cannot log here).
        self._write(trainer, self._recovery(trainer, pl_module), step=trainer.fit_loop.total_batch_idx + 1)

    def on_train_batch_end(
        self, trainer: Trainer, pl_module: LightningModule, outputs: object, batch: object, batch_idx: int
    ) -> None:
        if writes_logs(trainer):  # on the steps whose train/loss Lightning writes
            self._write(trainer, self._recovery(trainer, pl_module), step=trainer.fit_loop.total_batch_idx)

    def on_train_epoch_end(self, trainer: Trainer, pl_module: LightningModule) -> None:
        # Every epoch ends with a point, unless its last step had one; the epoch line prints train/full_loss.
        values = self._recovery(trainer, pl_module, epoch_end=True)
        if not values:
            return
        if not writes_logs(trainer):
            self._write(trainer, values, step=trainer.fit_loop.total_batch_idx)
        elif not objective_of(pl_module).quadratic:  # the step's point had no gap: it is computed only here
            gaps = {k: v for k, v in values.items() if k in (OBJECTIVE_GAP, "convergence/log10_objective_gap")}
            self._write(trainer, gaps, step=trainer.fit_loop.total_batch_idx)
        # For the epoch line and the report: already written above.
        pl_module.log(FULL_LOSS, values[FULL_LOSS], logger=False)
        pl_module.log(OBJECTIVE_GAP, values[OBJECTIVE_GAP], logger=False)
        val_loss = trainer.callback_metrics.get("val/loss")
        if val_loss is not None:
            pl_module.log("convergence/log10_loss_val", log10(float(val_loss)), sync_dist=True)

    @staticmethod
    def _write(trainer: Trainer, values: dict[str, float], step: int) -> None:
        """Straight to the loggers from the first process (all have the same values): cheaper than ``log_dict``."""
        for logger in trainer.loggers if values and trainer.is_global_zero else []:
            logger.log_metrics(values, step=step)

    def _recovery(self, trainer: Trainer, pl_module: LightningModule, epoch_end: bool = False) -> dict[str, float]:
        """The training-set loss and ``params/...`` of the weights the fit will report (averaged, with AveragedSGD)."""
        data = trainer.datamodule
        if not isinstance(data, RegressionData) or not data.ready:
            return {}
        reference = data.reference(objective_of(pl_module))
        with reported_weights(trainer):
            full_loss = reference.least_squares.training_mse(pl_module.weight, pl_module.bias)
            gap = None
            if reference.objective.quadratic:  # d² operations: at every logged step
                gap = reference.gap(pl_module.weight, pl_module.bias)
            elif epoch_end:  # a pass over the rows: once an epoch
                rows = lambda: data.split_chunks("train") or iter(())  # noqa: E731
                gap = reference.gap(pl_module.weight, pl_module.bias, rows)
            w, b = learned_coefficients(pl_module.weight, pl_module.bias, data)
        best_w, best_b = learned_coefficients(reference.w, reference.b, data)
        w_gap, b_gap = (w - best_w).norm().item(), (b - best_b).abs().item()
        values = {
            FULL_LOSS: full_loss,
            "params/w_gap_optimum": w_gap,
            "params/b_gap_optimum": b_gap,
            "convergence/log10_loss_train_full": log10(full_loss),
            "reference/log10_loss_optimum": log10(reference.least_squares.training_mse(reference.w, reference.b)),
            "convergence/log10_gap_w": log10(w_gap),
            "convergence/log10_gap_b": log10(b_gap),
        }
        if gap is not None:
            values[OBJECTIVE_GAP] = gap
            values["convergence/log10_objective_gap"] = log10(gap)
        if data.true_w is not None and data.true_b is not None:
            values["params/w_error"] = (w - data.true_w.to(torch.float64)).norm().item()
            values["params/b_error"] = abs(b.item() - data.true_b)
        if w.numel() <= MAX_COEFFICIENT_CURVES:
            # A feature name as a TensorBoard tag: characters other than letters, digits and _.- become _.
            names = (re.sub(r"[^\w.-]", "_", name) for name in data.feature_names)
            values.update(zip((f"params/w/{name}" for name in names), w.tolist(), strict=True))
            values["params/b"] = b.item()
        return values
