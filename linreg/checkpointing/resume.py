"""Resuming a run: ``last.ckpt`` kept current during fit (weights, optimizer, loop counters, the loader's position)."""

from __future__ import annotations

from pathlib import Path
from typing import Any

from lightning.pytorch import LightningModule, Trainer
from lightning.pytorch.callbacks import Checkpoint

from linreg.constraints import check_int


def checkpoint_dir(trainer: Trainer) -> Path:
    """This run's checkpoint directory, ``<save_dir>/<name>/<version>/checkpoints``, as ``ModelCheckpoint`` has it."""
    if not trainer.loggers:
        return Path(trainer.default_root_dir) / "checkpoints"
    version = trainer.loggers[0].version
    return runs_root(trainer) / (version if isinstance(version, str) else f"version_{version}") / "checkpoints"


def runs_root(trainer: Trainer) -> Path:
    """``<save_dir>/<name>``: where the logger of ``trainer`` puts every run of its config."""
    logger = trainer.loggers[0]
    return Path(logger.save_dir or trainer.default_root_dir) / str(logger.name)


class LastCheckpoint(Checkpoint):
    """Keeps ``last.ckpt`` current: every ``every_n_train_steps`` steps, at the end of every epoch and of fit.

    Never over an earlier file (``last-v1.ckpt``). Not ``ModelCheckpoint(save_last=True)``: it may save before an
    epoch's validation (a resume skips it), defers step saves until a monitored metric exists, and rewrites
    ``last.ckpt`` at an epoch end only with a new top-k file.

    Args:
        every_n_train_steps: training steps between two writes.
    """

    def __init__(self, every_n_train_steps: int = 500) -> None:
        self.every_n_train_steps = check_int("every_n_train_steps", every_n_train_steps, 1)
        self.path: Path | None = None
        self._saved_step = 0  # nothing to save before the first step
        self._step_before_batch = 0

    def setup(self, trainer: Trainer, pl_module: LightningModule, stage: str) -> None:
        if stage != "fit":
            return
        directory = checkpoint_dir(trainer)
        path, version = directory / "last.ckpt", 0
        while path.exists():
            version += 1
            path = directory / f"last-v{version}.ckpt"
        self.path = Path(trainer.strategy.broadcast(str(path)))  # rank zero's view of the file system

    def on_train_batch_start(self, trainer: Trainer, pl_module: LightningModule, batch: Any, batch_idx: int) -> None:
        self._step_before_batch = trainer.global_step

    def on_train_batch_end(
        self, trainer: Trainer, pl_module: LightningModule, outputs: Any, batch: Any, batch_idx: int
    ) -> None:
        # "Passes a multiple of N" rather than "is one": a batch can hold several steps (a model with manual
        # optimization) or none (gradient accumulation).
        n = self.every_n_train_steps
        passed_multiple = trainer.global_step // n > self._step_before_batch // n
        end_of_epoch = batch_idx + 1 >= trainer.num_training_batches
        # At max_steps, fit ends here: saved now, before any end-of-fit callback changes the weights.
        if (passed_multiple and not end_of_epoch) or trainer.global_step == trainer.max_steps:
            self._save(trainer)

    def on_train_epoch_end(self, trainer: Trainer, pl_module: LightningModule) -> None:
        # With max_steps set, Lightning takes a checkpoint from this hook for one interrupted inside it and
        # runs the epoch-end hooks again on resume; there the steps (and the end of fit) are what is saved.
        if trainer.max_steps == -1:
            self._save(trainer)

    def on_train_end(self, trainer: Trainer, pl_module: LightningModule) -> None:
        self._save(trainer)

    def _save(self, trainer: Trainer) -> None:
        if (
            self.path is None
            or trainer.sanity_checking
            or trainer.fast_dev_run
            or trainer.global_step == self._saved_step
        ):
            return
        # The full state (weights_only=False: not the weights alone); every rank takes part, rank zero writes.
        trainer.save_checkpoint(self.path, weights_only=False)
        self._saved_step = trainer.global_step
