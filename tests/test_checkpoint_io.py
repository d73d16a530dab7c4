"""Checkpoint files: a write cut short never damages the target, and loading never runs code from the file."""

from __future__ import annotations

import errno
import os
import pickle
import signal
import subprocess
import sys
import time
import zipfile
from pathlib import Path
from typing import IO

import pytest
import torch
import yaml

import linreg.callbacks.hparams as hparams_callback
from linreg.checkpointing.io import AtomicCheckpointIO, load_safely, save_atomically
from linreg.validation import UserInputError
from tests.conftest import D2L_CONFIG, ROOT, fit_d2l, run_cli


def _malicious_checkpoint(path: Path, marker: Path) -> None:
    """Writes a Lightning-looking checkpoint whose unpickling would create ``marker`` (via ``os.mkdir``)."""

    class Payload:
        def __reduce__(self) -> tuple[object, tuple[str]]:
            return (os.mkdir, (str(marker),))

    torch.save({"state_dict": {}, "epoch": 0, "global_step": 0, "payload": Payload()}, path)


def test_save_atomically_replaces_the_target_whole(tmp_path: Path) -> None:
    target = tmp_path / "last.ckpt"
    save_atomically({"w": torch.zeros(3)}, target)
    save_atomically({"w": torch.ones(3)}, target)
    assert torch.equal(load_safely(target)["w"], torch.ones(3))
    assert os.listdir(tmp_path) == ["last.ckpt"]  # no temporary file left behind


def test_a_write_that_fails_halfway_leaves_the_previous_checkpoint_intact(tmp_path: Path) -> None:
    target = tmp_path / "last.ckpt"
    save_atomically({"w": torch.zeros(3)}, target)
    before = target.read_bytes()

    def half_then_crash(obj: object, file: IO[bytes]) -> None:
        file.write(b"PK\x03\x04 half a zip archive")
        raise OSError("disk full")

    with pytest.raises(OSError, match="disk full"):
        save_atomically({"w": torch.ones(3)}, target, save=half_then_crash)
    assert target.read_bytes() == before
    assert os.listdir(tmp_path) == ["last.ckpt"]


