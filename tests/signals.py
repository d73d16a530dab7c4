"""Callbacks and a data module for tests that need a process to receive a signal at a chosen point of a run."""

from __future__ import annotations

import os
import signal
from typing import Any

from lightning.pytorch import Callback, LightningModule, Trainer
from lightning.pytorch.demos.boring_classes import BoringDataModule


def send(name: str) -> None:
    """Sends the signal ``name`` (``SIGTERM``, ``SIGINT`` for Ctrl-C, ``SIGHUP``) to this process."""
    os.kill(os.getpid(), signal.Signals[name])


class SignalAt(Callback):
    """Sends a signal to this process once training has taken ``step`` steps, as a scheduler or a user would.

    Args:
        step: the global step after which the signal is sent.
        name: the signal: ``SIGTERM`` (a scheduler pre-empting the job), ``SIGINT`` (Ctrl-C) or ``SIGHUP``.
        times: how many times it is sent (2: someone insisting).
    """

    def __init__(self, step: int, name: str = "SIGTERM", times: int = 1) -> None:
        self.step = step
        self.name = name
        self.times = times

    def on_train_batch_end(
        self, trainer: Trainer, pl_module: LightningModule, outputs: Any, batch: Any, batch_idx: int
    ) -> None:
        if trainer.global_step == self.step:
            for _ in range(self.times):
                send(self.name)


class SignalAtBatch(Callback):
    """Sends a signal at the end of the first batch of validation, test or predict (``stage``)."""

    def __init__(self, stage: str, name: str = "SIGTERM") -> None:
        self.stage = stage
        self.name = name

    def on_validation_batch_end(self, *args: Any, **kwargs: Any) -> None:
        if self.stage == "validate":
            send(self.name)

    def on_test_batch_end(self, *args: Any, **kwargs: Any) -> None:
        if self.stage == "test":
            send(self.name)

    def on_predict_batch_end(self, *args: Any, **kwargs: Any) -> None:
        if self.stage == "predict":
            send(self.name)


class SignalInSetup(BoringDataModule):
    """Lightning's BoringDataModule that receives a signal while it reads its data (``setup``)."""

    def __init__(self, name: str = "SIGTERM") -> None:
        super().__init__()
        self.name = name

    def setup(self, stage: str) -> None:
        super().setup(stage)
        send(self.name)
