"""SaveOnInterrupt on its own, with Lightning's BoringModel: what Ctrl-C and SIGTERM leave and say."""

from __future__ import annotations

import signal
from pathlib import Path

import pytest
import torch
from lightning.pytorch import Trainer
from lightning.pytorch.demos.boring_classes import BoringModel
from lightning.pytorch.utilities.exceptions import SIGTERMException

from linreg.checkpointing.interrupt import SaveOnInterrupt
from tests.signals import SignalAt


def _fit(tmp_path: Path, name: str, step: int = 3, **trainer_args: object) -> SaveOnInterrupt:
    callback = SaveOnInterrupt()
    trainer = Trainer(
        default_root_dir=tmp_path,
        max_epochs=1,
        callbacks=[callback, SignalAt(step, name)],
        logger=False,
        enable_progress_bar=False,
        enable_model_summary=False,
        **trainer_args,  # type: ignore[arg-type]
    )
    with pytest.raises(SIGTERMException):  # Lightning's stop at the end of the step, for both signals
        trainer.fit(BoringModel())
    return callback


@pytest.mark.parametrize(("name", "status"), [("SIGINT", 130), ("SIGTERM", 143)])
def test_a_signal_in_training_saves_the_state_after_the_step_it_came_in(tmp_path: Path, name: str, status: int) -> None:
    callback = _fit(tmp_path, name)
    assert callback.exit_status == status  # 128 + the signal's number, as a shell reports it
    assert callback.saved is not None
    assert torch.load(callback.saved, weights_only=False)["global_step"] == 3  # the step in progress finished
    assert f"the training state is saved in {callback.saved}: resume with --ckpt_path last" in callback.message()
    assert signal.getsignal(signal.SIGINT) is signal.default_int_handler  # Ctrl-C is Python's own again


def test_ctrl_c_before_the_first_optimizer_step_saves_nothing_and_says_so(tmp_path: Path) -> None:
    # With two batches accumulated, the first batch ends with no optimizer step taken: no state worth resuming.
    callback = _fit(tmp_path, "SIGINT", step=0, accumulate_grad_batches=2)
    assert callback.exit_status == 130  # 128 + SIGINT, as a shell reports Ctrl-C
    assert callback.saved is None
    assert not list(tmp_path.rglob("*.ckpt"))
    assert callback.message() == "stopped by Ctrl-C (SIGINT) before the first training step; nothing was saved"
    assert signal.getsignal(signal.SIGINT) is signal.default_int_handler
