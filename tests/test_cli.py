"""The command line end to end: the d2l run, its outputs on disk, config round trips, bad input."""

from __future__ import annotations

import json
import os
import re
import subprocess
import sys
import threading
import warnings
from pathlib import Path

import numpy as np
import pytest
import torch
import yaml
from jsonargparse import ActionConfigFile
from tensorboard.backend.event_processing.event_accumulator import EventAccumulator

from linreg.data import SyntheticRegressionData
from linreg.errors import ShortErrorParser, nearest_keys
from tests.conftest import D2L_CONFIG, ROOT, final_params, fit_d2l, run_cli

TRUE_W = torch.tensor([2.0, -3.4, 5.6, 3.2, -0.6])
TRUE_B = 4.2


def test_d2l_run_recovers_w_and_b(d2l_run: Path) -> None:
    params = final_params(d2l_run)
    assert (params["net.0.weight"].reshape(-1) - TRUE_W).abs().max() < 5e-3
    assert abs(params["net.0.bias"].item() - TRUE_B) < 5e-3


def test_run_directory_holds_events_config_and_checkpoints(d2l_run: Path) -> None:
    assert (d2l_run / "config.yaml").is_file()
    assert (d2l_run / "checkpoints" / "last.ckpt").is_file()
    assert list((d2l_run / "checkpoints").glob("best-*.ckpt"))
    events = EventAccumulator(str(d2l_run))
    events.Reload()
    tags = events.Tags()["scalars"]
    assert {"train/loss", "val/loss"} <= set(tags)
    val_loss = [e.value for e in events.Scalars("val/loss")]
    assert len(val_loss) == 3  # one per epoch
    assert val_loss[-1] < 3e-4  # noise_std**2 = 1e-4 is the floor


def test_two_runs_of_one_config_give_identical_parameters(d2l_run: Path, tmp_path: Path) -> None:
    again = fit_d2l(tmp_path)
    first, second = final_params(d2l_run), final_params(again)
    for name in first:
        assert torch.equal(first[name], second[name]), name


def test_running_the_same_command_twice_writes_a_new_version(tmp_path: Path) -> None:
    args = ("--trainer.max_epochs", "1", "--data.num_train", "50")
    fit_d2l(tmp_path, *args)
    fit_d2l(tmp_path, *args)
    runs = sorted(p.name for p in (tmp_path / "d2l").iterdir())
    assert runs == ["version_0", "version_1"]


def test_output_reads_like_the_book_then_the_report(tmp_path: Path, capsys: pytest.CaptureFixture[str]) -> None:
    run_dir = fit_d2l(tmp_path, "--trainer.max_epochs", "2")
    out = capsys.readouterr().out
    # The book: `print(f"epoch {epoch + 1}, loss {l:f}")` with l the loss on the whole training set.
    epochs = re.findall(r"^epoch (\d+), loss (\d\.\d{6})  val/loss \S+  val/r2 \S+$", out, re.MULTILINE)
    assert [epoch for epoch, _ in epochs] == ["1", "2"]
    data = SyntheticRegressionData(**yaml.safe_load(D2L_CONFIG.read_text())["data"]["init_args"])
    data.setup("fit")
    X, y = data.train_data
    params = final_params(run_dir)
    w, b = params["net.0.weight"].reshape(-1), params["net.0.bias"]
    assert float(epochs[-1][1]) == pytest.approx(torch.mean((X @ w + b - y.reshape(-1)) ** 2).item(), abs=1e-6)
    # Then `error in estimating w: {true_w - w}` and `... b: {true_b - b}`, as torch prints them.
    assert f"error in estimating w: {TRUE_W - w}" in out
    assert f"error in estimating b: {TRUE_B - b.reshape(1)}" in out
    assert out.index("error in estimating b") < out.index("w[x4]")  # the richer table follows


def test_print_config_round_trips(tmp_path: Path, capsys: pytest.CaptureFixture[str]) -> None:
    with pytest.raises(SystemExit) as exit_info:
        run_cli("fit", "--config", str(D2L_CONFIG), "--print_config")
    assert exit_info.value.code in (0, None)
    printed = capsys.readouterr().out
    config_file = tmp_path / "printed.yaml"
    config_file.write_text(printed)
    with pytest.raises(SystemExit):
        run_cli("fit", "--config", str(config_file), "--print_config")
    assert yaml.safe_load(capsys.readouterr().out) == yaml.safe_load(printed)
    assert yaml.safe_load(printed)["model"]["init_args"]["optimizer"]["init_args"]["lr"] == 0.03


