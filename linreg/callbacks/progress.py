"""Terminal output: a progress bar on a terminal, one plain line per epoch everywhere.

On a terminal the TQDM bar is drawn and the epoch lines are written above it; in a pipe or a log file
there is no bar (no thousands of redraws), only the epoch lines.
"""

from __future__ import annotations

import logging
import sys
import warnings

from lightning.pytorch import LightningModule, Trainer
from lightning.pytorch.callbacks import TQDMProgressBar
from torch import Tensor
from tqdm import tqdm


class ConsoleProgress(TQDMProgressBar):
    """Lightning's TQDM progress bar, drawn only on a terminal, plus a one-line summary per epoch.

    Args:
        refresh_rate: steps between bar updates; each update reads the logged metrics, which on a GPU
            waits for the device, so it is kept well above 1.
        summary_keys: metrics shown in the epoch line, when logged.
    """

    def __init__(
        self,
        refresh_rate: int = 50,
        summary_keys: tuple[str, ...] = ("train/loss", "val/loss", "val/r2"),
    ) -> None:
        super().__init__(refresh_rate=refresh_rate)
        self.summary_keys = summary_keys
        if not sys.stdout.isatty():
            self.disable()

    def on_train_epoch_end(self, trainer: Trainer, pl_module: LightningModule) -> None:
        super().on_train_epoch_end(trainer, pl_module)
        if trainer.is_global_zero:
            self.write(
                epoch_line(trainer.current_epoch, trainer.max_epochs, trainer.callback_metrics, self.summary_keys)
            )

    def write(self, line: str) -> None:
        """Prints ``line`` above the bar when one is drawn, else as a plain line."""
        if self.is_enabled:
            tqdm.write(line)  # above every bar tqdm is drawing
        else:
            print(line, flush=True)


def epoch_line(epoch: int, max_epochs: int | None, metrics: dict[str, Tensor], keys: tuple[str, ...]) -> str:
    """``epoch 1/3  train/loss 0.000212  val/loss 0.000104``: the metrics among ``keys`` that were logged."""
    of = f"/{max_epochs}" if max_epochs not in (None, -1) else ""
    values = "  ".join(f"{key} {float(metrics[key]):.6g}" for key in keys if key in metrics)
    return f"epoch {epoch + 1}{of}  {values}"


class _DropTips(logging.Filter):
    """Drops Lightning's advertising tips ("💡 Tip: ... try installing ..."), which a user cannot act on."""

    def filter(self, record: logging.LogRecord) -> bool:
        return not record.getMessage().startswith("💡 Tip")


_TIPS = _DropTips()


def quiet_lightning() -> None:
    """Keeps Lightning's console output to what a user of this project can act on (idempotent)."""
    for name in ("lightning.pytorch.utilities.rank_zero", "lightning.fabric.utilities.rank_zero"):
        logging.getLogger(name).addFilter(_TIPS)  # the same filter object: added once however often called
    # The data are tensors in memory: worker processes would only add copies between processes.
    warnings.filterwarnings("ignore", message=r".*does not have many workers.*")
    # Every resumed run logs into a new directory, so its best-checkpoint tracking starts afresh there (the
    # earlier run keeps its own best file); Lightning warns about this at each resume.
    warnings.filterwarnings("ignore", message=r".*The dirpath has changed from.*")
    # validate/test/predict with a config that averages weights (configs/csv.yaml): the checkpoint already holds
    # the averaged weights, which is what these subcommands should use; there is nothing to restore.
    warnings.filterwarnings(
        "ignore", message=r".*using the WeightAveraging callback, but loading a checkpoint outside.*"
    )
    # Raised inside Lightning by newer torch releases; nothing a user of Lightning can change.
    warnings.filterwarnings("ignore", message=r".*isinstance\(treespec, LeafSpec\)` is deprecated.*")
