"""``ParameterRecovery``: the least-squares reference of a fit, and curves of SGD's way towards it.

Once per fit, before training, the ordinary-least-squares (OLS) solution of the training data is
computed (``linreg.stats.ols``): the best estimate those data allow. At the start of training and after every
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
from lightning.pytorch import Callback, LightningModule, Trainer

from linreg.callbacks.trainer_state import logging_step, regression_data
from linreg.data import RegressionData
from linreg.stats.ols import LeastSquaresFit, transform
from linreg.stats.report import learned_coefficients
from linreg.validation import check_int


def tag_name(feature: str) -> str:
    """A feature name as a TensorBoard tag component: characters other than letters, digits, ``_.-`` become ``_``."""
    return re.sub(r"[^\w.-]", "_", feature)


class ParameterRecovery(Callback):
    """Computes the OLS reference once per fit and logs the ``params/...`` recovery curves every epoch.

    Args:
        max_coefficient_curves: the coefficients themselves are logged while the model has at most
            this many features (one curve each; more would bury the other curves).

    Attributes:
        reference: the OLS fit of the training data in the units the model is trained in, set when a
            fit starts; the end-of-fit report reads it from here rather than solving again.
    """

    def __init__(self, max_coefficient_curves: int = 16) -> None:
        self.max_coefficient_curves = check_int("max_coefficient_curves", max_coefficient_curves, 0)
        self.reference: LeastSquaresFit | None = None
        self._reference_in_data_units: LeastSquaresFit | None = None

    def setup(self, trainer: Trainer, pl_module: LightningModule, stage: str) -> None:
        # Solved before the run directory is written (SaveConfigCallback comes later): training data with
        # no unique least-squares solution stop the run with nothing written.
        if stage == "fit":
            self._solve(trainer)

    def on_fit_start(self, trainer: Trainer, pl_module: LightningModule) -> None:
        self._solve(trainer)  # again only if the training tensors changed since (a checkpoint's statistics)

    def _solve(self, trainer: Trainer) -> None:
        data = regression_data(trainer, type(self).__name__)
        if data is None:
            return
        # Every process solves the same problem identically, so the logged values agree across ranks. The data
        # module keeps the fit (a streamed table's comes from its pass over the rows) until its training data change.
        reference = data.least_squares(trainer.strategy.root_device)
        if reference is not self.reference:
            self.reference = reference
            self._reference_in_data_units = transform(reference, data.to_original_units)

    def on_train_start(self, trainer: Trainer, pl_module: LightningModule) -> None:
        # The starting point of the curves: the coefficients before the first step.
        values = self._recovery(trainer, pl_module)
        for logger in trainer.loggers if values else []:
            logger.log_metrics(values, step=logging_step(trainer))

    def on_train_epoch_end(self, trainer: Trainer, pl_module: LightningModule) -> None:
        values = self._recovery(trainer, pl_module)
        if values:
            pl_module.log_dict(values, sync_dist=True)  # identical on every rank; the sync is a formality

    def _recovery(self, trainer: Trainer, pl_module: LightningModule) -> dict[str, float]:
        """The ``params/...`` values for the model's current coefficients."""
        ols, data = self._reference_in_data_units, trainer.datamodule
        if ols is None or not isinstance(data, RegressionData):
            return {}
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
