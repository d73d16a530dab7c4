"""Stopping a command on SIGTERM, SIGHUP or Ctrl-C: ``last.ckpt`` saved when fit trains, one line, a non-zero exit.

Lightning turns SIGTERM during fit into a ``SystemExit`` without a status (the job would look finished), and its
Ctrl-C saves nothing. Here Ctrl-C and SIGHUP become that SIGTERM, the state is saved at the end of the step, and
the exit is ``128 + the signal's number``. Outside the training steps a signal raises ``Stopped`` where it
arrives; a second one stops at once, without saving. Not ``OnExceptionCheckpoint``: it saves diverged weights too.
"""

from __future__ import annotations

import os
import signal
import threading
from collections.abc import Callable, Iterator
from contextlib import contextmanager
from pathlib import Path
from types import FrameType
from typing import Any

from lightning.pytorch import Callback, LightningModule, Trainer
from lightning.pytorch.callbacks import ModelCheckpoint
from lightning.pytorch.utilities.exceptions import SIGTERMException

from linreg.checkpointing.runs import LastCheckpoint, checkpoint_dir
from linreg.errors import RunStopped

SIGTERM_STATUS = 128 + signal.SIGTERM
SIGINT_STATUS = 128 + signal.SIGINT

# The signals that stop a command, and how each is named to the user (Windows has no SIGHUP).
_NAMES = {signal.SIGTERM: "SIGTERM", signal.SIGINT: "Ctrl-C (SIGINT)"}
if hasattr(signal, "SIGHUP"):
    _NAMES[signal.SIGHUP] = "SIGHUP"
STOPPING = tuple(_NAMES)

Handler = Callable[[int, FrameType | None], Any] | int | None  # what signal.signal takes and returns


# A BaseException, as KeyboardInterrupt is: no `except Exception` on the way swallows it.
class Stopped(BaseException):
    """A stopping signal that ends the command where it arrived (outside the training steps, or a second one)."""

    def __init__(self, signum: int) -> None:
        super().__init__(_NAMES.get(signum, str(signum)))
        self.signum = signum


def last_checkpoint_path(trainer: Trainer) -> Path:
    """Where this run keeps ``last.ckpt``: the file of its last-checkpoint callback, else its checkpoint directory."""
    for callback in trainer.checkpoint_callbacks:
        if isinstance(callback, LastCheckpoint) and callback.path is not None:
            return callback.path
        if isinstance(callback, ModelCheckpoint) and callback.save_last and callback.dirpath is not None:
            return Path(callback.dirpath) / f"{callback.CHECKPOINT_NAME_LAST}{callback.FILE_EXTENSION}"
    return checkpoint_dir(trainer) / "last.ckpt"


