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


def fit_ddp(save_dir: Path, *extra: str, status: int = 0) -> subprocess.CompletedProcess[str]:
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
    assert result.returncode == status, result.stderr[-3000:]
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


def test_an_input_error_found_once_the_processes_run_is_one_line(tmp_path: Path) -> None:
    # The rows of a CSV file are read in prepare_data, by the first process only, after the second has started and
    # waits for it: the second must not add its own traceback (a lost connection) to the one-line answer.
    rows = [f"{i},{(i * 7) % 5},{2 * i + 1}" for i in range(40)]
    (tmp_path / "text.csv").write_text("x1,x2,y\n" + "\n".join([*rows[:2], "3,n/a,7", *rows[3:]]) + "\n")
    csv = ("--data", "CSVRegressionData", "--data.path", str(tmp_path / "text.csv"), "--data.target", "y")
    result = fit_ddp(tmp_path / "runs", *csv, status=2)
    errors = [line for line in result.stderr.splitlines() if "error" in line.lower()]
    assert errors == [f"linreg: error: {tmp_path / 'text.csv'}: line 4, column 'x2': 'n/a' is not a number"]
    assert "Traceback" not in result.stderr
    assert not (tmp_path / "runs").exists()


def _order(save_dir: Path, data_seed: int, global_seed: int) -> list[torch.Tensor]:
    """The targets each of 2 processes trained on in one epoch, in order, for the given seeds."""
    record = ("--trainer.callbacks+=tests.recording.RecordTargets", "--trainer.callbacks.directory", str(save_dir))
    fit_ddp(save_dir, *record, "--data.seed", str(data_seed), "--seed_everything", str(global_seed))
    return [torch.load(save_dir / f"rank{rank}.pt", weights_only=True) for rank in (0, 1)]


def test_data_seed_sets_the_shuffling_order_under_ddp(tmp_path: Path) -> None:
    orders = {
        (3, 0): _order(tmp_path / "a", data_seed=3, global_seed=0),
        (3, 1): _order(tmp_path / "b", data_seed=3, global_seed=1),
        (4, 0): _order(tmp_path / "c", data_seed=4, global_seed=0),
    }
    for rank in (0, 1):  # the global seed (model initialisation, ...) leaves the order alone
        assert torch.equal(orders[3, 0][rank], orders[3, 1][rank])
    # The order each data seed gives, worked out independently: the permutation drawn from seed + epoch
    # (DistributedSampler's convention), every second index to each process.
    for (seed, _), order in orders.items():
        data = SyntheticRegressionData(num_train=200, num_val=100, num_test=10, seed=seed)
        data.setup("fit")
        y = data.train_data[1].reshape(-1)
        for epoch in (0, 1):
            permutation = torch.randperm(200, generator=torch.Generator().manual_seed(seed + epoch))
            for rank in (0, 1):
                assert torch.equal(order[rank][epoch * 100 : (epoch + 1) * 100], y[permutation[rank::2]])
