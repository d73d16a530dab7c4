"""Stopping a diverged fit: the first NaN or infinite training loss ends it, with the likely cause named.

Not ``EarlyStopping(check_finite=True)``: it reads its metric only at an epoch's or a validation's end, so steps
run on and checkpoints keep non-finite weights. Reading a loss waits for the device: on one CPU process every step
is read; elsewhere a device-side flag, every ``log_every_n_steps`` and before checkpoints, keeps the first bad step.
"""

from __future__ import annotations

import math
from typing import Any

import torch
from lightning.pytorch import Callback, LightningModule, Trainer
from lightning.pytorch.callbacks import OnExceptionCheckpoint
from torch import Tensor

from linreg.errors import RunStopped

_NONE = 2**62  # "no bad step yet": larger than any step, so that the earliest bad step is the minimum


class TrainingDivergedError(RunStopped):
    """The training loss became NaN or infinite; the settings (usually the learning rate) cannot train this model."""


class DivergenceGuard(Callback):
    """Raises ``TrainingDivergedError`` at the first non-finite training loss, and refuses non-finite checkpoints."""

    def __init__(self) -> None:
        self._check_every = 1
        self._first_bad: Tensor | None = None  # on the device: the first step with a non-finite loss, or _NONE
        self._resumed_from: tuple[str, int] | None = None  # (checkpoint, its first step) of a resumed fit

    def on_train_start(self, trainer: Trainer, pl_module: LightningModule) -> None:
        free_to_read = trainer.strategy.root_device.type == "cpu" and trainer.world_size == 1
        self._check_every = 1 if free_to_read else max(1, trainer.log_every_n_steps)
        self._first_bad = None
        self._resumed_from = (str(trainer.ckpt_path), trainer.global_step + 1) if trainer.ckpt_path else None

    def on_train_batch_end(
        self, trainer: Trainer, pl_module: LightningModule, outputs: Any, batch: Any, batch_idx: int
    ) -> None:
        # Lightning hands on the step's output as a dict, a returned tensor as its "loss" (both optimization modes).
        loss = outputs.get("loss") if isinstance(outputs, dict) else None
        if not isinstance(loss, Tensor):
            return
        if self._check_every == 1:  # one CPU process: reading the loss costs nothing but the read
            value = float(loss.detach().max()) if loss.numel() > 1 else loss.item()
            if not math.isfinite(value):
                self._stop(trainer, trainer.global_step, f"the training loss became {value}")
            return
        finite = torch.isfinite(loss.detach()).all()
        # Kernels only, no wait: the earliest step (numbered like trainer.global_step) with a bad loss.
        step = torch.where(finite, _NONE, trainer.global_step)
        self._first_bad = step if self._first_bad is None else torch.minimum(self._first_bad, step)
        if (batch_idx + 1) % self._check_every == 0:
            self._check(trainer)

    def on_train_epoch_end(self, trainer: Trainer, pl_module: LightningModule) -> None:
        self._check(trainer)

    def on_save_checkpoint(self, trainer: Trainer, pl_module: LightningModule, checkpoint: dict[str, Any]) -> None:
        # Called on every rank before the file is written: raising here keeps the file from being written.
        self._check(trainer)
        finite = all(bool(torch.isfinite(p).all()) for p in pl_module.parameters())
        if not trainer.strategy.reduce_boolean_decision(finite, all=True):
            self._stop(trainer, trainer.global_step, "the weights became NaN or infinite")

    def _check(self, trainer: Trainer) -> None:
        """Reads the device-side flag (one wait for the device) and stops on every rank if any rank saw a bad loss."""
        if self._first_bad is None:
            return
        first_bad = int(trainer.strategy.reduce(self._first_bad.clone(), reduce_op="min"))
        if first_bad != _NONE:
            self._stop(trainer, first_bad, "the training loss became NaN or infinite")

    def _stop(self, trainer: Trainer, step: int, what: str) -> None:
        groups = [group for optimizer in trainer.optimizers for group in optimizer.param_groups]
        lr = float(groups[0]["lr"]) if groups else None  # the first optimizer's (a float, or a one-element tensor)
        cause = f"the learning rate, {lr:g}, is likely too large" if lr is not None else "the settings are unstable"
        cause += " (model.optimizer.lr)"
        if self._resumed_from is not None and step == self._resumed_from[1]:
            # At the very first step from a checkpoint: its weights are the likelier culprit.
            cause = f"the weights of checkpoint {self._resumed_from[0]} are likely unusable, or {cause}"
        # Lightning's OnExceptionCheckpoint saves the weights of the moment on any error: the diverged ones.
        kept = [c.ckpt_path for c in trainer.callbacks if isinstance(c, OnExceptionCheckpoint)]
        saved = f", but by OnExceptionCheckpoint, whose {', '.join(kept)} holds the diverged weights" if kept else ""
        raise TrainingDivergedError(
            f"training diverged: {what} at step {step} (epoch {trainer.current_epoch});"
            f" {cause}. Nothing was saved from that step on{saved}."
        )
