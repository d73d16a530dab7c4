"""SaveOnInterrupt on its own, with Lightning's BoringModel: what Ctrl-C and SIGTERM leave and say."""

from __future__ import annotations

import os
import signal
import subprocess
import sys
import time
from pathlib import Path
from typing import Any

import pytest
import torch
from lightning.pytorch import Trainer
from lightning.pytorch.demos.boring_classes import BoringModel
from lightning.pytorch.utilities.exceptions import SIGTERMException

from linreg.checkpointing.interrupt import SaveOnInterrupt, Stopped
from tests.conftest import D2L_CONFIG, ROOT, run_cli
from tests.signals import SignalAt, SignalAtBatch, SignalInSetup


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
    interrupted = callback.stopped(SIGTERMException())
    assert interrupted is not None
    assert interrupted.exit_status == status
    assert not isinstance(interrupted, ValueError)  # a stopped run, not refused input (UserInputError)


def test_ctrl_c_before_the_first_optimizer_step_saves_nothing_and_says_so(tmp_path: Path) -> None:
    # With two batches accumulated, the first batch ends with no optimizer step taken: no state worth resuming.
    callback = _fit(tmp_path, "SIGINT", step=0, accumulate_grad_batches=2)
    assert callback.exit_status == 130  # 128 + SIGINT, as a shell reports Ctrl-C
    assert callback.saved is None
    assert not list(tmp_path.rglob("*.ckpt"))
    assert callback.message() == "stopped by Ctrl-C (SIGINT) before the first training step; nothing was saved"
    assert signal.getsignal(signal.SIGINT) is signal.default_int_handler


def _run(tmp_path: Path, command: str, *callbacks: Any, data: Any = None) -> SaveOnInterrupt:
    """Runs ``command`` of a Trainer under the command line's signal handling; returns the callback."""
    callback = SaveOnInterrupt()
    trainer = Trainer(
        default_root_dir=tmp_path,
        max_epochs=1,
        limit_val_batches=2,
        num_sanity_val_steps=0,
        callbacks=[callback, *callbacks],
        logger=False,
        enable_progress_bar=False,
        enable_model_summary=False,
    )
    with callback.stopping_signals(), pytest.raises((Stopped, SIGTERMException)):
        getattr(trainer, command)(BoringModel(), datamodule=data)
    return callback


def test_sighup_in_training_saves_as_sigterm_does(tmp_path: Path) -> None:
    callback = _run(tmp_path, "fit", SignalAt(3, "SIGHUP"))
    assert callback.exit_status == 128 + signal.SIGHUP
    assert callback.saved is not None
    assert torch.load(callback.saved, weights_only=False)["global_step"] == 3


def test_a_second_signal_stops_at_once_and_says_so(tmp_path: Path) -> None:
    callback = _run(tmp_path, "fit", SignalAt(3, "SIGTERM", times=2))
    assert callback.saved is None
    assert callback.message().startswith("stopped by a second SIGTERM (after SIGTERM) at once, with nothing saved")
    assert callback.exit_status == 143


@pytest.mark.parametrize(
    ("command", "callbacks", "data", "phase"),
    [
        ("fit", (), SignalInSetup("SIGTERM"), "while the data were read for fit"),
        ("fit", (), SignalInSetup("SIGINT"), "while the data were read for fit"),
        ("validate", (SignalAtBatch("validate", "SIGINT"),), None, "during validate"),
        ("predict", (SignalAtBatch("predict", "SIGTERM"),), None, "during predict, before any prediction was written"),
    ],
)
def test_a_signal_outside_training_stops_at_once_naming_the_phase(
    tmp_path: Path, command: str, callbacks: tuple[Any, ...], data: Any, phase: str
) -> None:
    callback = _run(tmp_path, command, *callbacks, data=data)
    assert callback.message().endswith(f" {phase}; nothing was saved")
    assert callback.saved is None
    assert not list(tmp_path.rglob("*.ckpt"))


def test_a_signal_before_training_leaves_no_run_directory(tmp_path: Path, capsys: pytest.CaptureFixture[str]) -> None:
    # Lightning's sanity-check validation runs before the first training step: there is nothing to save yet.
    signal_in_validation = ("--trainer.callbacks+=tests.signals.SignalAtBatch", "--trainer.callbacks.stage", "validate")
    with pytest.raises(SystemExit) as exit_info:
        run_cli(
            *("fit", "--config", str(D2L_CONFIG), "--trainer.logger.init_args.save_dir", str(tmp_path / "runs")),
            *signal_in_validation,
        )
    assert exit_info.value.code == 143
    errors = [line for line in capsys.readouterr().err.splitlines() if ": error: " in line]
    assert errors == [
        "linreg: error: stopped by SIGTERM during the sanity-check validation, before the first training step;"
        " nothing was saved"
    ]
    assert not (tmp_path / "runs").exists()


@pytest.mark.slow
def test_ctrl_c_while_the_command_starts_is_one_line_and_status_130(tmp_path: Path) -> None:
    """Torch and Lightning take seconds to import, before any handler of the project's is in place."""
    command = [sys.executable, "-m", "linreg", "fit", "--config", str(D2L_CONFIG)]
    env = {**os.environ, "PYTHONPATH": str(ROOT)}
    process = subprocess.Popen(command, cwd=tmp_path, env=env, stderr=subprocess.PIPE, text=True)
    time.sleep(0.5)  # importing, on any machine; later, the message names the phase, as the other tests check
    process.send_signal(signal.SIGINT)
    _, err = process.communicate(timeout=120)
    assert process.returncode == 130
    assert err.strip().startswith("linreg: error: stopped by Ctrl-C (SIGINT)")
    assert "Traceback" not in err
    assert list(tmp_path.iterdir()) == []
