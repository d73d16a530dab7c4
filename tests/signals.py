"""A callback for tests that need a process to receive a signal at a chosen training step."""

from __future__ import annotations

import os
import signal
from typing import Any

from lightning.pytorch import Callback, LightningModule, Trainer


class SignalAt(Callback):
    """Sends a signal to this process once training has taken ``step`` steps, as a scheduler or a user would.

    Args:
        step: the global step after which the signal is sent.
        name: the signal: ``SIGTERM`` (a scheduler pre-empting the job) or ``SIGINT`` (Ctrl-C).
    """

    def __init__(self, step: int, name: str = "SIGTERM") -> None:
        self.step = step
        self.signum = signal.Signals[name]

    def on_train_batch_end(
        self, trainer: Trainer, pl_module: LightningModule, outputs: Any, batch: Any, batch_idx: int
    ) -> None:
        if trainer.global_step == self.step:
            os.kill(os.getpid(), self.signum)