def test_the_plugin_writes_local_files_atomically(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    replaced: list[tuple[str, str]] = []
    real_replace = os.replace
    monkeypatch.setattr(os, "replace", lambda src, dst: (replaced.append((str(src), str(dst))), real_replace(src, dst)))
    target = tmp_path / "sub" / "last.ckpt"
    AtomicCheckpointIO().save_checkpoint({"state_dict": {"w": torch.ones(2)}}, target)
    assert len(replaced) == 1
    source, destination = replaced[0]
    assert Path(source).parent == target.parent  # same directory, so the rename is atomic
    assert Path(source).name.startswith(".last.ckpt.")
    assert destination == str(target)
    assert torch.equal(AtomicCheckpointIO().load_checkpoint(target)["state_dict"]["w"], torch.ones(2))


def test_loading_a_malicious_checkpoint_is_refused_before_its_code_runs(tmp_path: Path) -> None:
    evil, marker = tmp_path / "evil.ckpt", tmp_path / "pwned"
    _malicious_checkpoint(evil, marker)
    with pytest.raises(UserInputError, match=r"refused to load checkpoint .*evil.ckpt: .*mkdir.* would run code"):
        load_safely(evil)
    with pytest.raises(UserInputError, match="refused to load"):
        AtomicCheckpointIO().load_checkpoint(evil)
    assert not marker.exists()
    with pytest.raises(pickle.UnpicklingError):  # the same file, loaded the unsafe way, would run it: the test is real
        torch.load(evil, weights_only=True)
    torch.load(evil, weights_only=False)
    assert marker.exists()


@pytest.mark.parametrize("subcommand", ["fit", "validate", "test", "predict"])
def test_the_command_line_refuses_a_malicious_checkpoint_in_one_line(
    subcommand: str, tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    evil, marker = tmp_path / "evil.ckpt", tmp_path / "pwned"
    _malicious_checkpoint(evil, marker)
    with pytest.raises(SystemExit) as exit_info:
        run_cli(subcommand, "--config", str(D2L_CONFIG), "--ckpt_path", str(evil))
    assert exit_info.value.code == 2
    err = capsys.readouterr().err
    assert "refused to load checkpoint" in err
    assert "Traceback" not in err
    assert not marker.exists()


def _hostile_hparams(kind: str, marker: Path) -> dict[str, object]:
    """Hyper-parameters of plain values that LightningCLI would turn into imports and calls, or into changes of
    the config: each would create ``marker``, print the Zen of Python, or record another init_std."""
    touch = f"touch {marker}"
    return {
        "a callable": {"optimizer": {"class_path": "os.system", "init_args": {"command": touch}}},
        "a module": {"optimizer": {"class_path": "this.Foo"}},
        "an instantiator": {"_instantiator": "os.system", "_class_path": "os.system", "command": touch},
        "a conflicting value": {"init_std": 123.0, "input_dim": 5},
    }[kind]


@pytest.mark.parametrize("subcommand", ["fit", "validate"])
@pytest.mark.parametrize("kind", ["a callable", "a module", "an instantiator", "a conflicting value"])
def test_a_checkpoints_hyper_parameters_never_choose_code_or_config(
    kind: str, subcommand: str, d2l_run: Path, tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    marker = tmp_path / "pwned"
    checkpoint = torch.load(d2l_run / "checkpoints" / "last.ckpt", weights_only=True)
    checkpoint["hyper_parameters"] = _hostile_hparams(kind, marker)
    path = tmp_path / "hostile.ckpt"
    torch.save(checkpoint, path)
    save_dir = tmp_path / "runs"
    run_cli(
        subcommand, "--config", str(D2L_CONFIG), "--ckpt_path", str(path),
        "--trainer.logger.init_args.save_dir", str(save_dir), "--trainer.max_epochs", "4",
    )  # fmt: skip
    assert not marker.exists()
    assert "Beautiful is better than ugly" not in capsys.readouterr().out
    if subcommand == "fit":  # the recorded config is the command line's: init_std and the optimizer as given
        recorded = yaml.safe_load(next(save_dir.glob("d2l/version_*/config.yaml")).read_text())
        assert recorded["model"]["init_args"]["init_std"] == 0.01
        assert recorded["model"]["init_args"]["optimizer"]["class_path"] == "torch.optim.SGD"


def test_weights_only_false_is_refused(tmp_path: Path) -> None:
    with pytest.raises(UserInputError, match="weights_only must stay true or unset, got False"):
        AtomicCheckpointIO().load_checkpoint(tmp_path / "x.ckpt", weights_only=False)


def test_checkpoints_of_a_run_load_weights_only(d2l_run: Path) -> None:
    for path in (d2l_run / "checkpoints").glob("*.ckpt"):
        checkpoint = torch.load(path, weights_only=True)
        assert set(checkpoint["state_dict"]) == {"net.0.weight", "net.0.bias"}
        assert checkpoint["hyper_parameters"]["input_dim"] == 5


_WRITER = """
import sys, time, torch
from linreg.checkpointing.io import save_atomically

class Paced:  # a disk that takes its time: every write lasts a while, so kills land inside writes
    def __init__(self, file):
        self.file = file
    def write(self, data):
        time.sleep(0.002)
        return self.file.write(data)
    def __getattr__(self, name):
        return getattr(self.file, name)

target, n = sys.argv[1], 0
while True:  # ever new versions of a 40 MB checkpoint, each filled with its own number
    n += 1
    checkpoint = {"n": n, "w": torch.full((10_000_000,), float(n))}
    save_atomically(checkpoint, target, save=lambda obj, file: torch.save(obj, Paced(file)))
    print(n, flush=True)
"""


@pytest.mark.slow
def test_a_writer_killed_at_random_moments_never_leaves_a_damaged_checkpoint(tmp_path: Path) -> None:
    target = tmp_path / "last.ckpt"
    delays = torch.rand(6, generator=torch.Generator().manual_seed(0)).tolist()  # fixed seed: the same moments
    for delay in delays:
        writer = subprocess.Popen(
            [sys.executable, "-c", _WRITER, str(target)], stdout=subprocess.PIPE, text=True, cwd=ROOT
        )
        assert writer.stdout is not None
        writer.stdout.readline()  # at least one complete write
        time.sleep(0.05 + 0.3 * delay)  # then somewhere in the middle of later ones
        writer.send_signal(signal.SIGKILL)
        writer.wait()
        checkpoint = load_safely(target)
        assert torch.equal(checkpoint["w"], torch.full((10_000_000,), float(checkpoint["n"])))
    interrupted = list(tmp_path.glob(".last.ckpt.*.tmp"))  # each one a write the kill cut short
    print(f"{len(interrupted)} of {len(delays)} kills fell mid-write")
    assert interrupted, "no kill fell during a write: the test proved nothing"


def test_hparams_yaml_holds_the_models_arguments(d2l_run: Path) -> None:
    assert yaml.safe_load((d2l_run / "hparams.yaml").read_text()) == {
        "input_dim": 5,
        "init_std": 0.01,
        "weight_decay": 0.0,
    }


def test_a_disk_that_fills_while_hparams_yaml_is_written_leaves_none_of_it(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch, capsys: pytest.CaptureFixture[str]
) -> None:
    real = hparams_callback.save_atomically

    def fills_halfway(obj: object, path: Path, save: object) -> None:
        def half(values: object, file: IO[bytes]) -> None:
            file.write(b"input_dim: 5\ninit_")
            raise OSError(errno.ENOSPC, os.strerror(errno.ENOSPC))

        real(obj, path, half)

    monkeypatch.setattr(hparams_callback, "save_atomically", fills_halfway)
    with pytest.raises(SystemExit) as exit_info:
        fit_d2l(tmp_path)
    assert exit_info.value.code == 2
    err = capsys.readouterr().err
    assert [line for line in err.splitlines() if ": error: " in line] == [
        "linreg: error: writing the run: No space left on device; free some space and rerun"
    ]
    assert not list(tmp_path.rglob("hparams.yaml"))
    assert not list(tmp_path.rglob("*.tmp"))
    assert not list(tmp_path.rglob("version_*"))  # nothing was trained: the run leaves nothing


def test_a_checkpoint_that_inflates_beyond_its_size_is_refused_before_it_is_read(tmp_path: Path) -> None:
    honest, bomb = tmp_path / "honest.ckpt", tmp_path / "bomb.ckpt"
    torch.save({"state_dict": {"w": torch.ones(3)}}, honest)
    with zipfile.ZipFile(honest) as source, zipfile.ZipFile(bomb, "w", zipfile.ZIP_DEFLATED) as target:
        for entry in source.infolist():
            target.writestr(entry.filename, source.read(entry))
        target.writestr("honest/padding", bytes(8 << 20))  # 8 MB of zeros in a few kB
    assert bomb.stat().st_size < 100_000
    assert load_safely(honest)["state_dict"]["w"].tolist() == [1.0, 1.0, 1.0]
    with pytest.raises(UserInputError, match=rf"checkpoint {bomb} inflates to \d+ bytes from \d+: torch.save stores"):
        load_safely(bomb)


@pytest.mark.parametrize("kind", ["fifo", "directory", "link"])
def test_the_atomic_writer_writes_over_a_regular_file_or_nothing(tmp_path: Path, kind: str) -> None:
    target = tmp_path / "last.ckpt"
    {"fifo": os.mkfifo, "directory": os.mkdir, "link": lambda p: os.symlink(tmp_path / "elsewhere", p)}[kind](target)
    named = {"fifo": "a FIFO", "directory": "a directory", "link": "a symbolic link"}[kind]
    with pytest.raises(UserInputError, match=f"^{target}: is {named}, not a regular file$"):
        save_atomically({"w": torch.ones(1)}, target)
    assert os.listdir(tmp_path) == ["last.ckpt"]  # no temporary file either


def test_a_fifo_given_as_a_checkpoint_is_refused_without_waiting_for_a_writer(tmp_path: Path) -> None:
    os.mkfifo(tmp_path / "fifo.ckpt")
    with pytest.raises(UserInputError, match="is a FIFO"):
        load_safely(tmp_path / "fifo.ckpt")
