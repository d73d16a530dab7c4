"""A checkpoint is admitted only if everything restored from it fits this run; else one line names the entry.

One real checkpoint is written by a small fit (SGD with momentum, a scheduler, averaged weights, early
stopping); each case changes one entry of a copy and hands it to ``admit`` with the objects of a run
built, not run, by the command line.
"""

from __future__ import annotations

import copy
import os
import re
import sys
from functools import partial
from pathlib import Path
from typing import Any
from unittest import mock

import pytest
import torch

from linreg.checkpointing.admission import admit
from linreg.checkpointing.io import AtomicCheckpointIO
from linreg.cli import build_cli
from linreg.config_checks import check_training_setup
from linreg.constraints import CHECKPOINT, CONFIG, OPTIMIZER
from linreg.data import SyntheticRegressionData
from linreg.model import LinearRegression
from linreg.validation import UserInputError
from tests.conftest import D2L_CONFIG, run_cli
from tests.test_constraints import inside, outside

TRAINING = (
    "--data.num_train", "60", "--data.num_val", "20", "--trainer.max_epochs", "2",
    "--model.optimizer", "SGD", "--model.optimizer.lr", "0.03", "--model.optimizer.momentum", "0.9",
    "--model.scheduler", "StepLR", "--model.scheduler.step_size", "1",
    "--trainer.callbacks+=AveragedSGD", "--trainer.callbacks.start", "0.4",
    "--trainer.callbacks+=EarlyStopping", "--trainer.callbacks.monitor", "val/loss",
)  # fmt: skip
PATH = "runs/x/last.ckpt"


@pytest.fixture(scope="module")
def written(tmp_path_factory: pytest.TempPathFactory) -> dict[str, Any]:
    """The last.ckpt of a small fit."""
    save_dir = tmp_path_factory.mktemp("admission")
    run_cli("fit", "--config", str(D2L_CONFIG), "--trainer.logger.init_args.save_dir", str(save_dir), *TRAINING)
    return torch.load(save_dir / "d2l" / "version_0" / "checkpoints" / "last.ckpt", weights_only=True)


def build(*args: str) -> Any:
    """A run of the same configuration, its objects built and nothing restored."""
    with mock.patch.object(sys, "argv", ["linreg"]):  # pytest's own arguments are not ours
        return build_cli(["--config", str(D2L_CONFIG), "--trainer.logger", "false", *TRAINING, *args], run=False)


@pytest.fixture(scope="module")
def run() -> Any:
    return build()


def admitted(checkpoint: dict[str, Any], run: Any, subcommand: str = "fit") -> dict[str, Any]:
    return admit(PATH, checkpoint, subcommand, run.trainer, run.model, run.datamodule)


def _set(checkpoint: dict[str, Any], where: tuple[Any, ...], value: Any) -> None:
    for key in where[:-1]:
        checkpoint = checkpoint[key]
    checkpoint[where[-1]] = value


