"""``FitReport``: the end-of-fit report (``linreg.stats.report``), printed and written as ``report.json``."""

from __future__ import annotations

import json
from pathlib import Path
from typing import Any

from lightning.pytorch import Callback, LightningModule, Trainer
from lightning.pytorch.callbacks import EarlyStopping, StochasticWeightAveraging
from torch import Tensor

from linreg.atomic_write import save_atomically
from linreg.callbacks.averaging import AveragedSGD
from linreg.callbacks.recovery import FULL_LOSS, OBJECTIVE_GAP, objective_of, regression_data
from linreg.stats.report import build_report, estimator_names, format_report


def estimator(trainer: Trainer) -> dict[str, Any]:
    """What the trained model is: optimizer, configured learning rate and momentum, averaged or not, precision."""
    optimizer = type(trainer.optimizers[0]).__name__ if trainer.optimizers else "model"
    group = trainer.optimizers[0].param_groups[0] if trainer.optimizers else {}
    lr = group.get("initial_lr", group.get("lr"))  # the configured one: a scheduler keeps it as initial_lr
    swa = any(isinstance(cb, StochasticWeightAveraging) for cb in trainer.callbacks)  # type: ignore[attr-defined]
    ours = [cb for cb in trainer.callbacks if isinstance(cb, AveragedSGD)]  # type: ignore[attr-defined]
    # Either puts the average in place when training ends; AveragedSGD only if it averaged any iterate.
    averaged = swa or any(cb.averaged > 0 for cb in ours)
    return {
        **estimator_names(optimizer, averaged, swa),
        "optimizer": optimizer,
        "averaged": averaged,
        "averaging_configured": swa or bool(ours),
        "lr": None if lr is None else float(lr),
        "momentum": float(group.get("momentum") or 0.0),  # Adam's betas are no heavy-ball momentum
        "precision": trainer.precision,
    }


class FitReport(Callback):
    """Prints the report at the end of ``fit`` (rank zero) and writes it as ``report.json`` in the run directory.

    Args:
        python: word the verdict's remedies as Trainer and model arguments, not command-line flags.
    """

    def __init__(self, python: bool = True) -> None:
        self.python = python
        self.mse_by_epoch: list[float] = []  # the training MSE after each epoch of this fit
        self.gap_by_epoch: list[float] = []  # the objective's gap to its optimum after each epoch, for the verdict
        self.report: dict[str, Any] | None = None  # the last fit's report, as report.json holds it (rank zero)

    @staticmethod
    def of(trainer: Trainer) -> dict[str, Any] | None:
        """The report of ``trainer``'s last fit, as ``report.json`` holds it (None but on the first process)."""
        if trainer.state.fn == "fit" and not trainer.state.finished:  # a failed fit has no report, not an earlier one
            return None
        return next((cb.report for cb in trainer.callbacks if isinstance(cb, FitReport)), None)  # type: ignore[attr-defined]

    def on_fit_start(self, trainer: Trainer, pl_module: LightningModule) -> None:
        self.mse_by_epoch, self.gap_by_epoch = [], []
        self.report = None  # not an earlier fit's, if this one ends before its report

    def on_train_epoch_end(self, trainer: Trainer, pl_module: LightningModule) -> None:
        # Logged by ParameterRecovery, which runs first. Read on every process: under DDP reading is collective.
        metrics = trainer.callback_metrics
        for key, history in ((FULL_LOSS, self.mse_by_epoch), (OBJECTIVE_GAP, self.gap_by_epoch)):
            if metrics.get(key) is not None:
                history.append(float(metrics[key]))

    def on_fit_end(self, trainer: Trainer, pl_module: LightningModule) -> None:
        log_dir = trainer.log_dir  # on every rank: it is broadcast from rank zero
        data = regression_data(trainer, type(self).__name__)
        if not trainer.is_global_zero or data is None:
            return

        def predict(x: Tensor) -> Tensor:  # at 16-true, bf16-true or 64-true the weights are not float32
            return pl_module(trainer.precision_plugin.convert_input(x))

        training = {
            "mse_by_epoch": self.mse_by_epoch,
            "gap_by_epoch": self.gap_by_epoch,
            "epochs": trainer.current_epoch,
            "steps": trainer.global_step,
            # What would have ended the run, for the verdict's remedies.
            "early_stopping": any(isinstance(cb, EarlyStopping) for cb in trainer.callbacks),  # type: ignore[attr-defined]
            "max_steps": trainer.max_steps,
        }
        facts = build_report(
            predict,
            (pl_module.weight, pl_module.bias),  # averaged ones, where weights are averaged
            data,
            pl_module.device,
            estimator(trainer),
            training,
            trained=trainer.global_step > 0,  # weights that took no step are no estimate
            objective=objective_of(pl_module),
        )
        self.report = {**facts, "epochs": trainer.current_epoch, "steps": trainer.global_step}
        print("\n" + format_report(self.report, python=self.python), flush=True)
        if log_dir is not None:
            text = (json.dumps(self.report, indent=2) + "\n").encode()
            save_atomically(text, Path(log_dir, "report.json"), save=lambda data, file: file.write(data))