class SaveOnInterrupt(Callback):
    """Saves ``last.ckpt`` when fit is stopped by a signal while it trains, and words how any command was stopped."""

    def __init__(self) -> None:
        self.saved: Path | None = None  # where the interrupted fit was saved, for the command line's message
        self.signal: int | None = None  # the first stopping signal received
        self.second: int | None = None  # a further one, which stopped the command at once
        self.phase: str | None = None  # where a signal outside the training steps stopped the command
        self._training = False  # between on_train_start and the end of training: stop at the end of a step
        self._forwarded = False  # the SIGTERM this callback sent itself, to stop at the end of the step
        self._set_up = False  # the data were read (the callbacks' setup comes after the data module's)
        self._previous: dict[int, Handler] = {}  # the handlers replaced while training
        # The signals this process was started ignoring stay ignored: SIGHUP under nohup, SIGINT in a script's
        # background job. Python itself leaves an ignored SIGINT so.
        self._handled: tuple[int, ...] = STOPPING

    @property
    def exit_status(self) -> int:
        """The command's exit status: 128 + the signal's number, as a shell reports a process that it stopped."""
        return 128 + (self.signal or signal.SIGTERM)

    @contextmanager
    def stopping_signals(self) -> Iterator[None]:
        """For the whole command: a signal outside the training steps raises ``Stopped`` (inside them: noted)."""
        main = threading.current_thread() is threading.main_thread()  # the only one that may set handlers
        self._handled = tuple(signum for signum in STOPPING if signal.getsignal(signum) != signal.SIG_IGN)
        previous = {signum: signal.signal(signum, self._on_signal) for signum in self._handled} if main else {}
        try:
            yield
        finally:
            for signum, handler in previous.items():
                signal.signal(signum, handler)

    def _on_signal(self, signum: int, frame: FrameType | None) -> None:
        if self._forwarded and signum == signal.SIGTERM:  # our own SIGTERM for a first Ctrl-C or SIGHUP
            self._forwarded = False
            return
        if self.signal is not None:
            self.second = signum
            raise Stopped(signum)
        self.signal = signum
        if not self._training:
            raise Stopped(signum)
        # Training: Lightning's SIGTERM handler (called before this one) stops at the end of the step, on every
        # process under DDP; a first Ctrl-C or SIGHUP becomes that SIGTERM.
        if signum != signal.SIGTERM:
            self._forwarded = True
            os.kill(os.getpid(), signal.SIGTERM)

    def setup(self, trainer: Trainer, pl_module: LightningModule, stage: str) -> None:
        self._set_up = True

    def on_train_start(self, trainer: Trainer, pl_module: LightningModule) -> None:
        # After Lightning's own SIGTERM handler is in place (it restores every handler at teardown).
        self._training = True
        if threading.current_thread() is threading.main_thread():
            others = [signum for signum in self._handled if signum != signal.SIGTERM]
            self._previous = {signum: signal.signal(signum, self._on_signal) for signum in others}

    def on_train_end(self, trainer: Trainer, pl_module: LightningModule) -> None:
        self._restore()

    def teardown(self, trainer: Trainer, pl_module: LightningModule, stage: str) -> None:
        self.phase = self.phase or f"after {stage} had finished"

    def on_exception(self, trainer: Trainer, pl_module: LightningModule, exception: BaseException) -> None:
        self._restore()
        if isinstance(exception, (Stopped, SIGTERMException)):
            self.phase = self._phase(trainer)
        # Nothing to save outside fit's steps, or with checkpointing off (trainer.enable_checkpointing false).
        if not isinstance(exception, SIGTERMException) or trainer.state.fn != "fit" or not trainer.global_step:
            return
        if not trainer.checkpoint_callbacks:
            return
        path = last_checkpoint_path(trainer)
        # Every rank raised the exception at the same step (Lightning broadcasts the signal); rank zero writes.
        trainer.save_checkpoint(path, weights_only=False)
        self.saved = path

    def _phase(self, trainer: Trainer) -> str:
        """Where the command was when a signal stopped it outside the training steps."""
        command = trainer.state.fn.value if trainer.state.fn is not None else "the run"
        if not self._set_up:
            return f"while the data were read for {command}"
        if trainer.sanity_checking:
            return "during the sanity-check validation, before the first training step"
        if command == "fit":
            return "before the first training step" if trainer.global_step == 0 else "after training"
        return f"during {command}" + (", before any prediction was written" if command == "predict" else "")

    def _restore(self) -> None:
        """Gives Ctrl-C and SIGHUP back their handlers from before training."""
        self._training = False
        for signum, handler in self._previous.items():  # set only from the main thread
            signal.signal(signum, handler)
        self._previous = {}

    def stopped(self, error: BaseException) -> RunStopped | None:
        """The error for the command line if ``error`` is how the command ended after a signal."""
        return RunStopped(self.message(), self.exit_status) if isinstance(error, (SIGTERMException, Stopped)) else None

    def message(self) -> str:
        """The one line printed for a command stopped by a signal."""
        first = _NAMES.get(self.signal or signal.SIGTERM)
        if self.second is not None:
            return (
                f"stopped by a second {_NAMES[self.second]} (after {first}) at once, with nothing saved then;"
                " --ckpt_path last resumes from the newest last.ckpt written before, if there is one"
            )
        stopped = f"stopped by {first}"
        if self.saved is not None:
            return f"{stopped}; the training state is saved in {self.saved}: resume with --ckpt_path last"
        return f"{stopped} {self.phase or 'before the run began'}; nothing was saved"