def test_three_true_weights_give_a_three_input_model(tmp_path: Path) -> None:
    run_dir = fit_d2l(tmp_path, "--data.true_w", "[1.0, 2.0, 3.0]", "--trainer.max_epochs", "1")
    assert final_params(run_dir)["net.0.weight"].shape == (1, 3)


def test_optimizer_is_chosen_on_the_command_line(tmp_path: Path) -> None:
    run_dir = fit_d2l(tmp_path, "--model.optimizer", "Adam", "--model.optimizer.lr", "0.05")
    checkpoint = torch.load(run_dir / "checkpoints" / "last.ckpt", weights_only=True)
    assert "exp_avg" in checkpoint["optimizer_states"][0]["state"][0]  # Adam's state, not SGD's


def test_no_more_examples_than_coefficients_are_judged_against_the_minimum_norm_solution(tmp_path: Path) -> None:
    run = fit_d2l(tmp_path, "--data.num_train", "6")  # 6 examples, 6 coefficients: least squares is not unique
    report = json.loads((run / "report.json").read_text())
    assert report["reference"]["kind"] == "minimum-norm least squares"
    data = SyntheticRegressionData(num_train=6)
    data.setup("fit")
    X, y = (t.double().numpy() for t in data.train_data)
    expected = np.linalg.lstsq(np.hstack([X, np.ones((6, 1))]), y[:, 0], rcond=None)[0]  # numpy's minimum norm
    assert [row["ols"] for row in report["parameters"]] == pytest.approx(expected.tolist(), rel=1e-6, abs=1e-9)
    assert all(row["ols_se"] is None for row in report["parameters"])  # no standard errors: nothing to scale them


@pytest.mark.slow  # a whole process or several fits: seconds
def test_console_script_is_installed() -> None:
    script = Path(sys.executable).parent / "linreg"
    result = subprocess.run([str(script), "--help"], capture_output=True, text=True, check=False, cwd=ROOT)
    assert result.returncode == 0
    assert "fit" in result.stdout


def test_fit_runs_without_a_config_as_the_books_run(tmp_path: Path) -> None:
    run_cli("fit", "--data.num_train", "20", "--trainer.logger.init_args.save_dir", str(tmp_path))
    checkpoint = torch.load(tmp_path / "linreg" / "version_0" / "checkpoints" / "last.ckpt", weights_only=True)
    assert checkpoint["epoch"] == 2  # 3 epochs, counted from 0
    assert checkpoint["optimizer_states"][0]["param_groups"][0]["lr"] == 0.03


def _help(capsys: pytest.CaptureFixture[str], *args: str, flag: str = "--help-all") -> str:
    with pytest.raises(SystemExit) as exit_info:
        run_cli("fit", *args, flag)
    assert exit_info.value.code == 0
    return capsys.readouterr().out


def _option(text: str, option: str) -> str:
    """The help entry of ``option``, its lines joined."""
    entry = re.search(rf"^  {re.escape(option)} .*?(?=^  -|^\S|\Z)", text, re.MULTILINE | re.DOTALL)
    assert entry is not None, option
    return " ".join(entry.group(0).split())


@pytest.mark.parametrize(
    ("args", "values"),
    [
        ((), {"data.batch_size": 10, "model.optimizer.lr": 0.03}),  # the book's run, the defaults without config
        (("--config", str(D2L_CONFIG)), {"data.batch_size": 10, "model.optimizer.lr": 0.03}),
        (
            ("--config", str(ROOT / "configs" / "csv.yaml")),
            {"data.path": "configs/houses.csv", "data.batch_size": "auto", "model.optimizer.lr": 0.01},
        ),
        (
            ("--data", "CSVRegressionData", "--model.optimizer", "Adam", "--model.optimizer.lr", "0.1"),
            # batch_size: the default data module's 10, which jsonargparse carries over to the class named
            {"data.path": None, "data.batch_size": 10, "model.optimizer.lr": 0.1},
        ),
    ],
    ids=["no-config", "d2l", "csv", "chosen-on-the-command-line"],
)
def test_print_config_gives_the_chosen_classes_arguments_with_this_commands_values(
    capsys: pytest.CaptureFixture[str], args: tuple[str, ...], values: dict[str, object]
) -> None:
    printed = yaml.safe_load(_help(capsys, *args, flag="--print_config"))
    for key, value in values.items():
        group, *path = key.split(".")
        found = printed[group]["init_args"]
        for part in path:
            found = found[part]["init_args"] if isinstance(found[part], dict) else found[part]
        assert found == value, key


