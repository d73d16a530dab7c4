"""Exact resume: a run restarted from any ``last.ckpt`` it wrote ends bit-identical to one never stopped.

A run killed by SIGKILL leaves the last complete ``last.ckpt`` (the writes are atomic), so resuming from
each version of ``last.ckpt`` an uninterrupted run wrote covers every moment a kill can fall. The
in-process tests here do that; ``test_a_fit_killed_with_sigkill_...`` kills real processes.
"""

from __future__ import annotations

import contextlib
import hashlib
import io
import os
import re
import shutil
import signal
import subprocess
import sys
import time
from collections.abc import Iterator
from pathlib import Path
from unittest import mock

import pytest
import torch

from linreg.checkpointing.io import AtomicCheckpointIO
from tests.conftest import D2L_CONFIG, ROOT, run_cli

# 60 examples in batches of 10: 6 steps per epoch, 18 in the 3 epochs of the d2l config.
SMALL = ("--data.num_train", "60", "--data.num_val", "50", "--data.num_test", "10", "--trainer.log_every_n_steps", "1")
STEPS_PER_EPOCH = 6
GROUPED = (
    "--model",
    "linreg.grouped.GroupedStepsRegression",
    "--model.mini_batch_size",
    "10",
    "--data.batch_size",
    "40",
)
AVERAGED = ("--trainer.callbacks+=AveragedSGD", "--trainer.callbacks.start", "0.4")


@contextlib.contextmanager
def keeping_every_write(history: Path) -> Iterator[None]:
    """Copies each version of ``last.ckpt`` into ``history`` as it is written: what a kill just after would leave."""
    history.mkdir(parents=True)
    write = AtomicCheckpointIO.save_checkpoint

    def write_and_keep(self: AtomicCheckpointIO, checkpoint: dict, path: str, storage_options: object = None) -> None:
        write(self, checkpoint, path, storage_options)
        if Path(path).name == "last.ckpt":
            shutil.copy(path, history / f"{len(os.listdir(history)):03d}-step{checkpoint['global_step']}.ckpt")

    with mock.patch.object(AtomicCheckpointIO, "save_checkpoint", write_and_keep):
        yield


def fit(save_dir: Path, *args: str) -> tuple[Path, str]:
    """Fits the d2l config on the small data in-process; returns the new run directory and what it printed."""
    out = io.StringIO()
    with contextlib.redirect_stdout(out):
        run_cli("fit", "--config", str(D2L_CONFIG), "--trainer.logger.init_args.save_dir", str(save_dir), *SMALL, *args)
    runs = (save_dir / "d2l").glob("version_*")
    return max(runs, key=lambda p: int(p.name.split("_")[1])), out.getvalue()


def final_state(run_dir: Path) -> dict:
    return torch.load(run_dir / "checkpoints" / "last.ckpt", weights_only=True)


def assert_same_training_state(expected: dict, actual: dict) -> None:
    """Weights, optimizer state and progress equal bit for bit."""
    assert (actual["global_step"], actual["epoch"]) == (expected["global_step"], expected["epoch"])
    assert expected["state_dict"].keys() == actual["state_dict"].keys()
    for name, tensor in expected["state_dict"].items():
        assert torch.equal(tensor, actual["state_dict"][name]), name
    # With averaged weights: the average is the state_dict, the SGD iterate and the count are kept beside it.
    for part in ("current_model_state",):
        assert expected.get(part, {}).keys() == actual.get(part, {}).keys(), part
        for name, tensor in expected.get(part, {}).items():
            assert torch.equal(tensor, actual[part][name]), f"{part}.{name}"
    for ours, theirs in zip(expected["optimizer_states"], actual["optimizer_states"], strict=True):
        assert ours["param_groups"] == theirs["param_groups"]
        for key, state in ours["state"].items():
            for name, value in state.items():
                assert torch.equal(torch.as_tensor(value), torch.as_tensor(theirs["state"][key][name])), name


def epoch_lines(printed: str) -> dict[str, dict[str, str]]:
    """``{"epoch 2, loss 0.000095": {"val/loss": "0.0001", ...}}`` from a run's output."""
    lines = [line.split("  ") for line in printed.splitlines() if line.startswith("epoch ")]
    return {head: dict(field.split(" ") for field in fields) for head, *fields in lines}