GROUP = ("optimizer_states", 0, "param_groups", 0)
MOMENTUM = ("optimizer_states", 0, "state", 0, "momentum_buffer")
AVERAGED = ("callbacks", "AveragedSGD", "averaged")
STOPPING = "EarlyStopping{'monitor': 'val/loss', 'mode': 'min'}"
FIT_LOOP = ("loops", "fit_loop")
# (entry changed, new value, what the message must say after "ckpt_path runs/x/last.ckpt: ")
CASES: list[tuple[str, tuple[Any, ...], Any, str]] = [
    ("momentum", (*GROUP, "momentum"), 1.0, "optimizer_states[0].param_groups[0].momentum must be in [0, 1), got 1.0"),
    (
        "lr-negative",
        (*GROUP, "lr"),
        -0.1,
        "optimizer_states[0].param_groups[0].lr must be a finite number >= 0, got -0.1",
    ),
    (
        "initial-lr",
        (*GROUP, "initial_lr"),
        0.0,
        "optimizer_states[0].param_groups[0].initial_lr must be a finite number > 0, got 0.0",
    ),
    ("lr-nan", (*GROUP, "lr"), float("nan"), "param_groups[0].lr must be a finite number, got nan"),
    ("lr-inf", (*GROUP, "lr"), float("inf"), "param_groups[0].lr must be a finite number, got inf"),
    (
        "weight-decay",
        (*GROUP, "weight_decay"),
        -1.0,
        "param_groups[0].weight_decay must be exactly 0, got -1.0: it would decay the bias too; give"
        " --model.weight_decay",
    ),
    ("nesterov", (*GROUP, "nesterov"), 1, "param_groups[0].nesterov must be true or false, got 1"),
    ("no-optimizer-state", ("optimizer_states",), [], "optimizer_states must hold 1 states (this run's: SGD), got []"),
    ("state-nan", MOMENTUM, torch.full((1, 5), float("nan")), "momentum_buffer must hold finite numbers, got nan at"),
    ("state-shape", MOMENTUM, torch.zeros(3), "state[0].momentum_buffer must have shape [1, 5], got [3]"),
    ("state-foreign", (*MOMENTUM[:-1], "exp_avg"), torch.zeros(1, 5), "state[0] must hold ['momentum_buffer'], got"),
    ("state-of-no-parameter", ("optimizer_states", 0, "state", 7), {}, "state[7] belongs to no parameter"),
    (
        "scheduler-epoch",
        ("lr_schedulers", 0, "last_epoch"),
        -2,
        "lr_schedulers[0].last_epoch must be an integer >= -1, got -2",
    ),
    ("scheduler-float", ("lr_schedulers", 0, "last_epoch"), 1.5, "last_epoch must be an integer, got 1.5"),
    ("scheduler-gamma", ("lr_schedulers", 0, "gamma"), float("nan"), "lr_schedulers[0].gamma must be a finite number"),
    (
        "scheduler-lrs",
        ("lr_schedulers", 0, "base_lrs"),
        [0.0],
        "lr_schedulers[0].base_lrs[0] must be a finite number > 0, got 0.0",
    ),
    ("scheduler-extra", ("lr_schedulers", 0, "optimizer"), "x", "lr_schedulers[0] must hold ["),
    ("schedulers-not-a-list", ("lr_schedulers",), {}, "lr_schedulers must hold 1 states"),
    ("global-step", ("global_step",), -1, "global_step must be an integer >= 0, got -1"),
    ("epoch", ("epoch",), 1.0, "epoch must be an integer >= 0, got 1.0"),
    (
        "loop-counter",
        (*FIT_LOOP, "epoch_progress", "current", "processed"),
        -1,
        "current.processed must be an integer >= 0",
    ),
    ("loop-flag", (*FIT_LOOP, "epoch_loop.batch_progress", "is_last_batch"), "yes", "must be true or false, got 'yes'"),
    ("loop-missing", FIT_LOOP, {}, "loops.fit_loop must hold ["),
    (
        "position",
        (*FIT_LOOP, "state_dict", "combined_loader", 0, "batches_done"),
        -3,
        "batches_done must be an integer >= 0",
    ),
    (
        "position-epoch",
        (*FIT_LOOP, "state_dict", "combined_loader", 0, "epoch"),
        -1,
        "[0].epoch must be an integer >= 0, got -1",
    ),
    ("positions", (*FIT_LOOP, "state_dict", "combined_loader"), [{}, {}], "combined_loader must be a list of at most"),
    ("callbacks-a-list", ("callbacks",), [], "callbacks must be a dict of dicts"),
    ("averaged-negative", AVERAGED, -1, "callbacks.AveragedSGD.averaged must be an integer >= 0, got -1"),
    ("averaged-float", AVERAGED, 2.5, "callbacks.AveragedSGD.averaged must be an integer, got 2.5"),
    ("patience", ("callbacks", STOPPING, "wait_count"), -1, ".wait_count must be an integer >= 0, got -1"),
    (
        "best-score",
        ("callbacks", STOPPING, "best_score"),
        torch.tensor(float("nan")),
        "best_score must hold numbers other than NaN, got nan",
    ),
    ("stopping-reason", ("callbacks", STOPPING, "stopping_reason"), 9, "stopping_reason must be one of"),
    ("version-missing", ("pytorch-lightning_version",), None, "pytorch-lightning_version must be a version"),
    ("version-garbage", ("pytorch-lightning_version",), "not-a-version", "must be a version such as"),
    ("weights-complex", ("state_dict", "net.0.weight"), torch.zeros(1, 5, dtype=torch.complex64), "real numbers"),
    ("weights-sparse", ("state_dict", "net.0.bias"), torch.zeros(1).to_sparse(), "must be a dense tensor, got a torch"),
    (
        "weights-int",
        ("state_dict", "net.0.bias"),
        torch.zeros(1, dtype=torch.long),
        "floating-point tensor, got torch.int64",
    ),
    ("weights-nan", ("state_dict", "net.0.weight"), torch.tensor([[0.0, float("nan"), 0, 0, 0]]), "got nan at [0, 1]"),
    ("iterate-inf", ("current_model_state", "net.0.bias"), torch.tensor([float("inf")]), "current_model_state['net.0"),
    ("weights-foreign", ("state_dict", "net.1.weight"), torch.zeros(1), "was written by another kind of model"),
    ("weights-a-string", ("state_dict", "net.0.bias"), "x", "state_dict['net.0.bias'] must be a tensor, got 'x'"),
]


