"""A diverging fit stops at the first non-finite loss, names the step and the learning rate, and saves nothing bad."""

from __future__ import annotations

import re
from pathlib import Path

import pytest
import torch
from lightning.pytorch import LightningModule, Trainer
from lightning.pytorch.callbacks import EarlyStopping, OnExceptionCheckpoint
from lightning.pytorch.loggers import TensorBoardLogger

from linreg import LinearRegression, SyntheticRegressionData
from linreg.callbacks.divergence import DivergenceGuard, TrainingDivergedError
from linreg.checkpointing.io import AtomicCheckpointIO
from linreg.checkpointing.runs import LastCheckpoint
from tests.conftest import D2L_CONFIG, run_cli

# SGD with lr=10 on the d2l data: the loss grows tenfold per step and is first infinite at step 15.
FIRST_INFINITE_STEP = 15


def _all_finite(checkpoint: dict) -> bool:
    return all(bool(torch.isfinite(t).all()) for t in checkpoint["state_dict"].values())


def test_lr_10_stops_at_the_first_infinite_loss_naming_step_and_learning_rate(
    tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    with pytest.raises(SystemExit) as exit_info:
        run_cli(
            *("fit", "--config", str(D2L_CONFIG), "--trainer.logger.init_args.save_dir", str(tmp_path)),
            *("--model.optimizer.lr", "10", "--last.every_n_train_steps", "1"),
        )
    assert exit_info.value.code == 1
    captured = capsys.readouterr()
    errors = [line for line in captured.err.splitlines() if "error" in line]
    assert errors == [
        f"linreg: error: training diverged: the training loss became inf at step {FIRST_INFINITE_STEP} (epoch 0);"
        " the learning rate, 10, is likely too large (model.optimizer.lr). Nothing was saved from that step on."
    ]
    assert "Traceback" not in captured.err
    assert "epoch 1, loss" not in captured.out  # stopped at once: no epoch finished
    checkpoints = list(tmp_path.rglob("*.ckpt"))
    assert [p.name for p in checkpoints] == ["last.ckpt"]  # no best: it never validated
    last = torch.load(checkpoints[0], weights_only=True)
    assert last["global_step"] == FIRST_INFINITE_STEP - 1
    assert _all_finite(last)


def test_grouped_steps_stop_at_the_first_group_with_an_infinite_loss(
    tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    with pytest.raises(SystemExit):
        run_cli(
            *("fit", "--config", str(D2L_CONFIG), "--trainer.logger.init_args.save_dir", str(tmp_path)),
            *("--model", "linreg.grouped.GroupedStepsRegression", "--model.mini_batch_size", "10"),
            *("--data.batch_size", "40", "--model.optimizer.lr", "10"),
        )
    # Steps 13 to 16 form the fourth group; the first infinite loss is at step 15.
    assert "the training loss became inf at step 16 (epoch 0)" in capsys.readouterr().err


class _DeferredGuard(DivergenceGuard):
    """The guard as it runs on a GPU or under DDP: the flag stays on the device and is read every 10 steps."""

    def on_train_start(self, trainer: Trainer, pl_module: LightningModule) -> None:
        super().on_train_start(trainer, pl_module)
        self._check_every = 10


def test_the_deferred_check_names_the_first_bad_step_and_blocks_checkpoints(tmp_path: Path) -> None:
    torch.manual_seed(0)
    model = LinearRegression(5, optimizer=lambda params: torch.optim.SGD(params, lr=10))
    trainer = Trainer(
        max_epochs=1,
        logger=TensorBoardLogger(tmp_path, name="d2l"),
        callbacks=[_DeferredGuard(), LastCheckpoint(every_n_train_steps=1)],
        plugins=[AtomicCheckpointIO()],
        enable_progress_bar=False,
        enable_model_summary=False,
    )
    with pytest.raises(
        TrainingDivergedError, match=rf"became NaN or infinite at step {FIRST_INFINITE_STEP} \(epoch 0\)"
    ):
        trainer.fit(model, SyntheticRegressionData())
    # The write at the first bad step asked the guard first, which read the flag and stopped the run.
    (last,) = tmp_path.rglob("last.ckpt")
    checkpoint = torch.load(last, weights_only=True)
    assert checkpoint["global_step"] == FIRST_INFINITE_STEP - 1
    assert _all_finite(checkpoint)


def test_lightnings_check_finite_lets_a_diverged_fit_step_on_and_save_non_finite_weights(tmp_path: Path) -> None:
    # Why DivergenceGuard is kept: EarlyStopping(check_finite=True) reads its monitor only at an epoch's (or a
    # validation's) end, so the steps after the first infinite loss run on and a checkpoint keeps their weights.
    torch.manual_seed(0)
    model = LinearRegression(5, optimizer=lambda params: torch.optim.SGD(params, lr=10))
    stopping = EarlyStopping(monitor="train/loss", check_finite=True, check_on_train_epoch_end=True)
    trainer = Trainer(
        max_epochs=3,
        logger=TensorBoardLogger(tmp_path, name="d2l"),
        callbacks=[stopping, LastCheckpoint(every_n_train_steps=1)],
        plugins=[AtomicCheckpointIO()],
        enable_progress_bar=False,
        enable_model_summary=False,
    )
    trainer.fit(model, SyntheticRegressionData())
    assert trainer.global_step == 100 > FIRST_INFINITE_STEP  # the whole first epoch: 1000 rows in batches of 10
    (last,) = tmp_path.rglob("last.ckpt")
    assert not _all_finite(torch.load(last, weights_only=True))


def test_a_stable_learning_rate_is_left_alone(d2l_run: Path) -> None:
    checkpoint = torch.load(d2l_run / "checkpoints" / "last.ckpt", weights_only=True)
    assert checkpoint["global_step"] == 300
    assert _all_finite(checkpoint)


def test_the_message_names_another_optimizers_learning_rate(tmp_path: Path, capsys: pytest.CaptureFixture[str]) -> None:
    with pytest.raises(SystemExit):
        run_cli(
            *("fit", "--config", str(D2L_CONFIG), "--trainer.logger.init_args.save_dir", str(tmp_path)),
            *("--model.optimizer", "SGD", "--model.optimizer.lr", "50", "--model.optimizer.momentum", "0.9"),
        )
    assert re.search(
        r"training diverged: .* at step \d+ .*the learning rate, 50, is likely too large", capsys.readouterr().err
    )


def test_a_checkpoint_whose_weights_diverge_at_once_is_named(
    d2l_run: Path, tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    checkpoint = torch.load(d2l_run / "checkpoints" / "last.ckpt", weights_only=True)
    checkpoint["state_dict"]["net.0.weight"].fill_(1e38)  # finite, but every prediction overflows float32
    huge = tmp_path / "huge.ckpt"
    torch.save(checkpoint, huge)
    with pytest.raises(SystemExit) as exit_info:
        run_cli(
            *("fit", "--config", str(D2L_CONFIG), "--trainer.logger.init_args.save_dir", str(tmp_path / "runs")),
            *("--ckpt_path", str(huge), "--trainer.max_epochs", "4"),
        )
    assert exit_info.value.code == 1
    assert f"at step 301 (epoch 3); the weights of checkpoint {huge} are likely unusable" in capsys.readouterr().err


def test_a_checkpoint_lightning_saves_on_the_error_is_named_in_the_message(tmp_path: Path) -> None:
    torch.manual_seed(0)
    model = LinearRegression(5, optimizer=lambda params: torch.optim.SGD(params, lr=10))
    on_error = OnExceptionCheckpoint(tmp_path)
    trainer = Trainer(
        max_epochs=1,
        logger=False,
        callbacks=[DivergenceGuard(), on_error],
        enable_progress_bar=False,
        enable_model_summary=False,
    )
    with pytest.raises(TrainingDivergedError) as raised:
        trainer.fit(model, SyntheticRegressionData())
    assert not isinstance(raised.value, ValueError)  # a failed run, not refused input (UserInputError)
    assert str(raised.value).endswith(
        f"Nothing was saved from that step on, but by OnExceptionCheckpoint, whose {on_error.ckpt_path} holds the"
        " diverged weights."
    )
    assert torch.load(on_error.ckpt_path, weights_only=True)["global_step"] == FIRST_INFINITE_STEP