@pytest.mark.parametrize(
    ("config", "data_keys"),
    [(D2L_CONFIG, ("true_w", "batch_size")), (ROOT / "configs" / "csv.yaml", ("path", "target", "batch_size"))],
    ids=["d2l", "csv"],
)
def test_fit_help_shows_the_options_most_runs_set_first_with_the_configs_values(
    capsys: pytest.CaptureFixture[str], config: Path, data_keys: tuple[str, ...]
) -> None:
    lines = _help(capsys, "--config", str(config), "--trainer.max_epochs", "7", flag="--help").splitlines()
    # `  --key value  help text`: the value runs to the two spaces before the help
    shown = {m[1]: (i, m[2]) for i, line in enumerate(lines) if (m := re.match(r"  --(\S+) (.+?)(?:  |$)", line))}
    given = yaml.safe_load(config.read_text())
    expected = {f"data.{key}": given["data"]["init_args"][key] for key in data_keys}
    expected |= {
        "model.optimizer": given["model"]["optimizer"]["class_path"],
        "model.optimizer.lr": given["model"]["optimizer"]["init_args"]["lr"],
        "model.scheduler": None,
        "trainer.max_epochs": 7,  # the command line's, over the config's
        "trainer.accelerator": given["trainer"].get("accelerator", "auto"),
        "ckpt_path": None,
    }
    for key, value in expected.items():
        line, text = shown[key]
        assert line < 60, key
        assert yaml.safe_load(text) == value, key  # shown as a config file would give it
    assert "trainer.devices" in shown
    assert len(lines) < 60
    described = {m[1] for line in lines if (m := re.match(r"  --(\S+) .+?  +\S", line))}
    assert described == set(shown), set(shown) - described  # every option shown says what it does


def test_every_option_is_one_flag_away(capsys: pytest.CaptureFixture[str]) -> None:
    for args, option in (
        (("--help-all",), "--trainer.enable_progress_bar"),
        (("--data.help", "SyntheticRegressionData"), "--data.num_train"),
        (("--model.optimizer.help", "SGD"), "--optimizer.momentum"),
    ):
        with pytest.raises(SystemExit):
            run_cli("fit", "--config", str(D2L_CONFIG), *args)
        assert _option(capsys.readouterr().out, option)


@pytest.mark.slow  # a whole process or several fits: seconds
def test_a_class_help_is_named_for_the_program() -> None:
    result = subprocess.run(
        [sys.executable, "-m", "linreg", "fit", "--data.help", "CSVRegressionData"],
        capture_output=True, text=True, check=False,
    )  # fmt: skip
    assert result.returncode == 0, result.stderr
    assert result.stdout.startswith("usage: linreg ")


def test_a_fit_without_a_config_uses_the_books_seed_without_a_warning(tmp_path: Path) -> None:
    with warnings.catch_warnings(record=True) as caught:
        warnings.simplefilter("always")
        run_cli("fit", "--trainer.max_epochs", "1", "--data.num_train", "60", f"--trainer.default_root_dir={tmp_path}",
                "--trainer.logger.init_args.save_dir", str(tmp_path))  # fmt: skip
    assert not [w for w in caught if "seed" in str(w.message).lower()]
    config = yaml.safe_load(next(tmp_path.rglob("config.yaml")).read_text())
    assert config["seed_everything"] == 0  # configs/d2l.yaml's


class _Data:
    """A class group's arguments, for the parser's tests."""

    def __init__(self, batch_size: int = 10, learning_rate: float = 0.1) -> None:
        self.batch_size, self.learning_rate = batch_size, learning_rate


def _refusal(capsys: pytest.CaptureFixture[str], *args: str) -> str:
    parser = ShortErrorParser(prog="prog")
    parser.add_argument("--max_epochs", type=int, default=1)
    parser.add_argument("--seed", type=int, default=0)
    parser.add_subclass_arguments(_Data, "data", default={"class_path": f"{__name__}._Data"})
    with pytest.raises(SystemExit) as exit_info:
        parser.parse_args(list(args))
    assert exit_info.value.code == 2
    return capsys.readouterr().err.strip()


