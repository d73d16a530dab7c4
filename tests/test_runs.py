"""Which run a command continues, the directories it claims, and a stop on SIGTERM or Ctrl-C.

``--ckpt_path last`` resumes only an unfinished run of the same configuration, answers "already finished"
for a finished one, and starts afresh otherwise; a resume of a changed configuration is refused; SIGTERM
and Ctrl-C save ``last.ckpt`` and exit with 128 + the signal's number; runs started together never share a
directory.
"""

from __future__ import annotations

import contextlib
import hashlib
import io
import multiprocessing
import os
import signal
import subprocess
import sys
import time
from pathlib import Path

import pytest
import torch
import yaml
from jsonargparse import Namespace

from linreg.checkpointing.choice import logger_args
from linreg.checkpointing.interrupt import SIGINT_STATUS, SIGTERM_STATUS
from linreg.checkpointing.runs import claim_version, earlier_runs, run_identity
from linreg.validation import UserInputError
from tests.conftest import D2L_CONFIG, ROOT, run_cli
from tests.test_resume import SMALL, assert_same_training_state, final_state

SIGNAL_AT = ("--trainer.callbacks+=tests.signals.SignalAt", "--trainer.callbacks.step")
# signal -> (exit status: 128 + its number, as a shell reports it; how the message names it)
STOPS = {"SIGTERM": (SIGTERM_STATUS, "SIGTERM"), "SIGINT": (SIGINT_STATUS, "Ctrl-C (SIGINT)")}


def fit(save_dir: Path, *args: str) -> str:
    """Fits the d2l config on the small data (6 steps per epoch) in-process; returns what it printed."""
    out = io.StringIO()
    with contextlib.redirect_stdout(out):
        run_cli("fit", "--config", str(D2L_CONFIG), "--trainer.logger.init_args.save_dir", str(save_dir), *SMALL, *args)
    return out.getvalue()


def runs(save_dir: Path) -> list[str]:
    return sorted(p.name for p in (save_dir / "d2l").iterdir())


def digest(directory: Path) -> dict[str, str]:
    return {str(p): hashlib.sha256(p.read_bytes()).hexdigest() for p in directory.rglob("*") if p.is_file()}


@pytest.fixture(scope="module")
def uninterrupted(tmp_path_factory: pytest.TempPathFactory) -> dict:
    """The final state of an uninterrupted run of 18 steps."""
    save_dir = tmp_path_factory.mktemp("uninterrupted")
    fit(save_dir)
    return final_state(save_dir / "d2l" / "version_0")


@pytest.mark.parametrize("name", ["SIGTERM", "SIGINT"])
def test_a_signal_saves_last_ckpt_exits_128_plus_its_number_and_resumes_exactly(
    uninterrupted: dict, tmp_path: Path, capsys: pytest.CaptureFixture[str], name: str
) -> None:
    status, named = STOPS[name]
    with pytest.raises(SystemExit) as exit_info:
        fit(tmp_path, *SIGNAL_AT, "8", "--trainer.callbacks.name", name)  # mid-epoch 2, between two last.ckpt writes
    assert exit_info.value.code == status == 128 + signal.Signals[name]
    saved = tmp_path / "d2l" / "version_0" / "checkpoints" / "last.ckpt"
    err = capsys.readouterr().err
    assert (
        f"linreg: error: stopped by {named}; the training state is saved in {saved}: resume with --ckpt_path last"
        in err
    )
    assert "KeyboardInterrupt" not in err
    assert torch.load(saved, weights_only=True)["global_step"] == 8  # at the end of the step the signal came in
    assert signal.getsignal(signal.SIGINT) is signal.default_int_handler  # Ctrl-C is Python's own again
    printed = fit(
        tmp_path, *SIGNAL_AT, "8", "--trainer.callbacks.name", name, "--ckpt_path", "last"
    )  # the same command
    assert f"--ckpt_path last: resuming from {saved} (epoch 2, step 8)" in printed
    assert_same_training_state(uninterrupted, final_state(tmp_path / "d2l" / "version_1"))


