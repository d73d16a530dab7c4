"""A callback that slows training down, so that a test can kill a real ``fit`` at a chosen moment."""

from __future__ import annotations

import time
from typing import Any

from lightning.pytorch import Callback, LightningModule, Trainer


class Pace(Callback):
    """Sleeps ``seconds`` after every training step; changes nothing that is trained or saved.

    Args:
        seconds: pause per step.
    """

    def __init__(self, seconds: float = 0.01) -> None:
        self.seconds = seconds

    def on_train_batch_end(
        self, trainer: Trainer, pl_module: LightningModule, outputs: Any, batch: Any, batch_idx: int
    ) -> None:
        time.sleep(self.seconds)