@pytest.mark.parametrize(("where", "value", "message"), [c[1:] for c in CASES], ids=[c[0] for c in CASES])
def test_an_entry_out_of_range_is_refused_naming_the_file_the_entry_and_the_value(
    written: dict[str, Any], run: Any, where: tuple[Any, ...], value: Any, message: str
) -> None:
    checkpoint = copy.deepcopy(written)
    _set(checkpoint, where, value)
    with pytest.raises(UserInputError) as refused:
        admitted(checkpoint, run)
    assert str(refused.value).startswith(f"ckpt_path {PATH}: ")
    assert message in str(refused.value)
    assert "\n" not in str(refused.value)


@pytest.mark.parametrize(
    ("left_out", "message"),
    [
        (("loops",), "lacks loops: fit cannot resume from it"),
        (("optimizer_states", "lr_schedulers"), "lacks optimizer_states, lr_schedulers: fit cannot resume from it"),
        (("optimizer_states", "loops"), "holds the weights only (save_weights_only); fit cannot resume from it"),
    ],
)
def test_fit_resumes_only_from_a_full_training_state(
    written: dict[str, Any], run: Any, left_out: tuple[str, ...], message: str
) -> None:
    checkpoint = {k: v for k, v in copy.deepcopy(written).items() if k not in left_out}
    with pytest.raises(UserInputError, match=re.escape(f"ckpt_path {PATH}: {message}")):
        admitted(checkpoint, run)


def test_the_checkpoint_of_the_fit_is_admitted_and_handed_to_lightning(written: dict[str, Any], run: Any) -> None:
    checkpoint = copy.deepcopy(written)
    assert admitted(checkpoint, run) is checkpoint
    io = run.trainer.strategy.checkpoint_io
    assert isinstance(io, AtomicCheckpointIO)
    assert io.load_checkpoint(PATH) is checkpoint  # restored as checked, not read again
    assert io.admitted is None


@pytest.mark.parametrize("subcommand", ["validate", "test", "predict"])
def test_evaluation_needs_no_training_state_but_a_version(written: dict[str, Any], run: Any, subcommand: str) -> None:
    weights = {k: copy.deepcopy(written[k]) for k in ("state_dict", "pytorch-lightning_version")}
    admitted(weights, run, subcommand)
    del weights["pytorch-lightning_version"]
    with pytest.raises(UserInputError, match=r"lacks pytorch-lightning_version: Lightning cannot restore it"):
        admitted(weights, run, subcommand)


