"""Stopping on SIGTERM, as a scheduler asks before pre-empting a job: ``last.ckpt`` saved, a non-zero exit.

Lightning catches SIGTERM itself (``trainer.received_sigterm``) and, at the end of the training step in
progress, raises ``SIGTERMException``: a ``SystemExit`` without a status, so the process would exit 0,
and the job would look finished to the scheduler. ``SaveOnSigterm`` writes the full training state to
the run's ``last.ckpt`` in ``on_exception``, where Lightning hands the exception to callbacks, and
the command line exits with ``SIGTERM_STATUS`` (128 + 15, as a shell reports a process killed by
SIGTERM); ``--ckpt_path last`` then resumes exactly there.

Lightning's ``OnExceptionCheckpoint`` saves on every exception (a diverged run too, with NaN weights) and
deletes its file at teardown, so it cannot keep the file a resume starts from.
"""

from __future__ import annotations

import signal
from pathlib import Path

from lightning.pytorch import Callback, LightningModule, Trainer
from lightning.pytorch.callbacks import ModelCheckpoint
from lightning.pytorch.utilities.exceptions import SIGTERMException

from linreg.checkpointing.resume import LastCheckpoint, checkpoint_dir

SIGTERM_STATUS = 128 + signal.SIGTERM


def last_checkpoint_path(trainer: Trainer) -> Path:
    """Where this run keeps ``last.ckpt``: the file of its last-checkpoint callback, else its checkpoint directory."""
    for callback in trainer.checkpoint_callbacks:
        if isinstance(callback, LastCheckpoint) and callback.path is not None:
            return callback.path
        if isinstance(callback, ModelCheckpoint) and callback.save_last and callback.dirpath is not None:
            return Path(callback.dirpath) / f"{callback.CHECKPOINT_NAME_LAST}{callback.FILE_EXTENSION}"
    return checkpoint_dir(trainer) / "last.ckpt"


class SaveOnSigterm(Callback):
    """Saves ``last.ckpt`` when fit is stopped by SIGTERM (Lightning's ``SIGTERMException``)."""

    def __init__(self) -> None:
        self.saved: Path | None = None  # where the interrupted fit was saved, for the command line's message

    def on_exception(self, trainer: Trainer, pl_module: LightningModule, exception: BaseException) -> None:
        if not isinstance(exception, SIGTERMException) or trainer.state.fn != "fit" or trainer.global_step == 0:
            return
        path = last_checkpoint_path(trainer)
        # Every rank raised the exception at the same step (Lightning broadcasts the signal); rank zero writes.
        trainer.save_checkpoint(path, weights_only=False)
        self.saved = path

    def message(self) -> str:
        """The one line printed for a fit stopped by SIGTERM."""
        if self.saved is None:
            return "stopped by SIGTERM before the first training step; nothing was saved"
        return f"stopped by SIGTERM; the training state is saved in {self.saved}: resume with --ckpt_path last"