def test_a_signal_the_process_was_started_ignoring_stays_ignored(uninterrupted: dict, tmp_path: Path) -> None:
    """Under ``nohup`` SIGHUP is ignored from the start: a hangup then leaves the fit running to its end."""
    previous = signal.signal(signal.SIGHUP, signal.SIG_IGN)
    try:
        fit(tmp_path, *SIGNAL_AT, "8", "--trainer.callbacks.name", "SIGHUP")
        assert signal.getsignal(signal.SIGHUP) is signal.SIG_IGN
    finally:
        signal.signal(signal.SIGHUP, previous)
    assert_same_training_state(uninterrupted, final_state(tmp_path / "d2l" / "version_0"))


def test_ckpt_path_last_never_resumes_another_configuration(tmp_path: Path) -> None:
    fit(tmp_path, "--trainer.max_epochs", "1")  # unfinished for 3 epochs, but of batch size 10
    printed = fit(tmp_path, "--data.batch_size", "20", "--ckpt_path", "last")
    assert "no earlier run of this configuration" in printed
    assert "1 run of other settings left alone" in printed
    assert final_state(tmp_path / "d2l" / "version_1")["global_step"] == 3 * 3  # 60 / 20 steps a epoch, from 0


def test_ckpt_path_last_of_a_finished_run_says_so_and_writes_nothing(tmp_path: Path) -> None:
    fit(tmp_path)
    before = digest(tmp_path)
    printed = fit(tmp_path, "--ckpt_path", "last")
    assert printed.strip() == f"already finished: {tmp_path / 'd2l' / 'version_0'} (epoch 3, step 18); nothing was" \
        " trained or written. Raise trainer.max_epochs or max_steps to train it further"  # fmt: skip
    assert digest(tmp_path) == before
    assert runs(tmp_path) == ["version_0"]


def test_a_fit_its_early_stopping_ended_is_finished_for_every_later_command(tmp_path: Path) -> None:
    """Lightning's EarlyStopping ends the fit before max_epochs; its saved state would stop a resumed fit again."""
    stopping = (
        "--trainer.max_epochs", "20", "--trainer.callbacks+=lightning.pytorch.callbacks.EarlyStopping",
        "--trainer.callbacks.monitor", "val/loss", "--trainer.callbacks.min_delta", "10",
        "--trainer.callbacks.patience", "1",
    )  # fmt: skip
    fit(tmp_path, *stopping)
    state = final_state(tmp_path / "d2l" / "version_0")
    assert state["epoch"] < 19  # stopped early
    before = digest(tmp_path)
    printed = fit(tmp_path, *stopping, "--ckpt_path", "last")
    assert printed.startswith(f"already finished: {tmp_path / 'd2l' / 'version_0'} (epoch ")
    assert printed.strip().endswith("nothing was trained or written: its early stopping ended it")
    assert digest(tmp_path) == before
    out = io.StringIO()
    with contextlib.redirect_stdout(out):
        run_cli("test", "--config", str(tmp_path / "d2l" / "version_0" / "config.yaml"))
    assert "using the newest finished fit of this configuration" in out.getvalue()


def test_a_run_stopped_by_max_steps_extends_to_an_uninterrupted_one(tmp_path: Path) -> None:
    steps = ("--trainer.max_epochs", "-1", "--last.every_n_train_steps", "4")
    fit(tmp_path / "one", *steps, "--trainer.max_steps", "15")
    fit(tmp_path / "two", *steps, "--trainer.max_steps", "9")
    fit(tmp_path / "two", *steps, "--trainer.max_steps", "15", "--ckpt_path", "last")
    expected = final_state(tmp_path / "one" / "d2l" / "version_0")
    assert_same_training_state(expected, final_state(tmp_path / "two" / "d2l" / "version_1"))


