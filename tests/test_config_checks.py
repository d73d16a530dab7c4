"""The checks that need the built objects: optimizer and scheduler before training, precision, monitors."""

from __future__ import annotations

import math
import os
from functools import partial
from pathlib import Path

import pytest
import torch
from lightning.pytorch import Trainer
from lightning.pytorch.callbacks import EarlyStopping

from linreg.config_checks import CheckBeforeTraining, CheckedConfigFile, check_trainer, check_training_setup
from linreg.errors import ShortErrorParser
from linreg.model import LinearRegression
from linreg.trial import check_param_groups
from linreg.validation import UserInputError


def _model(optimizer: object, scheduler: object = None) -> LinearRegression:
    return LinearRegression(input_dim=3, optimizer=optimizer, scheduler=scheduler)  # type: ignore[arg-type]


@pytest.mark.parametrize(
    ("optimizer", "scheduler", "message"),
    [
        (partial(torch.optim.SGD, lr=0.0), None, r"^model\.optimizer: the learning rate must be .* got 0\.0$"),
        (partial(torch.optim.SGD, lr=math.nan), None, "the learning rate must be a finite number > 0, got nan"),
        (partial(torch.optim.SGD, lr=0.1, momentum=1.5), None, r"momentum must be in \[0, 1\), got 1\.5"),
        (partial(torch.optim.SGD, lr=1e39), None, r"^model\.optimizer \(SGD, lr 1e\+39\) at its first step: "),
        (partial(torch.optim.SparseAdam, lr=0.1), None, r"^model\.optimizer \(SparseAdam, lr 0\.1\) at its first step"),
        (partial(torch.optim.SGD, lr=0.1), partial(torch.optim.lr_scheduler.StepLR, step_size=0), "^model.scheduler"),
        (
            partial(torch.optim.SGD, lr=0.1),
            partial(torch.optim.lr_scheduler.ExponentialLR, gamma=-1.0),
            r"^model\.scheduler at epoch 1: the learning rate must be a finite number > 0, got -0\.1$",
        ),
        (
            partial(torch.optim.SGD, lr=0.1),
            partial(torch.optim.lr_scheduler.LambdaLR, lr_lambda=lambda epoch: 1.0 - epoch / 5),
            r"^model\.scheduler at epoch 5: the learning rate must be a finite number > 0, got 0\.0$",
        ),
    ],
)
def test_an_optimizer_or_scheduler_that_would_fail_mid_run_is_refused_before(
    optimizer: object, scheduler: object, message: str
) -> None:
    with pytest.raises(UserInputError, match=message):
        check_training_setup(_model(optimizer, scheduler), epochs=10)


def test_the_trial_step_leaves_the_model_untouched() -> None:
    model = _model(partial(torch.optim.SGD, lr=0.1, momentum=0.5))
    before = [p.detach().clone() for p in model.parameters()]
    check_training_setup(model, epochs=3)
    assert all(torch.equal(a, b) for a, b in zip(before, model.parameters(), strict=True))
    assert all(p.grad is None for p in model.parameters())


def test_a_scheduler_that_stays_positive_within_the_run_is_accepted() -> None:
    # LinearLR to zero only after 100 epochs: a 10-epoch run never meets it.
    scheduler = partial(torch.optim.lr_scheduler.LambdaLR, lr_lambda=lambda epoch: 1.0 - epoch / 100)
    check_training_setup(_model(partial(torch.optim.SGD, lr=0.1), scheduler), epochs=10)


def test_parameter_groups_are_named_when_there_are_several() -> None:
    with pytest.raises(UserInputError, match=r"^x \(parameter group 1\): momentum must be in \[0, 1\), got 1$"):
        check_param_groups([{"lr": 0.1, "momentum": 0.9}, {"lr": 0.1, "momentum": 1}], "x")


