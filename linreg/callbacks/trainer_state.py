"""What the evaluation callbacks read off the Trainer: its data module, when it is one of this project's."""

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
