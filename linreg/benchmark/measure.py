"""Timing helpers: a Lightning run's training epochs, and a whole process's wall time and peak memory."""

from __future__ import annotations

import contextlib
import io
import json
import os
import subprocess
import tempfile
import time
from collections.abc import Callable
from typing import Any

import torch
from lightning.pytorch import Callback, LightningModule, Trainer


class EpochTimer(Callback):
    """Wall time of each training epoch: from its first batch to its last, validation excluded.

    Args:
        path: where to write ``{"epoch_seconds": [...], "steps": n}`` as JSON when fit ends (for a fit
            run as a process: ``--trainer.callbacks+='{"class_path": "linreg.benchmark.measure.EpochTimer",
            "init_args": {"path": "epochs.json"}}'``).
    """

    def __init__(self, path: str | None = None) -> None:
        self.seconds: list[float] = []
        self.path = path
        self._start: float | None = None

    def on_fit_end(self, trainer: Trainer, pl_module: LightningModule) -> None:
        if self.path is not None and trainer.is_global_zero:
            with open(self.path, "w") as file:
                json.dump({"epoch_seconds": self.seconds, "steps": trainer.global_step}, file)

    def _now(self, trainer: Trainer) -> float:
        if trainer.strategy.root_device.type == "cuda":
            torch.cuda.synchronize(trainer.strategy.root_device)
        return time.perf_counter()

    def on_train_epoch_start(self, trainer: Trainer, pl_module: LightningModule) -> None:
        self._start = self._now(trainer)

    def on_validation_start(self, trainer: Trainer, pl_module: LightningModule) -> None:
        self._stop(trainer)

    def on_train_epoch_end(self, trainer: Trainer, pl_module: LightningModule) -> None:
        self._stop(trainer)  # when no validation ran in this epoch

    def _stop(self, trainer: Trainer) -> None:
        if self._start is not None and not trainer.sanity_checking:
            self.seconds.append(self._now(trainer) - self._start)
            self._start = None


def lightning_epoch(build: Callable[[], Any], data: Any) -> float:
    """Examples/s of the training epochs of one ``fit`` of a freshly built CLI, on ``data``'s tensors.

    The run's console output (epoch lines, report) is discarded; its work is not skipped.
    """
    with contextlib.redirect_stdout(io.StringIO()):
        cli = build()
        timer = EpochTimer()
        cli.trainer.callbacks.append(timer)
        cli.trainer.fit(cli.model, datamodule=data)
    return len(data.train_data[0]) * len(timer.seconds) / sum(timer.seconds)


def run_process(command: list[str]) -> tuple[float, int]:
    """Runs ``command`` to completion; returns its wall time (s) and peak resident memory (bytes)."""
    with tempfile.TemporaryFile() as stderr:  # a file, not a pipe: a chatty child never blocks on it
        start = time.perf_counter()
        process = subprocess.Popen(command, stdout=subprocess.DEVNULL, stderr=stderr)
        _, status, usage = os.wait4(process.pid, 0)
        wall = time.perf_counter() - start
        if os.waitstatus_to_exitcode(status) != 0:
            stderr.seek(0)
            tail = stderr.read().decode(errors="replace")[-2000:]
            raise RuntimeError(f"{' '.join(command)} exited with {os.waitstatus_to_exitcode(status)}:\n{tail}")
    return wall, usage.ru_maxrss * 1024  # ru_maxrss is in KiB on Linux