@pytest.mark.parametrize(
    ("change", "named"),
    [
        (("--data.batch_size", "20"), "data.batch_size 10 there, 20 here"),
        (("--data.num_train", "70"), "data.num_train 60 there, 70 here"),
        (("--data.seed", "1"), "data.seed 0 there, 1 here"),
        (
            ("--model.optimizer", "Adam", "--model.optimizer.lr", "0.03"),
            "model.optimizer.class_path 'torch.optim.SGD' there, 'torch.optim.Adam' here",
        ),
    ],
    ids=["batch_size", "num_train", "seed", "optimizer"],
)
def test_resuming_a_run_with_changed_settings_is_refused_naming_the_change(
    tmp_path: Path, capsys: pytest.CaptureFixture[str], change: tuple[str, str], named: str
) -> None:
    fit(tmp_path, "--trainer.max_epochs", "1")
    checkpoint = tmp_path / "d2l" / "version_0" / "checkpoints" / "last.ckpt"
    with pytest.raises(SystemExit) as exit_info:
        fit(tmp_path, *change, "--ckpt_path", str(checkpoint))
    assert exit_info.value.code == 2
    (line,) = [line for line in capsys.readouterr().err.splitlines() if ": error: " in line]
    assert f"ckpt_path {checkpoint}: belongs to a run with other settings ({named}" in line
    assert runs(tmp_path) == ["version_0"]


def test_evaluating_without_a_checkpoint_uses_the_newest_finished_fit(tmp_path: Path) -> None:
    fit(tmp_path)
    fit(tmp_path, "--trainer.max_epochs", "1", "--data.seed", "3")  # another configuration, newer
    out = io.StringIO()
    with contextlib.redirect_stdout(out):
        run_cli("test", "--config", str(D2L_CONFIG), "--trainer.logger.init_args.save_dir", str(tmp_path), *SMALL)
    used = tmp_path / "d2l" / "version_0" / "checkpoints" / "last.ckpt"
    assert (
        f"test: no --ckpt_path was given; using the newest finished fit of this configuration, {used}" in out.getvalue()
    )


def test_evaluating_without_any_fit_is_refused(tmp_path: Path, capsys: pytest.CaptureFixture[str]) -> None:
    with pytest.raises(SystemExit) as exit_info:
        run_cli("validate", "--config", str(D2L_CONFIG), "--trainer.logger.init_args.save_dir", str(tmp_path))
    assert exit_info.value.code == 2
    assert "validate needs trained weights and no --ckpt_path was given" in capsys.readouterr().err
    assert not tmp_path.joinpath("d2l").exists()


def _claim(root: str) -> int:
    return claim_version(Path(root))


def test_runs_started_together_never_share_a_directory(tmp_path: Path) -> None:
    with multiprocessing.get_context("fork").Pool(8) as pool:
        versions = pool.map(_claim, [str(tmp_path)] * 32)
    assert sorted(versions) == list(range(32))


def test_checkpointing_off_writes_no_checkpoint_file(tmp_path: Path) -> None:
    fit(tmp_path, "--trainer.enable_checkpointing", "false")
    assert (tmp_path / "d2l" / "version_0" / "config.yaml").is_file()  # the run itself is there
    assert not list(tmp_path.rglob("*.ckpt"))


@pytest.mark.slow
@pytest.mark.parametrize("name", ["SIGTERM", "SIGINT"])
def test_a_real_process_sent_a_signal_exits_with_its_status_and_resumes_exactly(
    uninterrupted: dict, tmp_path: Path, name: str
) -> None:
    status, named = STOPS[name]
    args = [sys.executable, "-m", "linreg", "fit", "--config", str(D2L_CONFIG)]
    args += ["--trainer.logger.init_args.save_dir", str(tmp_path), *SMALL, "--last.every_n_train_steps", "2"]
    args += ["--trainer.callbacks+=tests.pacing.Pace", "--trainer.callbacks.seconds", "0.05"]
    env = {**os.environ, "PYTHONPATH": str(ROOT)}
    last = tmp_path / "d2l" / "version_0" / "checkpoints" / "last.ckpt"
    with subprocess.Popen(args, stdout=subprocess.DEVNULL, stderr=subprocess.PIPE, env=env, text=True) as process:
        while not last.exists():  # training has begun
            assert process.poll() is None, "fit ended before the signal"
            time.sleep(0.01)
        process.send_signal(signal.Signals[name])
        err = process.communicate(timeout=120)[1]
    assert process.returncode == status, err
    assert f"stopped by {named}; the training state is saved in {last}: resume with --ckpt_path last" in err
    assert "Traceback" not in err
    assert "KeyboardInterrupt" not in err
    assert torch.load(last, weights_only=True)["global_step"] < 18
    resumed = subprocess.run([*args, "--ckpt_path", "last"], env=env, capture_output=True, text=True, check=False)
    assert resumed.returncode == 0, resumed.stderr[-2000:]
    assert_same_training_state(uninterrupted, final_state(tmp_path / "d2l" / "version_1"))


