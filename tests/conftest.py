"""Shared helpers: the repository's configs and an in-process CLI runner."""

from __future__ import annotations

import signal
import sys
from pathlib import Path
from unittest import mock

import pytest
import torch

from linreg.cli import main

ROOT = Path(__file__).resolve().parents[1]
D2L_CONFIG = ROOT / "configs" / "d2l.yaml"


def run_cli(*args: str) -> None:
    """Runs ``linreg`` in this process with ``args`` (as on the command line)."""
    with mock.patch.object(sys, "argv", ["linreg"]):  # pytest's own arguments are not ours
        main(list(args))


def fit_d2l(save_dir: Path, *extra: str) -> Path:
    """Fits the d2l config into ``save_dir`` and returns the run's version directory."""
    run_cli("fit", "--config", str(D2L_CONFIG), "--trainer.logger.init_args.save_dir", str(save_dir), *extra)
    return max((save_dir / "d2l").glob("version_*"), key=lambda p: int(p.name.split("_")[1]))


def final_params(run_dir: Path) -> dict[str, torch.Tensor]:
    """The model parameters stored in a run's ``last.ckpt``."""
    checkpoint = torch.load(run_dir / "checkpoints" / "last.ckpt", map_location="cpu", weights_only=True)
    return {k: v for k, v in checkpoint["state_dict"].items() if k.startswith("net.")}


@pytest.fixture(scope="session")
def d2l_run(tmp_path_factory: pytest.TempPathFactory) -> Path:
    """One fit of the d2l config, shared by the tests that only read its outputs."""
    return fit_d2l(tmp_path_factory.mktemp("d2l"))


@pytest.fixture(autouse=True)
def stopping_signals_as_a_terminal_sets_them() -> object:
    """Each test starts with SIGHUP and SIGINT as a terminal's command has them. Run under ``nohup`` (SIGHUP
    ignored) or as a script's background job (SIGINT ignored), the command rightly leaves an ignored signal
    ignored, and the tests that send one would see nothing happen."""
    defaults = {signal.SIGHUP: signal.SIG_DFL, signal.SIGINT: signal.default_int_handler}
    ignored = {signum: signal.signal(signum, default) for signum, default in defaults.items()
               if signal.getsignal(signum) == signal.SIG_IGN}  # fmt: skip
    yield
    for signum, handler in ignored.items():
        signal.signal(signum, handler)