def test_a_precision_lightning_would_replace_is_refused() -> None:
    if torch.cuda.is_available():
        pytest.skip("16-mixed is honoured on a GPU")
    trainer = Trainer(accelerator="cpu", precision="16-mixed", logger=False, enable_checkpointing=False)
    with pytest.raises(UserInputError, match=r"^trainer\.precision '16-mixed' .* bf16-mixed"):
        check_trainer(trainer, "16-mixed")
    check_trainer(Trainer(accelerator="cpu", precision="bf16-mixed", logger=False), "bf16-mixed")


def test_several_machines_without_an_address_to_meet_at_are_refused(monkeypatch: pytest.MonkeyPatch) -> None:
    for name in ("MASTER_ADDR", "NODE_RANK"):
        monkeypatch.delenv(name, raising=False)
    trainer = Trainer(accelerator="cpu", devices=1, num_nodes=2, logger=False, enable_checkpointing=False)
    with pytest.raises(UserInputError, match=r"^trainer\.num_nodes 2: neither MASTER_ADDR nor NODE_RANK is set"):
        check_trainer(trainer, None)
    monkeypatch.setenv("NODE_RANK", "1")
    check_trainer(trainer, None)


def test_a_backend_the_device_lacks_is_refused() -> None:
    from lightning.pytorch.strategies import DDPStrategy

    trainer = Trainer(accelerator="cpu", devices=1, strategy=DDPStrategy(process_group_backend="nccl"), logger=False)
    with pytest.raises(UserInputError, match=r"^trainer\.strategy: process_group_backend 'nccl' cannot run"):
        check_trainer(trainer, None)


def test_a_monitor_that_names_no_logged_metric_is_refused_before_the_first_batch() -> None:
    model = _model(partial(torch.optim.SGD, lr=0.1))
    stopper = EarlyStopping(monitor="val/los")
    trainer = Trainer(accelerator="cpu", callbacks=[stopper], logger=False, enable_checkpointing=False)
    check = CheckBeforeTraining(lambda callback: "trainer.callbacks[0]")
    with pytest.raises(UserInputError, match=r"^trainer\.callbacks\[0\]\.monitor: 'val/los' is not a metric"):
        check.on_fit_start(trainer, model)
    stopper.monitor = "val/loss"
    check.on_fit_start(trainer, model)


@pytest.mark.parametrize(
    ("content", "message"),
    [
        (
            b"trainer:\n  max_epochs: [3\n",
            r"c\.yaml: not valid YAML: line 3, column 1: did not find expected ','",
        ),
        (b"trainer:\n\tmax_epochs: 3\n", r"c\.yaml: not valid YAML: line 2, column 1"),
        (bytes(range(256)), r"^--config: .* is not a text file \(byte 128 is not UTF-8\)$"),
        (("data: " + "[" * 5000 + "]" * 5000).encode(), "a YAML value is nested too deeply to read"),
        (b"x" * (1 << 24) + b"x", r"^--config: .*c\.yaml: 16777217 bytes, more than a config's 16777216$"),
    ],
    ids=["unclosed-list", "tab", "binary", "nested-too-deeply", "too-large"],
)
def test_a_config_file_that_is_not_yaml_text_is_refused_naming_it(content: bytes, message: str, tmp_path: Path) -> None:
    parser = ShortErrorParser(prog="p")
    parser.add_argument("--config", action=CheckedConfigFile)
    parser.add_argument("--trainer.max_epochs", type=int)
    parser.add_argument("--data", type=list)
    (tmp_path / "c.yaml").write_bytes(content)
    with pytest.raises(UserInputError, match=message):
        parser.parse_args(["--config", str(tmp_path / "c.yaml")])
    if hasattr(os, "mkfifo"):  # judged before it is opened: opening a FIFO waits for a writer
        os.mkfifo(tmp_path / "fifo")
        with pytest.raises(UserInputError, match=r"^--config: .*fifo: is a FIFO, not a regular file$"):
            CheckedConfigFile(option_strings=["--config"], dest="config")(parser, None, str(tmp_path / "fifo"))
