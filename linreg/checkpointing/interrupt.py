"""Stopping fit on SIGTERM or Ctrl-C: ``last.ckpt`` saved, a resume hint, a non-zero exit.

SIGTERM is what a scheduler sends before it pre-empts a job. Lightning catches it itself
(``trainer.received_sigterm``) and, at the end of the training step in progress, raises
``SIGTERMException``: a ``SystemExit`` without a status, so the process would exit 0 and the job would
look finished to the scheduler. ``SaveOnInterrupt`` writes the full training state to the run's
``last.ckpt`` in ``on_exception``, where Lightning hands the exception to callbacks, and the command line
exits with ``128 + the signal's number`` (143 for SIGTERM), as a shell reports a process killed by it;
``--ckpt_path last`` then resumes exactly there.

Ctrl-C (SIGINT) takes the same path: while fit trains, the first Ctrl-C is turned into that SIGTERM, so
training stops at the same point (the end of a step, where a resume continues bit for bit) and the
command exits with 130. Lightning's own answer to Ctrl-C, a ``KeyboardInterrupt`` wherever it falls (in the
middle of an optimizer step, say), saves nothing and exits 1. A second Ctrl-C stops at once, saving nothing.

Lightning's ``OnExceptionCheckpoint`` saves on every exception (a diverged run too, with NaN weights) and
deletes its file at teardown, so it cannot keep the file a resume starts from.
"""

from __future__ import annotations

import os
import signal
import threading
from collections.abc import Callable
from pathlib import Path
from types import FrameType
from typing import Any

from lightning.pytorch import Callback, LightningModule, Trainer
from lightning.pytorch.callbacks import ModelCheckpoint
from lightning.pytorch.utilities.exceptions import SIGTERMException

from linreg.checkpointing.resume import LastCheckpoint, checkpoint_dir
from linreg.errors import Interrupted

SIGTERM_STATUS = 128 + signal.SIGTERM
SIGINT_STATUS = 128 + signal.SIGINT

# How each stopping signal is named to the user.
_NAMES = {signal.SIGTERM: "SIGTERM", signal.SIGINT: "Ctrl-C (SIGINT)"}

Handler = Callable[[int, FrameType | None], Any] | int | None  # what signal.signal takes and returns


def last_checkpoint_path(trainer: Trainer) -> Path:
    """Where this run keeps ``last.ckpt``: the file of its last-checkpoint callback, else its checkpoint directory."""
    for callback in trainer.checkpoint_callbacks:
        if isinstance(callback, LastCheckpoint) and callback.path is not None:
            return callback.path
        if isinstance(callback, ModelCheckpoint) and callback.save_last and callback.dirpath is not None:
            return Path(callback.dirpath) / f"{callback.CHECKPOINT_NAME_LAST}{callback.FILE_EXTENSION}"
    return checkpoint_dir(trainer) / "last.ckpt"


class SaveOnInterrupt(Callback):
    """Saves ``last.ckpt`` when fit is stopped by SIGTERM or Ctrl-C (both end in Lightning's ``SIGTERMException``)."""

    def __init__(self) -> None:
        self.saved: Path | None = None  # where the interrupted fit was saved, for the command line's message
        self.signal = signal.SIGTERM  # the signal that stopped fit
        self.at_once = False  # stopped by a KeyboardInterrupt mid-step (a second Ctrl-C), nothing saved
        self._previous: Handler = None  # the SIGINT handler replaced while training

    @property
    def exit_status(self) -> int:
        """The command's exit status: 128 + the signal's number, as a shell reports a process that it stopped."""
        return SIGINT_STATUS if self.signal == signal.SIGINT else SIGTERM_STATUS

    def on_train_start(self, trainer: Trainer, pl_module: LightningModule) -> None:
        # After Lightning's own signal handlers are in place (it restores them all at teardown). Signal handlers
        # can only be set from the main thread.
        if threading.current_thread() is threading.main_thread():
            self._previous = signal.signal(signal.SIGINT, self._on_ctrl_c)

    def _on_ctrl_c(self, signum: int, frame: FrameType | None) -> None:
        """Stops training as SIGTERM does, at the end of the step in progress; a second Ctrl-C stops at once."""
        self.signal = signal.SIGINT
        signal.signal(signal.SIGINT, signal.default_int_handler)
        os.kill(os.getpid(), signal.SIGTERM)  # Lightning's handler: the stop is shared with every process under DDP

    def on_train_end(self, trainer: Trainer, pl_module: LightningModule) -> None:
        self._restore()

    def on_exception(self, trainer: Trainer, pl_module: LightningModule, exception: BaseException) -> None:
        self._restore()
        if isinstance(exception, KeyboardInterrupt):
            self.signal, self.at_once = signal.SIGINT, True
        if not isinstance(exception, SIGTERMException) or trainer.state.fn != "fit" or trainer.global_step == 0:
            return
        path = last_checkpoint_path(trainer)
        # Every rank raised the exception at the same step (Lightning broadcasts the signal); rank zero writes.
        trainer.save_checkpoint(path, weights_only=False)
        self.saved = path

    def _restore(self) -> None:
        """Gives SIGINT back its handler from before training (a plain ``KeyboardInterrupt``)."""
        if self._previous is not None and threading.current_thread() is threading.main_thread():
            signal.signal(signal.SIGINT, self._previous)
        self._previous = None

    def stopped(self, error: BaseException) -> Interrupted | None:
        """The ``Interrupted`` error for the command line if ``error`` is how fit ended after a signal, else None.

        SIGTERM and a first Ctrl-C end in Lightning's ``SIGTERMException``; a second Ctrl-C in its answer to a
        ``KeyboardInterrupt`` mid-step, exit status 1.
        """
        if isinstance(error, SIGTERMException):
            return Interrupted(self.message(), self.exit_status)
        if isinstance(error, SystemExit) and self.at_once:
            return Interrupted(self.message(), SIGINT_STATUS)
        return None

    def message(self) -> str:
        """The one line printed for a fit stopped by a signal."""
        stopped = f"stopped by {_NAMES[self.signal]}"
        if self.at_once:
            return (
                f"{stopped} at once, mid-step, with nothing saved then; --ckpt_path last resumes from the newest"
                " last.ckpt written before, if there is one"
            )
        if self.saved is None:
            return f"{stopped} before the first training step; nothing was saved"
        return f"{stopped}; the training state is saved in {self.saved}: resume with --ckpt_path last"
