"""Two processes (DDP over gloo, on the CPU): the data are shared out, metrics combined, outputs written once.

Lightning's DDP launcher starts the other processes by running the command line again, so these tests
run ``python -m linreg`` as a subprocess.
"""

from __future__ import annotations

import subprocess
import sys
from pathlib import Path

import pytest
import torch
from lightning.pytorch import Trainer
from tensorboard.backend.event_processing.event_accumulator import EventAccumulator

from linreg import LinearRegression, SyntheticRegressionData
from tests.conftest import D2L_CONFIG, ROOT

pytestmark = pytest.mark.slow

# 200 training examples in batches of 10 over 2 processes: 10 steps per epoch; 100 validation examples.
DATA = ("--data.num_train", "200", "--data.num_val", "100", "--data.num_test", "10")
DDP = ("--trainer.strategy", "ddp", "--trainer.devices", "2", "--trainer.accelerator", "cpu")


def fit_ddp(save_dir: Path, *extra: str) -> subprocess.CompletedProcess[str]:
    result = subprocess.run(
        [
            *(sys.executable, "-m", "linreg", "fit", "--config", str(D2L_CONFIG)),
            *("--trainer.logger.init_args.save_dir", str(save_dir), "--trainer.max_epochs", "2"),
            *("--trainer.log_every_n_steps", "1", *DATA, *DDP, *extra),
        ],
        capture_output=True,
        text=True,
        timeout=300,
        check=False,
        cwd=ROOT,
    )
    assert result.returncode == 0, result.stderr[-3000:]
    return result


@pytest.fixture(scope="module")
def ddp_run(tmp_path_factory: pytest.TempPathFactory) -> tuple[Path, str]:
    """A 2-process fit that also keeps a checkpoint every 7 steps; returns its directory and its output."""
    save_dir = tmp_path_factory.mktemp("ddp")
    keep = ("--trainer.callbacks+=ModelCheckpoint", "--trainer.callbacks.dirpath", str(save_dir / "kept"))
    keep += ("--trainer.callbacks.every_n_train_steps", "7", "--trainer.callbacks.save_top_k", "-1")
    keep += ("--trainer.callbacks.filename", "{step}")
    result = fit_ddp(save_dir, *keep)
    return save_dir / "d2l" / "version_0", result.stdout


def test_each_process_trains_on_half_of_the_data(ddp_run: tuple[Path, str]) -> None:
    run_dir, _ = ddp_run
    checkpoint = torch.load(run_dir / "checkpoints" / "last.ckpt", weights_only=True)
    assert checkpoint["global_step"] == 2 * 200 // (10 * 2)  # 2 epochs of 100 examples per process


def test_report_logs_and_checkpoints_are_written_once(ddp_run: tuple[Path, str]) -> None:
    run_dir, printed = ddp_run
    assert printed.count("largest |SGD-OLS|/SE:") == 1
    assert printed.count("epoch 1, loss") == printed.count("epoch 2, loss") == 1
    assert [p.name for p in run_dir.parent.iterdir()] == ["version_0"]
    assert len(list(run_dir.glob("events.out.tfevents.*"))) == 1
    assert (run_dir / "config.yaml").is_file()


def test_validation_metrics_equal_one_process_validating_the_saved_weights(ddp_run: tuple[Path, str]) -> None:
    run_dir, _ = ddp_run
    events = EventAccumulator(str(run_dir))
    events.Reload()
    logged = {key: events.Scalars(key)[-1].value for key in ("val/loss", "val/mae", "val/r2")}

    data = SyntheticRegressionData(num_train=200, num_val=100, num_test=10)
    data.setup("fit")
    model = LinearRegression(input_dim=5)
    model.load_state_dict(torch.load(run_dir / "checkpoints" / "last.ckpt", weights_only=True)["state_dict"])
    trainer = Trainer(accelerator="cpu", devices=1, logger=False, enable_progress_bar=False, enable_model_summary=False)
    (one_process,) = trainer.validate(model, data, verbose=False)
    X, y = (t.double() for t in data.val_data)
    residual = X @ model.weight.double() + model.bias.double() - y.squeeze(1)  # independent of torchmetrics
    for key, value in logged.items():
        assert value == pytest.approx(one_process[key], rel=1e-5), key
    assert logged["val/loss"] == pytest.approx(float((residual**2).mean()), rel=1e-5)
    assert logged["val/mae"] == pytest.approx(float(residual.abs().mean()), rel=1e-5)


def test_two_processes_resume_mid_epoch_bit_identically(ddp_run: tuple[Path, str]) -> None:
    run_dir, _ = ddp_run
    save_dir = run_dir.parent.parent
    fit_ddp(save_dir, "--ckpt_path", str(save_dir / "kept" / "step=7.ckpt"))  # step 7 of 10 in epoch 0
    expected = torch.load(run_dir / "checkpoints" / "last.ckpt", weights_only=True)
    resumed = torch.load(save_dir / "d2l" / "version_1" / "checkpoints" / "last.ckpt", weights_only=True)
    assert resumed["global_step"] == expected["global_step"]
    for name, tensor in expected["state_dict"].items():
        assert torch.equal(tensor, resumed["state_dict"][name]), name