CONFIG = {"data": {"seed": 0}, "trainer": {"callbacks": [{"class_path": "X", "init_args": {"a": 1, "b": None}}]}}


def _earlier_run(root: Path, checkpoint: object, name: str = "version_0") -> Path:
    """A run directory as a fit leaves it: its config.yaml, and ``checkpoint`` (bytes, or a dict saved) as last.ckpt."""
    (root / name / "checkpoints").mkdir(parents=True)
    (root / name / "config.yaml").write_text(yaml.safe_dump(CONFIG))
    last = root / name / "checkpoints" / "last.ckpt"
    last.write_bytes(checkpoint) if isinstance(checkpoint, bytes) else torch.save(checkpoint, last)
    return last


def test_unset_arguments_in_a_list_do_not_make_two_runs_differ() -> None:
    unset_left_out = {"data": {"seed": 0}, "trainer": {"callbacks": [{"class_path": "X", "init_args": {"a": 1}}]}}
    assert run_identity(CONFIG) == run_identity(unset_left_out)


@pytest.mark.parametrize(
    ("checkpoint", "message"),
    [
        (b"PK\x03\x04 not all of it", "cannot be read: not a PyTorch checkpoint, or truncated or damaged"),
        ({"global_step": -1, "epoch": 0, "loops": {}}, "loops.fit_loop.epoch_progress.current.processed must be"),
        (
            {"global_step": -1, "epoch": 0, "loops": {"fit_loop": {"epoch_progress": {"current": {"processed": 1}}}}},
            "global_step must be an integer >= 0, got -1",
        ),
    ],
    ids=["damaged", "no-progress", "negative-step"],
)
def test_a_damaged_checkpoint_of_this_configuration_is_refused_naming_it(
    tmp_path: Path, checkpoint: object, message: str
) -> None:
    last = _earlier_run(tmp_path, checkpoint)
    with pytest.raises(UserInputError) as refused:
        earlier_runs(tmp_path, run_identity(CONFIG), 3, -1)
    assert str(refused.value).startswith(f"{last}, the last checkpoint of an earlier run of this configuration: ")
    assert message in str(refused.value)


def test_run_lookup_opens_no_fifo(tmp_path: Path) -> None:
    fifo_config = _earlier_run(tmp_path, b"", "version_0").parent.parent / "config.yaml"
    fifo_config.unlink()
    os.mkfifo(fifo_config)  # not a run that can be read: left alone
    assert earlier_runs(tmp_path, run_identity(CONFIG), 3, -1) == ([], 1)
    fifo_checkpoint = _earlier_run(tmp_path, b"", "version_1")
    fifo_checkpoint.unlink()
    os.mkfifo(fifo_checkpoint)
    with pytest.raises(UserInputError, match=f"^{fifo_checkpoint}, the last checkpoint .*is a FIFO"):
        earlier_runs(tmp_path, run_identity(CONFIG), 3, -1)


@pytest.mark.parametrize(
    ("class_path", "claimed"),
    [("TensorBoardLogger", True), ("CSVLogger", True), ("WandbLogger", False), ("MLFlowLogger", False)],
)
def test_a_run_directory_is_claimed_only_for_loggers_that_write_save_dir_name_version(
    class_path: str, claimed: bool
) -> None:
    # WandbLogger also takes save_dir, name and version, but its version is a run id: no version_N is set on it.
    arguments = Namespace(save_dir="runs", name="x", version=None)
    logger = Namespace(class_path=f"lightning.pytorch.loggers.{class_path}", init_args=arguments)
    assert (logger_args(Namespace(trainer=Namespace(logger=logger))) is arguments) is claimed
