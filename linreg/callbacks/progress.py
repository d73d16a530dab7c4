"""Terminal output: a progress bar on a terminal, one line per epoch everywhere, in the book's form.

The bar is drawn only on a terminal (no thousands of redraws in a log file). A fit that ends before its
``max_epochs`` says on stderr what ended it (``stop_line``), in place of Lightning's own line.
"""

from __future__ import annotations

import logging
import sys
import warnings
from collections.abc import Mapping
from datetime import timedelta

from lightning.pytorch import LightningModule, Trainer
from lightning.pytorch.callbacks import EarlyStopping, Timer, TQDMProgressBar
from lightning.pytorch.callbacks.early_stopping import EarlyStoppingReason
from torch import Tensor
from tqdm import tqdm

from linreg.callbacks.recovery import FULL_LOSS


class ConsoleProgress(TQDMProgressBar):
    """Lightning's TQDM progress bar, drawn only on a terminal, plus a one-line summary per epoch."""

    def __init__(self) -> None:
        super().__init__(refresh_rate=50)  # each update reads the logged metrics, which on a GPU waits for it
        if not sys.stdout.isatty():
            self.disable()

    def on_train_epoch_end(self, trainer: Trainer, pl_module: LightningModule) -> None:
        super().on_train_epoch_end(trainer, pl_module)
        # Read on every process: under DDP computing the epoch's logged values is collective.
        metrics = trainer.callback_metrics
        if trainer.is_global_zero:
            line = epoch_line(trainer.current_epoch, metrics, ("val/loss", "val/r2"))
            if self.is_enabled:
                tqdm.write(line)  # above the bar
            else:
                print(line, flush=True)

    def on_fit_end(self, trainer: Trainer, pl_module: LightningModule) -> None:
        super().on_fit_end(trainer, pl_module)
        line = stop_line(trainer)  # at the fit's end: a fit stopped before its first step has no on_train_end
        if line is not None and trainer.is_global_zero:
            print(line, file=sys.stderr, flush=True)


def stop_line(trainer: Trainer) -> str | None:
    """What ended a fit before its ``max_epochs``, after how many steps and epochs; None when they all ran."""
    epochs, steps, max_epochs = trainer.current_epoch, trainer.global_step, trainer.max_epochs
    if max_epochs is not None and 0 <= max_epochs <= epochs:
        return None
    why = "a callback set trainer.should_stop"
    for callback in trainer.callbacks:
        if isinstance(callback, EarlyStopping) and callback.stopping_reason is not EarlyStoppingReason.NOT_STOPPED:
            why = early_stopping_reason(callback, trainer)
        elif isinstance(callback, Timer) and (remaining := callback.time_remaining()) is not None and remaining <= 0:
            why = f"max_time {timedelta(seconds=round(callback.time_elapsed() + remaining))} ran out (Timer)"
    if 0 <= trainer.max_steps <= steps:
        why = f"max_steps {trainer.max_steps} reached"
    elif not trainer.should_stop:
        return None  # ended by an exception, which says so itself
    limit = "" if max_epochs is None or max_epochs < 0 else f" of max_epochs {max_epochs}"
    if not steps:
        return f"training stopped before its first step: {why}"
    return f"training stopped after {steps} steps, in epoch {epochs}{limit}: {why}"


def early_stopping_reason(callback: EarlyStopping, trainer: Trainer) -> str:
    """Why ``callback`` stopped the fit, in its own terms (monitor, min_delta, patience, best value)."""
    if callback.stopping_reason is EarlyStoppingReason.PATIENCE_EXHAUSTED:
        # Past its patience, it waited for min_steps or min_epochs (Lightning's rule: those come first).
        minimum = {"min_steps": trainer.fit_loop.min_steps, "min_epochs": trainer.fit_loop.min_epochs}
        held = [f"{key} {value}" for key, value in minimum.items() if value and callback.wait_count > callback.patience]
        return (
            f"EarlyStopping: {callback.monitor} did not improve by min_delta {abs(callback.min_delta):g} in the last "
            f"{callback.wait_count} validations (patience {callback.patience}"
            + "".join(f", then {limit} reached" for limit in held[:1])
            + f"); best {float(callback.best_score):.6g}"
        )
    # A threshold crossed, or a value that is not finite: Lightning's message says which, less its last sentence.
    return "EarlyStopping: " + (callback.stopping_reason_message or "").replace(" Signaling Trainer to stop.", "")


def epoch_line(epoch: int, metrics: Mapping[str, Tensor | float], keys: tuple[str, ...]) -> str:
    """The book's line (``loss``: ``train/full_loss``, else ``train/loss``; ``{loss:f}`` unless tiny), then ``keys``.

    Example:
        >>> epoch_line(0, {"train/full_loss": 0.000357, "val/loss": 3.2e-07}, ("val/loss", "val/r2"))
        'epoch 1, loss 0.000357  val/loss 3.20e-07'
    """

    def book(value: Tensor | float) -> str:
        value = float(value)
        return f"{value:f}" if value == 0 or abs(value) >= 1e-5 else f"{value:.2e}"

    loss = metrics.get(FULL_LOSS, metrics.get("train/loss"))
    line = f"epoch {epoch + 1}" + ("" if loss is None else f", loss {book(loss)}")
    return line + "".join(f"  {key} {book(metrics[key])}" for key in keys if key in metrics)


def _actionable(record: logging.LogRecord) -> bool:
    """False for Lightning's lines a user cannot act on, or that this project says better (``stop_line``)."""
    message = record.getMessage()  # "[rank: 1] Seed set to 0", "[rank: 0] Received SIGTERM: 15"
    return not (
        message.startswith(("💡 Tip", "`Trainer.fit` stopped: `max_", "Time limit reached."))
        or "Seed set to" in message
        or "Received SIGTERM" in message
        or message.startswith("Trainer was signaled to stop but the required")
    )


# The loggers Lightning writes its console lines through.
LIGHTNING_LOGGERS = (
    "lightning.pytorch.utilities.rank_zero",
    "lightning.fabric.utilities.rank_zero",
    "lightning.fabric.utilities.seed",
    "lightning.pytorch.trainer.connectors.signal_connector",
)


def quiet_lightning() -> None:
    """Keeps Lightning's console output to what a user of this project can act on (idempotent)."""
    for name in LIGHTNING_LOGGERS:
        logging.getLogger(name).addFilter(_actionable)  # a filter already there is not added again
    for message in (
        r".*does not have many workers.*",  # the data are in memory: workers would only add copies
        r".*The dirpath has changed from.*",  # a resumed run logs into a new directory, its own best checkpoint
        # validate/test/predict --ckpt_path: the command line, completed with the run's config, passed as args
        r".*LightningCLI's args parameter is intended to run from within Python.*",
        # fewer batches an epoch than log_every_n_steps: Lightning counts across epochs, ParameterRecovery adds one
        r".*is smaller than the logging interval Trainer\(log_every_n_steps.*",
        r".*isinstance\(treespec, LeafSpec\)` is deprecated.*",  # inside Lightning with newer torch
    ):
        warnings.filterwarnings("ignore", message=message)
