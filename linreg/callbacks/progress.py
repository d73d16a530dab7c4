"""Terminal output: a progress bar on a terminal, one line per epoch everywhere, in the book's form.

The book prints, after each epoch, the loss of the model on the whole training set
(``epoch 1, loss 0.000357``); the epoch line starts the same way, with ``train/full_loss`` (logged by
``ParameterRecovery``), and adds the validation metrics. On a terminal the TQDM bar is drawn and the
epoch lines are written above it; in a pipe or a log file there is no bar (no thousands of redraws),
only the epoch lines.
"""

from __future__ import annotations

import logging
import sys
import warnings
from collections.abc import Mapping

from lightning.pytorch import LightningModule, Trainer
from lightning.pytorch.callbacks import TQDMProgressBar
from torch import Tensor
from tqdm import tqdm

from linreg.callbacks.recovery import FULL_LOSS


class ConsoleProgress(TQDMProgressBar):
    """Lightning's TQDM progress bar, drawn only on a terminal, plus a one-line summary per epoch.

    Args:
        refresh_rate: steps between bar updates; each update reads the logged metrics, which on a GPU
            waits for the device, so it is kept well above 1.
        summary_keys: metrics shown in the epoch line after the training loss, when logged.
    """

    def __init__(self, refresh_rate: int = 50, summary_keys: tuple[str, ...] = ("val/loss", "val/r2")) -> None:
        super().__init__(refresh_rate=refresh_rate)
        self.summary_keys = summary_keys
        if not sys.stdout.isatty():
            self.disable()

    def on_train_epoch_end(self, trainer: Trainer, pl_module: LightningModule) -> None:
        super().on_train_epoch_end(trainer, pl_module)
        # Read on every process: reading computes the values logged for the epoch so far, and under DDP
        # that is a collective operation that all processes must take part in.
        metrics = trainer.callback_metrics
        if trainer.is_global_zero:
            self.write(epoch_line(trainer.current_epoch, metrics, self.summary_keys))

    def write(self, line: str) -> None:
        """Prints ``line`` above the bar when one is drawn, else as a plain line."""
        if self.is_enabled:
            tqdm.write(line)  # above every bar tqdm is drawing
        else:
            print(line, flush=True)


def epoch_line(epoch: int, metrics: Mapping[str, Tensor | float], keys: tuple[str, ...]) -> str:
    """``epoch 1, loss 0.000357  val/loss 0.000402  val/r2 0.999994``: the book's line, then the logged ``keys``.

    ``loss`` is ``train/full_loss``, the loss on the whole training set after the epoch, as the book prints
    it (``{loss:f}``); ``train/loss`` (the last mini-batch's) when that is all there is.

    Example:
        >>> epoch_line(0, {"train/full_loss": 0.000357, "val/loss": 0.0004}, ("val/loss", "val/r2"))
        'epoch 1, loss 0.000357  val/loss 0.000400'
    """
    loss = metrics.get(FULL_LOSS, metrics.get("train/loss"))
    line = f"epoch {epoch + 1}" + ("" if loss is None else f", loss {book_number(float(loss))}")
    values = "".join(f"  {key} {book_number(float(metrics[key]))}" for key in keys if key in metrics)
    return line + values


def book_number(value: float) -> str:
    """``value`` as the book prints losses, ``f"{value:f}"``, or in scientific notation when that would hide it.

    Example:
        >>> book_number(0.000357), book_number(3.2e-07)
        ('0.000357', '3.20e-07')
    """
    return f"{value:f}" if value == 0 or abs(value) >= 1e-5 else f"{value:.2e}"


class _DropNoise(logging.Filter):
    """Drops Lightning's lines that a user cannot act on.

    Advertising tips ("💡 Tip: ... try installing ..."); "Seed set to 0": the seed is in the config
    (and the run's config.yaml), and the line would come before the one-line answer to a bad value;
    "Received SIGTERM: 15": the command's own last line says what stopped it (Ctrl-C arrives as SIGTERM too)
    and where the training state is saved; "Trainer was signaled to stop but the required ... min_steps":
    the table configs' early stopping asking before their min_steps, which is what the config says to do.
    """

    def filter(self, record: logging.LogRecord) -> bool:
        message = record.getMessage()
        # "[rank: 1] Seed set to 0", "[rank: 0] Received SIGTERM: 15"
        return not (
            message.startswith("💡 Tip")
            or "Seed set to" in message
            or "Received SIGTERM" in message
            or message.startswith("Trainer was signaled to stop but the required")
        )


_NOISE = _DropNoise()


def quiet_lightning() -> None:
    """Keeps Lightning's console output to what a user of this project can act on (idempotent)."""
    for name in (
        "lightning.pytorch.utilities.rank_zero",
        "lightning.fabric.utilities.rank_zero",
        "lightning.fabric.utilities.seed",
        "lightning.pytorch.trainer.connectors.signal_connector",
    ):
        logging.getLogger(name).addFilter(_NOISE)  # the same filter object: added once however often called
    # The data are tensors in memory: worker processes would only add copies between processes.
    warnings.filterwarnings("ignore", message=r".*does not have many workers.*")
    # Every resumed run logs into a new directory, so its best-checkpoint tracking starts afresh there (the
    # earlier run keeps its own best file); Lightning warns about this at each resume.
    warnings.filterwarnings("ignore", message=r".*The dirpath has changed from.*")
    # validate/test/predict --ckpt_path without --config: the command line, completed with the checkpoint's run's
    # config (cli._with_run_config), is passed to LightningCLI as its args.
    warnings.filterwarnings(
        "ignore", message=r".*LightningCLI's args parameter is intended to run from within Python.*"
    )
    # A small table has fewer batches an epoch than log_every_n_steps; Lightning counts that interval across epochs
    # (train/loss still gets its points) and ParameterRecovery adds one at every epoch's end.
    warnings.filterwarnings("ignore", message=r".*is smaller than the logging interval Trainer\(log_every_n_steps.*")
    # Raised inside Lightning by newer torch releases; nothing a user of Lightning can change.
    warnings.filterwarnings("ignore", message=r".*isinstance\(treespec, LeafSpec\)` is deprecated.*")
