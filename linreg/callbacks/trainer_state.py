"""What the evaluation callbacks read off the Trainer: the data module, and the step Lightning logs at."""

from __future__ import annotations

from lightning.pytorch import Trainer
from lightning.pytorch.utilities import rank_zero_warn

from linreg.data import RegressionData


def regression_data(trainer: Trainer, needed_by: str) -> RegressionData | None:
    """The trainer's data module when it is a set-up ``RegressionData``; otherwise warns and gives None."""
    data = trainer.datamodule
    if isinstance(data, RegressionData) and data.ready:
        return data
    rank_zero_warn(f"{needed_by} needs a RegressionData data module with its training data; it does nothing")
    return None


def logging_step(trainer: Trainer) -> int:
    """The x-axis value ``self.log`` writes at now: training batches so far, not optimizer steps.

    The two differ when a batch holds several SGD steps (``data.steps_per_batch``); whatever a callback
    writes to the logger directly goes at this step, so that all curves share one axis. Lightning keeps
    the count in its fit loop (its loggers use it the same way).
    """
    return trainer.fit_loop.epoch_loop._batches_that_stepped
