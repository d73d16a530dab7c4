"""``ParameterRecovery``: the least-squares reference of a fit, and curves of SGD's way towards it.

The ordinary-least-squares (OLS) solution of the training data (``linreg.stats.ols``, solved once per
fit by the data module) is the best estimate those data allow. At the start of training and after every
training epoch the callback logs how far the model's coefficients are from it, and from the true ones
when the data module knows them:

- ``params/w_error`` = ‖w - w_true‖ and ``params/b_error`` = |b - b_true|, when the truth is known;
- ``params/w_gap_ols`` = ‖w - w_ols‖ and ``params/b_gap_ols`` = |b - b_ols|;
- ``params/w/<feature>`` and ``params/b``, the coefficients themselves, for up to 16 features.

Coefficients are compared in the data's own units (``RegressionData.to_original_units``). Only epoch
hooks are used: the training step costs nothing more.
"""

from __future__ import annotations

import re

import torch
from jsonargparse.typing import NonNegativeInt
from lightning.pytorch import Callback, LightningModule, Trainer

from linreg.callbacks.trainer_state import regression_data
from linreg.data import RegressionData
from linreg.stats.ols import transform
from linreg.stats.report import learned_coefficients
from linreg.validation import check_int


def tag_name(feature: str) -> str:
    """A feature name as a TensorBoard tag component: characters other than letters, digits, ``_.-`` become ``_``."""
    return re.sub(r"[^\w.-]", "_", feature)


class ParameterRecovery(Callback):
    """Logs the ``params/...`` recovery curves: the model's distance from least squares (and the truth) every epoch.

    The least-squares reference comes from the data module (``RegressionData.least_squares``), which
    solves it once per fit. It is asked for in ``setup``, before the run directory is written, so that
    training data with no unique least-squares solution stop the run with nothing written.

    Args:
        max_coefficient_curves: the coefficients themselves are logged while the model has at most
            this many features (one curve each; more would bury the other curves).
    """

    def __init__(self, max_coefficient_curves: NonNegativeInt = 16) -> None:
        self.max_coefficient_curves = check_int("max_coefficient_curves", max_coefficient_curves, 0)

    def setup(self, trainer: Trainer, pl_module: LightningModule, stage: str) -> None:
        data = regression_data(trainer, type(self).__name__) if stage == "fit" else None
        if data is not None:
            data.least_squares()

    def on_train_start(self, trainer: Trainer, pl_module: LightningModule) -> None:
        # The starting point of the curves: the coefficients before the first step.
        values = self._recovery(trainer, pl_module)
        for logger in trainer.loggers if values else []:
            logger.log_metrics(values, step=trainer.global_step)

    def on_train_epoch_end(self, trainer: Trainer, pl_module: LightningModule) -> None:
        values = self._recovery(trainer, pl_module)
        if values:
            pl_module.log_dict(values, sync_dist=True)  # identical on every rank; the sync is a formality

    def _recovery(self, trainer: Trainer, pl_module: LightningModule) -> dict[str, float]:
        """The ``params/...`` values for the model's current coefficients."""
        data = trainer.datamodule
        if not isinstance(data, RegressionData) or not data.ready:
            return {}
        ols = transform(data.least_squares(), data.to_original_units)
        w, b = learned_coefficients(pl_module.weight, pl_module.bias, data)
        values = {"params/w_gap_ols": (w - ols.w).norm().item(), "params/b_gap_ols": (b - ols.b).abs().item()}
        if data.true_w is not None and data.true_b is not None:
            values["params/w_error"] = (w - data.true_w.to(torch.float64)).norm().item()
            values["params/b_error"] = abs(b.item() - data.true_b)
        if w.numel() <= self.max_coefficient_curves:
            names = [f"params/w/{tag_name(name)}" for name in data.feature_names]
            values.update(zip(names, w.tolist(), strict=True))
            values["params/b"] = b.item()
        return values