@pytest.mark.parametrize(
    ("given", "near"),
    [
        ("--max_epoch", "--max_epochs"),  # a prefix is not completed
        ("--sed", "--seed"),
        ("--data.batchsize", "--data.batch_size"),  # an argument of the class the group names
        ("--data.init_args.batchsize", "--data.init_args.batch_size"),  # as written
        ("--data.lr", "--data.learning_rate"),  # an abbreviation by initials
        ("--batch_size", "--data.batch_size"),  # the right name in the wrong group
    ],
)
def test_an_unknown_option_is_named_as_given_with_the_nearest_valid_one(
    capsys: pytest.CaptureFixture[str], given: str, near: str
) -> None:
    assert _refusal(capsys, given, "3") == f"prog: error: unknown option {given}; did you mean {near}?"


def test_an_unknown_key_in_a_config_is_named_with_the_nearest_valid_one(
    tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    parser = ShortErrorParser(prog="prog")
    parser.add_argument("--config", action=ActionConfigFile)
    parser.add_class_arguments(_Data, "data")
    (tmp_path / "c.yaml").write_text("data:\n  batchsize: 3\n")
    with pytest.raises(SystemExit):
        parser.parse_args(["--config", str(tmp_path / "c.yaml")])
    assert capsys.readouterr().err.strip() == (
        "prog: error: unknown option 'data.batchsize' in the config; did you mean data.batch_size?"
    )


@pytest.mark.skipif(not hasattr(os, "mkfifo"), reason="FIFOs are POSIX")
@pytest.mark.parametrize(
    "given",
    [("--data", "{fifo}"), ("--model.optimizer", "{fifo}"), ("--config", "{config}")],
    ids=["class-group", "nested-class", "value-in-a-config"],
)
def test_a_value_naming_a_fifo_is_refused_without_being_opened(
    tmp_path: Path, capsys: pytest.CaptureFixture[str], given: tuple[str, str]
) -> None:
    # jsonargparse reads a class's value that names a file as a config of its own; opening a FIFO waits for a writer.
    fifo, config = tmp_path / "fifo.csv", tmp_path / "c.yaml"
    os.mkfifo(fifo)
    config.write_text(f"data: {fifo}\n")
    status: list[object] = []

    def run() -> None:
        with pytest.raises(SystemExit) as exit_info:
            run_cli("fit", *(a.format(fifo=fifo, config=config) for a in given))
        status.append(exit_info.value.code)

    thread = threading.Thread(target=run, daemon=True)
    thread.start()
    thread.join(timeout=60)
    if thread.is_alive():  # blocked opening the FIFO: a writer lets it go, so that the test fails instead of hanging
        os.close(os.open(fifo, os.O_WRONLY | os.O_NONBLOCK))
        thread.join()
    assert status == [2]
    assert f"{fifo}: is a FIFO, not a regular file" in capsys.readouterr().err


def test_nearest_keys_prefers_the_group_then_the_whole_key_then_the_last_part() -> None:
    keys = ["trainer.max_epochs", "trainer.min_epochs", "model.optimizer", "model.scheduler", "ckpt_path"]
    assert nearest_keys("trainer.max_epoch", keys) == ["trainer.max_epochs", "trainer.min_epochs"]
    assert nearest_keys("trainr.max_epochs", keys)[0] == "trainer.max_epochs"
    assert nearest_keys("lr_scheduler", keys) == ["model.scheduler"]
    assert nearest_keys("zzz", keys) == []


def test_a_huber_fit_is_judged_against_the_huber_optimum(tmp_path: Path) -> None:
    run = fit_d2l(tmp_path, "--model.loss", "torch.nn.HuberLoss", "--model.loss.delta", "0.5")
    report = json.loads((run / "report.json").read_text())
    assert report["reference"]["kind"] == "Huber"
    data = SyntheticRegressionData()
    data.setup("fit")
    X, y = (t.double() for t in data.train_data)
    theta = torch.tensor([row["ols"] for row in report["parameters"]], dtype=torch.float64, requires_grad=True)
    loss = torch.nn.HuberLoss(delta=0.5)(X @ theta[:-1] + theta[-1], y.view(-1))
    (gradient,) = torch.autograd.grad(loss, theta)  # torch's own Huber loss: flat at the reported optimum
    assert gradient.abs().max().item() < 1e-8