class Reference:
    """An uninterrupted run, and every ``last.ckpt`` it wrote along the way."""

    def __init__(self, root: Path, *args: str) -> None:
        self.root, self.args = root, args
        with keeping_every_write(root / "history"):
            self.run_dir, self.printed = fit(root, *args)
        self.kill_points = sorted((root / "history").iterdir())
        self.final = final_state(self.run_dir)

    def kill_point(self, step: int) -> Path:
        return next(p for p in self.kill_points if p.name.endswith(f"-step{step}.ckpt"))

    def check_resume_from(self, checkpoint: Path) -> None:
        """Resumes from ``checkpoint`` and compares the end state and the epoch lines printed after it."""
        run_dir, printed = fit(self.root, *self.args, "--ckpt_path", str(checkpoint))
        resumed_steps = torch.load(checkpoint, weights_only=True)["global_step"]
        if resumed_steps == self.final["global_step"]:
            return  # a finished run: nothing left to train
        assert_same_training_state(self.final, final_state(run_dir))
        expected, actual = epoch_lines(self.printed), epoch_lines(printed)
        assert actual, printed
        for head, values in actual.items():  # the resumed epochs validate and log as the uninterrupted ones
            if "--trainer.max_steps" not in self.args:  # (a run stopped by max_steps mid-epoch does not validate)
                assert values.keys() == expected[head].keys(), head
            assert values.items() <= expected[head].items(), head


@pytest.fixture(scope="module")
def sgd_reference(tmp_path_factory: pytest.TempPathFactory) -> Reference:
    return Reference(tmp_path_factory.mktemp("sgd"), "--last.every_n_train_steps", "1")


def test_resuming_mid_average_gives_bit_identical_averaged_and_current_weights(tmp_path: Path) -> None:
    reference = Reference(tmp_path, *AVERAGED, "--last.every_n_train_steps", "1")
    assert "current_model_state" in reference.final  # the test is real: the run averaged
    reference.check_resume_from(reference.kill_point(STEPS_PER_EPOCH + 3))  # mid-epoch 1, averaging


def test_last_ckpt_is_written_every_n_steps_and_at_each_epoch_end(tmp_path: Path) -> None:
    with keeping_every_write(tmp_path / "history"):
        fit(tmp_path, "--last.every_n_train_steps", "4")
    steps = [int(p.name.split("step")[1].removesuffix(".ckpt")) for p in sorted((tmp_path / "history").iterdir())]
    # every 4th step, except the last of an epoch (12), which is written after validation, with the epoch ends
    assert steps == [4, 6, 8, 12, 16, 18]


def test_last_ckpt_holds_the_end_of_training(d2l_run: Path) -> None:
    checkpoint = final_state(d2l_run)
    assert (checkpoint["global_step"], checkpoint["epoch"]) == (300, 2)


@pytest.mark.parametrize("step", [2, 6, 9, 16], ids=["mid-epoch-0", "end-of-epoch-0", "mid-epoch-1", "mid-epoch-2"])
def test_resuming_gives_bit_identical_parameters(sgd_reference: Reference, step: int) -> None:
    sgd_reference.check_resume_from(sgd_reference.kill_point(step))


@pytest.mark.slow
def test_resuming_from_every_kill_point_gives_bit_identical_parameters(sgd_reference: Reference) -> None:
    assert len(sgd_reference.kill_points) == 18  # steps 1 to 18, the epoch ends included
    for checkpoint in sgd_reference.kill_points:
        sgd_reference.check_resume_from(checkpoint)


@pytest.mark.slow
@pytest.mark.parametrize(
    "args",
    [
        # Adam has a state of its own (moments, step count) that must come back exactly too.
        ("--model.optimizer", "Adam", "--model.optimizer.lr", "0.1", "--last.every_n_train_steps", "2"),
        # 65 examples: the last batch of each epoch holds 5.
        ("--data.num_train", "65", "--last.every_n_train_steps", "3"),
        # Training counted in steps: Lightning restarts its loops differently.
        ("--trainer.max_epochs", "-1", "--trainer.max_steps", "15", "--last.every_n_train_steps", "2"),
        # 4 SGD steps per training_step (the last group of an epoch holds 2); saved where a multiple of 3 passes.
        (*GROUPED, "--last.every_n_train_steps", "3"),
        # Averaged weights from epoch 1 on: the average and its count come back too.
        (*AVERAGED, "--last.every_n_train_steps", "2"),
    ],
    ids=["adam", "partial-last-batch", "max-steps", "grouped-steps", "averaged"],
)
def test_resuming_from_every_kill_point_of_other_runs(tmp_path: Path, args: tuple[str, ...]) -> None:
    reference = Reference(tmp_path, *args)
    assert len(reference.kill_points) >= 5
    for checkpoint in reference.kill_points:
        reference.check_resume_from(checkpoint)