def test_a_checkpoint_of_adam_settings_is_checked_against_adam(written: dict[str, Any]) -> None:
    adam = build("--model.optimizer", "Adam", "--model.optimizer.lr", "0.01")
    checkpoint = copy.deepcopy(written)
    with pytest.raises(UserInputError, match=r"was trained with another optimizer \(it has dampening, momentum"):
        admitted(checkpoint, adam)
    optimizer = adam.model.configure_optimizers()["optimizer"]
    checkpoint["optimizer_states"] = [optimizer.state_dict()]
    checkpoint["optimizer_states"][0]["param_groups"][0]["betas"] = (0.9, 1.0)
    with pytest.raises(UserInputError, match=re.escape("param_groups[0].betas[1] must be in [0, 1), got 1.0")):
        admitted(checkpoint, adam)


def test_a_learning_rate_of_zero_is_refused_where_no_scheduler_sets_it(written: dict[str, Any]) -> None:
    unscheduled = build("--model.scheduler", "null")
    checkpoint = {**copy.deepcopy(written), "lr_schedulers": []}
    del checkpoint["optimizer_states"][0]["param_groups"][0]["initial_lr"]
    admitted(copy.deepcopy(checkpoint), unscheduled)
    _set(checkpoint, (*GROUP, "lr"), 0.0)
    with pytest.raises(UserInputError, match=re.escape("param_groups[0].lr must be a finite number > 0, got 0")):
        admitted(checkpoint, unscheduled)


@pytest.fixture(scope="module")
def table(tmp_path_factory: pytest.TempPathFactory) -> Path:
    path = tmp_path_factory.mktemp("table") / "five.csv"
    rows = [",".join(str((i * k) % 7) for k in range(1, 7)) for i in range(30)]
    path.write_text("x1,x2,x3,x4,x5,y\n" + "\n".join(rows) + "\n")
    return path


@pytest.fixture(scope="module")
def csv(table: Path) -> Any:
    return build("--data", "CSVRegressionData", "--data.path", str(table), "--data.target", "y")


def _with_statistics(checkpoint: dict[str, Any], filed_as: str, **changes: Any) -> dict[str, Any]:
    """``checkpoint`` with the standardisation of a fit on ``table`` filed under ``filed_as``."""
    state = {"target": "y", "features": [f"x{i}" for i in range(1, 6)], "y_mean": 3.0, "y_std": 2.0}
    state |= {"x_mean": torch.full((5,), 3.0, dtype=torch.float64), "x_std": torch.ones(5, dtype=torch.float64)}
    return {**copy.deepcopy(checkpoint), filed_as: state | changes}


@pytest.mark.parametrize(
    ("changes", "message"),
    [
        (
            {"x_std": torch.tensor([1.0, 0.0, 1, 1, 1], dtype=torch.float64)},
            "x_std must hold values, each a finite number > 0, got 0.0",
        ),
        ({"y_std": 0.0}, "CSVRegressionData.y_std must be a finite number > 0, got 0.0"),
        ({"y_mean": float("nan")}, "CSVRegressionData.y_mean must be a finite number, got nan"),
        ({"x_mean": torch.zeros(3, dtype=torch.float64)}, "x_mean must have shape [5], got [3]"),
        ({"target": "x1"}, "was trained to predict 'x1' from ['x1', 'x2', 'x3', 'x4', 'x5']; this run asks for 'y'"),
    ],
    ids=["x-std-zero", "y-std-zero", "y-mean-nan", "x-mean-shape", "other-target"],
)
def test_a_standardisation_that_cannot_be_applied_is_refused(
    written: dict[str, Any], csv: Any, changes: dict[str, Any], message: str
) -> None:
    with pytest.raises(UserInputError) as refused:
        admitted(_with_statistics(written, "CSVRegressionData", **changes), csv, "predict")
    assert message in str(refused.value)


def test_csv_and_table_data_are_one_kind_and_the_statistics_are_filed_for_lightning(
    written: dict[str, Any], table: Path, csv: Any, run: Any
) -> None:
    as_table = build("--data", "TableRegressionData", "--data.path", str(table), "--data.target", "y")
    checkpoint = admitted(_with_statistics(written, "CSVRegressionData"), as_table, "predict")
    assert "CSVRegressionData" not in checkpoint
    assert checkpoint["TableRegressionData"]["target"] == "y"  # where Lightning looks for it
    assert "CSVRegressionData" in admitted(_with_statistics(written, "TableRegressionData"), csv, "test")
    with pytest.raises(UserInputError, match="was trained on CSVRegressionData data"):
        admitted(_with_statistics(written, "CSVRegressionData"), run, "test")  # synthetic data


