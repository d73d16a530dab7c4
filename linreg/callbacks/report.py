"""``FitReport``: prints the end-of-fit report on rank zero and writes it as ``report.json`` in the run directory.

What the report holds and how it is computed: ``linreg.stats.report``.
"""

from __future__ import annotations

import json
from pathlib import Path
from typing import Any

from lightning.pytorch import Callback, LightningModule, Trainer
from torch import Tensor

from linreg.atomic_write import save_atomically
from linreg.callbacks.averaging import AveragedSGD
from linreg.callbacks.recovery import FULL_LOSS, regression_data
from linreg.stats.report import build_report, estimator_names, format_report


def estimator(trainer: Trainer) -> dict[str, Any]:
    """What the trained model is: optimizer name, configured learning rate, averaged or not, precision."""
    optimizer = type(trainer.optimizers[0]).__name__ if trainer.optimizers else "model"
    group = trainer.optimizers[0].param_groups[0] if trainer.optimizers else {}
    lr = group.get("initial_lr", group.get("lr"))  # the configured one: a scheduler keeps it as initial_lr
    # AveragedSGD puts the average in place when training ends, if it averaged any iterate.
    averaged = any(cb.averaged > 0 for cb in trainer.callbacks if isinstance(cb, AveragedSGD))  # type: ignore[attr-defined]
    lr = None if lr is None else float(lr)
    return {**estimator_names(optimizer, averaged), "averaged": averaged, "lr": lr, "precision": trainer.precision}


class FitReport(Callback):
    """Prints the report at the end of ``fit`` (rank zero) and writes it as ``report.json`` into the run directory."""

    def __init__(self) -> None:
        self.mse_by_epoch: list[float] = []  # the training MSE after each epoch of this fit, for the verdict
        self.report: dict[str, Any] | None = None  # the last fit's report, as report.json holds it (rank zero)

    @staticmethod
    def of(trainer: Trainer) -> dict[str, Any] | None:
        """The report of ``trainer``'s last fit, as ``report.json`` holds it (None but on the first process)."""
        return next((cb.report for cb in trainer.callbacks if isinstance(cb, FitReport)), None)  # type: ignore[attr-defined]

    def on_fit_start(self, trainer: Trainer, pl_module: LightningModule) -> None:
        self.mse_by_epoch = []

    def on_train_epoch_end(self, trainer: Trainer, pl_module: LightningModule) -> None:
        # Logged by ParameterRecovery, which runs first. Read on every process: under DDP reading is collective.
        loss = trainer.callback_metrics.get(FULL_LOSS)
        if loss is not None:
            self.mse_by_epoch.append(float(loss))

    def on_fit_end(self, trainer: Trainer, pl_module: LightningModule) -> None:
        log_dir = trainer.log_dir  # on every rank: it is broadcast from rank zero
        data = regression_data(trainer, type(self).__name__)
        if not trainer.is_global_zero or data is None:
            return

        def predict(x: Tensor) -> Tensor:  # at 16-true, bf16-true or 64-true the weights are not float32
            return pl_module(trainer.precision_plugin.convert_input(x))

        facts = build_report(
            predict,
            (pl_module.weight, pl_module.bias),  # averaged ones, where weights are averaged
            data,
            pl_module.device,
            estimator(trainer),
            self.mse_by_epoch,
            trained=trainer.global_step > 0,  # weights that took no step are no estimate
        )
        self.report = {**facts, "epochs": trainer.current_epoch, "steps": trainer.global_step}
        print("\n" + format_report(self.report), flush=True)
        if log_dir is not None:
            text = (json.dumps(self.report, indent=2) + "\n").encode()
            save_atomically(text, Path(log_dir, "report.json"), save=lambda data, file: file.write(data))