def _digest(directory: Path) -> dict[str, str]:
    files = (p for p in directory.rglob("*") if p.is_file())
    return {str(p.relative_to(directory)): hashlib.sha256(p.read_bytes()).hexdigest() for p in files}


def test_ckpt_path_last_resumes_from_the_newest_earlier_run(tmp_path: Path) -> None:
    fit(tmp_path, "--trainer.max_epochs", "1")
    second, _ = fit(tmp_path, "--trainer.max_epochs", "2")
    before = _digest(tmp_path / "d2l")
    resumed, printed = fit(tmp_path, "--ckpt_path", "last")
    assert f"--ckpt_path last: resuming from {second / 'checkpoints' / 'last.ckpt'} (epoch 2, step 12)" in printed
    assert [line.split(",")[0] for line in epoch_lines(printed)] == ["epoch 3"]
    assert resumed.name == "version_2"
    assert final_state(resumed)["global_step"] == 18
    after = _digest(tmp_path / "d2l")
    assert {k: v for k, v in after.items() if k in before} == before  # the earlier runs are as they were


def test_ckpt_path_last_without_a_checkpoint_starts_from_the_beginning(tmp_path: Path) -> None:
    fresh, printed = fit(tmp_path / "a", "--ckpt_path", "last")
    assert "--ckpt_path last: no earlier run of this configuration" in printed
    assert "starting afresh" in printed
    plain, _ = fit(tmp_path / "b")
    assert_same_training_state(final_state(plain), final_state(fresh))


@pytest.mark.slow
def test_a_fit_killed_with_sigkill_resumes_to_bit_identical_parameters(tmp_path: Path) -> None:
    # 400 examples in batches of 10: 40 steps per epoch, 120 in all; last.ckpt every 5 steps.
    args = [
        *("fit", "--config", str(D2L_CONFIG), "--trainer.logger.init_args.save_dir", str(tmp_path)),
        *("--data.num_train", "400", "--data.num_val", "100", "--last.every_n_train_steps", "5"),
        *("--trainer.callbacks+=tests.pacing.Pace", "--trainer.callbacks.seconds", "0.01"),
    ]
    env = {**os.environ, "PYTHONPATH": str(ROOT)}

    def run(*extra: str, kill_at: int | None = None) -> str:
        """Runs fit; with ``kill_at``, SIGKILLs it as soon as its last.ckpt has reached that step."""
        with subprocess.Popen(
            [sys.executable, "-m", "linreg", *args, *extra], stdout=subprocess.PIPE, stderr=subprocess.DEVNULL, env=env
        ) as process:
            if kill_at is not None:
                while _newest_step(tmp_path) < kill_at:
                    assert process.poll() is None, "fit ended before the kill"
                    time.sleep(0.005)
                process.send_signal(signal.SIGKILL)
            out = process.communicate(timeout=300)[0].decode()
        assert process.returncode == (-signal.SIGKILL if kill_at is not None else 0)
        return out

    run()  # the uninterrupted run: version_0
    expected = final_state(tmp_path / "d2l" / "version_0")
    shutil.move(tmp_path / "d2l" / "version_0", tmp_path / "uninterrupted")

    resumed_at = []
    run(kill_at=10)  # mid-epoch 0
    for kill_at in (45, 90):  # just past the end of epoch 0 (40); mid-epoch 2
        printed = run("--ckpt_path", "last", kill_at=kill_at)
        resumed_at.append(_resumed_step(printed))
    kept = _digest(tmp_path / "d2l")
    printed = run("--ckpt_path", "last")
    resumed_at.append(int(printed.split("(epoch ")[1].split("step ")[1].split(")")[0]))

    assert resumed_at[0] >= 10
    assert resumed_at[1] >= 45
    assert resumed_at[2] >= 90
    assert any(step % 40 for step in resumed_at), resumed_at  # at least one resume in the middle of an epoch
    assert_same_training_state(expected, final_state(tmp_path / "d2l" / "version_3"))
    assert {k: v for k, v in _digest(tmp_path / "d2l").items() if k in kept} == kept  # nothing overwritten


def _resumed_step(printed: str) -> int:
    found = re.search(r"--ckpt_path last: resuming from .* \(epoch \d+, step (\d+)\)", printed)
    assert found, printed
    return int(found.group(1))


def _newest_step(save_dir: Path) -> int:
    """The step of the newest last.ckpt under ``save_dir`` (read while the run writes it: the writes are atomic)."""
    paths = list(save_dir.glob("d2l/version_*/checkpoints/last.ckpt"))
    if not paths:
        return -1
    newest = max(paths, key=lambda p: p.stat().st_mtime_ns)
    return torch.load(newest, weights_only=True)["global_step"]
