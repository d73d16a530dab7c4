"""``ParameterRecovery``: the least-squares reference of a fit, and curves of SGD's way towards it.

The ordinary-least-squares (OLS) solution of the training data (``linreg.stats.ols``, solved once per
fit by the data module) is the best estimate those data allow. The callback logs how far the model is
from it, before the first step and at every step where Lightning logs ``train/loss``
(every ``trainer.log_every_n_steps``), so the curves have as many points as the loss curve and
TensorBoard's smoothing has something to smooth:

- ``train/full_loss``: the loss on the whole training set, the number the book prints after each
  epoch; exact, and computed from the OLS fit's moments in ``d²`` operations rather than a pass over
  the data (``LeastSquaresFit.training_mse``), so it costs nothing at any size;
- ``params/w_error`` = ‖w - w_true‖ and ``params/b_error`` = |b - b_true|, when the truth is known;
- ``params/w_gap_ols`` = ‖w - w_ols‖ and ``params/b_gap_ols`` = |b - b_ols|;
- ``params/w/<feature>`` and ``params/b``, the coefficients themselves, for up to 16 features;
- ``convergence/log10_*``: the training and validation losses and the two gaps on a log10 scale, where
  the noise floor (1e-4 for the book's data) is as visible as the start; the group's name puts them
  first in TensorBoard's Time Series; ``reference/log10_loss_least_squares``, the floor itself: the
  loss of the least-squares solution on the training set. ``linreg.callbacks.dashboard`` draws the
  losses and the floor on one chart, the gaps on another.

Coefficients are compared in the data's own units (``RegressionData.to_original_units``); losses are
in the units the model is trained in, as ``train/loss`` and ``val/loss`` are.
"""

from __future__ import annotations

import math
import re

import torch
from lightning.pytorch import Callback, LightningModule, Trainer
from lightning.pytorch.utilities import rank_zero_warn

from linreg.callbacks.averaging import reported_weights
from linreg.data import RegressionData
from linreg.model import writes_logs
from linreg.stats.report import learned_coefficients
from linreg.validation import check_int

FULL_LOSS = "train/full_loss"


def regression_data(trainer: Trainer, needed_by: str) -> RegressionData | None:
    """The trainer's data module when it is a set-up ``RegressionData``; otherwise warns and gives None."""
    data = trainer.datamodule
    if isinstance(data, RegressionData) and data.ready:
        return data
    rank_zero_warn(f"{needed_by} needs a RegressionData data module with its training data; it does nothing")
    return None


def tag_name(feature: str) -> str:
    """A feature name as a TensorBoard tag component: characters other than letters, digits, ``_.-`` become ``_``."""
    return re.sub(r"[^\w.-]", "_", feature)


def log10(value: float) -> float:
    """``log10(value)``; an exact 0 (a perfect fit of noise-free labels) is drawn at -300 rather than lost."""
    return math.log10(max(value, 1e-300))


class ParameterRecovery(Callback):
    """Logs the training-set loss and the recovery curves as often as the loss, and the log10 curves.

    The least-squares reference comes from the data module (``RegressionData.least_squares``), which
    solves it once per fit. It is asked for in ``setup``, before the run directory is written, so that
    training data with no unique least-squares solution stop the run with nothing written.

    Args:
        max_coefficient_curves: the coefficients themselves are logged while the model has at most
            this many features (one curve each; more would bury the other curves).
    """

    def __init__(self, max_coefficient_curves: int = 16) -> None:
        self.max_coefficient_curves = check_int("max_coefficient_curves", max_coefficient_curves, 0)

    def setup(self, trainer: Trainer, pl_module: LightningModule, stage: str) -> None:
        data = regression_data(trainer, type(self).__name__) if stage == "fit" else None
        if data is not None:
            data.least_squares()

    def on_train_start(self, trainer: Trainer, pl_module: LightningModule) -> None:
        # The starting point of the curves: the model before the first step (self.log cannot log here).
        self._write(trainer, pl_module, step=trainer.fit_loop.total_batch_idx + 1)

    def on_train_batch_end(
        self, trainer: Trainer, pl_module: LightningModule, outputs: object, batch: object, batch_idx: int
    ) -> None:
        # Computed only on the steps whose train/loss Lightning writes, and written on the same step.
        if writes_logs(trainer):
            self._write(trainer, pl_module, step=trainer.fit_loop.total_batch_idx)

    def on_train_epoch_end(self, trainer: Trainer, pl_module: LightningModule) -> None:
        # Every epoch ends with a point, unless its last step had one; the epoch line prints train/full_loss.
        values = self._recovery(trainer, pl_module)
        if not values:
            return
        if not writes_logs(trainer):
            self._write(trainer, pl_module, step=trainer.fit_loop.total_batch_idx, values=values)
        pl_module.log(FULL_LOSS, values[FULL_LOSS], logger=False)  # for the epoch line: already written above
        val_loss = trainer.callback_metrics.get("val/loss")
        if val_loss is not None:
            pl_module.log("convergence/log10_loss_val", log10(float(val_loss)), sync_dist=True)

    def _write(
        self, trainer: Trainer, pl_module: LightningModule, step: int, values: dict[str, float] | None = None
    ) -> None:
        """Writes the curves' points straight to the loggers: ``self.log_dict`` costs milliseconds per call."""
        if not trainer.is_global_zero or not trainer.loggers:  # the values are the same on every process
            return
        values = self._recovery(trainer, pl_module) if values is None else values
        for logger in trainer.loggers if values else []:
            logger.log_metrics(values, step=step)

    def _recovery(self, trainer: Trainer, pl_module: LightningModule) -> dict[str, float]:
        """The loss on the training set and the ``params/...`` values of the weights the fit will report."""
        with reported_weights(trainer):  # the average, with AveragedSGD: the curves end where the report does
            return self._recovery_of_model(trainer, pl_module)

    def _recovery_of_model(self, trainer: Trainer, pl_module: LightningModule) -> dict[str, float]:
        data = trainer.datamodule
        if not isinstance(data, RegressionData) or not data.ready:
            return {}
        reference = data.least_squares()
        # The OLS point in the data's units, mapped like the model's: its standard errors are not needed here.
        ols_w, ols_b = learned_coefficients(reference.w, reference.b, data)
        full_loss = reference.training_mse(pl_module.weight, pl_module.bias)
        w, b = learned_coefficients(pl_module.weight, pl_module.bias, data)
        w_gap, b_gap = (w - ols_w).norm().item(), (b - ols_b).abs().item()
        values = {
            FULL_LOSS: full_loss,
            "params/w_gap_ols": w_gap,
            "params/b_gap_ols": b_gap,
            "convergence/log10_loss_train_full": log10(full_loss),
            "reference/log10_loss_least_squares": log10(reference.least_squares_mse),
            "convergence/log10_ols_gap_w": log10(w_gap),
            "convergence/log10_ols_gap_b": log10(b_gap),
        }
        if data.true_w is not None and data.true_b is not None:
            values["params/w_error"] = (w - data.true_w.to(torch.float64)).norm().item()
            values["params/b_error"] = abs(b.item() - data.true_b)
        if w.numel() <= self.max_coefficient_curves:
            names = [f"params/w/{tag_name(name)}" for name in data.feature_names]
            values.update(zip(names, w.tolist(), strict=True))
            values["params/b"] = b.item()
        return values