@pytest.mark.slow
def test_the_command_line_refuses_in_one_line_and_writes_nothing(
    written: dict[str, Any], tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    checkpoint = copy.deepcopy(written)
    _set(checkpoint, (*GROUP, "momentum"), 2.0)
    torch.save(checkpoint, tmp_path / "bad.ckpt")
    save_dir = tmp_path / "runs"
    with pytest.raises(SystemExit) as exit_info:
        run_cli(
            "fit", "--config", str(D2L_CONFIG), "--trainer.logger.init_args.save_dir", str(save_dir), *TRAINING,
            "--ckpt_path", str(tmp_path / "bad.ckpt"),
        )  # fmt: skip
    assert exit_info.value.code == 2
    err = capsys.readouterr().err
    assert "Traceback" not in err
    assert [line for line in err.splitlines() if ": error: " in line] == [
        f"linreg: error: ckpt_path {tmp_path / 'bad.ckpt'}: optimizer_states[0].param_groups[0].momentum must be in"
        " [0, 1), got 2.0"
    ]
    assert sorted(os.listdir(tmp_path)) == ["bad.ckpt"]  # no run directory, not even an empty one


# SGD's settings, as a config gives them and as a checkpoint holds them: from each rule of the table, values just
# outside it and inside it; and an lr beyond float32, which no rule says (the trial step finds it).
SGD_SETTINGS = ("lr", "momentum", "dampening", "weight_decay")
SETTINGS = [(key, v) for key in SGD_SETTINGS for v in (*outside(OPTIMIZER[key]), *inside(OPTIMIZER[key]))]
SETTINGS.append(("lr", 1e40))


def test_the_config_and_a_checkpoint_refuse_exactly_the_same_optimizer_settings(
    written: dict[str, Any], run: Any
) -> None:
    assert set(SGD_SETTINGS) <= set(written["optimizer_states"][0]["param_groups"][0])  # all that SGD has
    refused_by: dict[str, set[tuple[str, float]]] = {"config": set(), "checkpoint": set()}
    for key, value in SETTINGS:
        optimizer = partial(torch.optim.SGD, **{"lr": 0.03, "momentum": 0.9, key: value})
        try:
            check_training_setup(LinearRegression(input_dim=5, optimizer=optimizer), epochs=1)  # type: ignore[arg-type]
        except UserInputError:
            refused_by["config"].add((key, value))
        checkpoint = copy.deepcopy(written)
        group = checkpoint["optimizer_states"][0]["param_groups"][0]
        group.update({key: value} if key != "lr" else {"lr": value, "initial_lr": value})  # as the config set it
        try:
            admitted(checkpoint, run)
        except UserInputError:
            refused_by["checkpoint"].add((key, value))
    out_of_rule = {(key, v) for key, v in SETTINGS if not OPTIMIZER[key].holds(v)}
    assert refused_by["config"] == refused_by["checkpoint"] == out_of_rule | {("lr", 1e40)}


def test_the_config_and_a_checkpoint_refuse_exactly_the_same_batch_sizes(written: dict[str, Any], run: Any) -> None:
    rule = CONFIG["data.batch_size"]
    assert CHECKPOINT["loops.fit_loop.state_dict.combined_loader[].batch_size"] is rule
    for value in (*outside(rule), *inside(rule)):
        checkpoint = copy.deepcopy(written)
        checkpoint["loops"]["fit_loop"]["state_dict"]["combined_loader"][0]["batch_size"] = value
        by_checkpoint = by_config = False
        try:
            admitted(checkpoint, run)
        except UserInputError:
            by_checkpoint = True
        try:
            SyntheticRegressionData(batch_size=value)
        except UserInputError:
            by_config = True
        assert by_checkpoint == by_config == (not rule.holds(value)), value
