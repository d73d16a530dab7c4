"""Resuming a run: ``last.ckpt`` kept current during fit, found again by ``--ckpt_path last``.

``LastCheckpoint`` writes ``last.ckpt`` every N training steps and at the end of every epoch. The file
holds everything an exact resume needs: weights, optimizer state, Lightning's loop counters and the
training loader's position within the epoch (``ResumableDataLoader.state_dict``).

Each run logs into a new ``version_N`` directory, so Lightning's own ``ckpt_path="last"``, which looks
in the new run's empty directory, finds nothing; ``linreg.checkpointing.runs`` looks through the earlier
runs of the same configuration instead.
"""

from __future__ import annotations

from pathlib import Path
from typing import Any

from lightning.pytorch import LightningModule, Trainer
from lightning.pytorch.callbacks import Checkpoint
from torch import Tensor

from linreg.validation import UserInputError, check_int


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


def check_lightning_checkpoint(checkpoint: Any, path: str) -> dict[str, Any]:
    """Returns ``checkpoint`` if it is what Lightning writes (a dict with a ``state_dict``), else raises."""
    if not isinstance(checkpoint, dict) or not isinstance(checkpoint.get("state_dict"), dict):
        raise UserInputError(f"{path} is not a Lightning checkpoint (it holds no state_dict)")
    return checkpoint


def check_checkpoint_fits(checkpoint: dict[str, Any], path: str, model: LightningModule, resuming: bool) -> None:
    """Raises ``UserInputError`` unless ``checkpoint`` holds weights shaped like ``model``'s.

    Args:
        checkpoint: the loaded checkpoint (see ``check_lightning_checkpoint``).
        path: where it was loaded from, for the message.
        model: the model about to receive its weights.
        resuming: whether fit will resume from it, which needs the optimizer and loop states too.
    """
    theirs = {k: tuple(v.shape) for k, v in checkpoint["state_dict"].items() if isinstance(v, Tensor)}
    ours = {k: tuple(v.shape) for k, v in model.state_dict().items()}
    if theirs.keys() != ours.keys():
        missing, unexpected = sorted(ours.keys() - theirs.keys()), sorted(theirs.keys() - ours.keys())
        raise UserInputError(
            f"checkpoint {path} was written by another kind of model (missing: {missing}, unexpected: {unexpected})"
        )
    for key, shape in ours.items():
        if theirs[key] != shape:
            raise UserInputError(
                f"checkpoint {path} does not fit this model: {key} has shape {list(theirs[key])} there,"
                f" {list(shape)} here{_hparam_difference(checkpoint, model)}"
            )
    if resuming and "optimizer_states" not in checkpoint and "loops" not in checkpoint:
        raise UserInputError(f"checkpoint {path} holds the weights only (save_weights_only); fit cannot resume from it")


def _hparam_difference(checkpoint: dict[str, Any], model: LightningModule) -> str:
    """`` (input_dim 3 there, 5 here)``: the hyper-parameters that explain a shape mismatch, where recorded."""
    saved = checkpoint.get("hyper_parameters") or {}
    differing = [
        f"{k} {saved[k]!r} there, {v!r} here" for k, v in model.hparams.items() if k in saved and saved[k] != v
    ]
    return f" ({'; '.join(differing)})" if differing else ""


class LastCheckpoint(Checkpoint):
    """Keeps ``last.ckpt`` current: every ``every_n_train_steps`` steps, at the end of every epoch and of fit.

    With several SGD steps per batch (``data.steps_per_batch``), "every N steps" means at the end of each
    batch in which the step count passes a multiple of N.

    A run killed at any moment can resume from it having lost at most ``every_n_train_steps`` steps.
    The write at the last batch of an epoch is left to the end of the epoch, after validation, so that a
    resumed run validates and logs every epoch (with ``max_steps`` set, that batch is not written at all;
    see ``on_train_epoch_end``). Where the directory already holds a ``last.ckpt`` (a run without a
    logger reuses ``checkpoints/``), it writes ``last-v1.ckpt`` and so on, never over an earlier file.

    Args:
        every_n_train_steps: training steps between two writes.
    """

    def __init__(self, every_n_train_steps: int = 500) -> None:
        self.every_n_train_steps = check_int("last.every_n_train_steps", every_n_train_steps, 1)
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
        end_of_epoch = batch_idx + 1 >= trainer.num_training_batches
        # A batch may hold several SGD steps: save when its steps pass a multiple of N.
        n = self.every_n_train_steps
        if trainer.global_step // n > self._step_before_batch // n and not end_of_epoch:
            self._save(trainer)
        elif 0 <= trainer.max_steps <= trainer.global_step and not end_of_epoch:
            # Stopped by max_steps mid-epoch: saved here, where the epoch is still open, so that a longer
            # max_steps continues this epoch (on_train_end would record the epoch as complete).
            self._save(trainer)

    def on_train_epoch_end(self, trainer: Trainer, pl_module: LightningModule) -> None:
        # With max_steps set, Lightning takes a checkpoint from this hook for one interrupted inside it and
        # runs the epoch-end hooks again on resume; there the steps (and the end of fit) are what is saved.
        if trainer.max_steps == -1:
            self._save(trainer)

    def on_train_end(self, trainer: Trainer, pl_module: LightningModule) -> None:
        self._save(trainer)

    def _save(self, trainer: Trainer) -> None:
        if self.path is None or trainer.sanity_checking or trainer.fast_dev_run:
            return
        if trainer.global_step == self._saved_step:
            return
        # The full state (weights_only=False here means "not the weights alone"); every rank takes part,
        # rank zero writes.
        trainer.save_checkpoint(self.path, weights_only=False)
        self._saved_step = trainer.global_step
