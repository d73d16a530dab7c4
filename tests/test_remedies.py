"""Every remedy the verdict prints can be followed: added to the command that printed it, it is accepted and moves
the run closer to the optimum of its objective (the gap F(w, b) - F(w*, b*), exact from the moments)."""

from __future__ import annotations

import json
import shlex
from pathlib import Path

import pytest

from tests.conftest import fit_d2l


def _fit(save_dir: Path, args: list[str], capsys: pytest.CaptureFixture[str]) -> tuple[float, list[list[str]], str]:
    """Fits d2l with ``args``; the final gap, the remedies printed (as argument lists) and the verdict."""
    run = fit_d2l(save_dir, *args)
    out = capsys.readouterr().out
    report = json.loads((run / "report.json").read_text())
    lines = out[out.index("verdict:") :].splitlines()
    remedies = [shlex.split(line.strip()[len("try ") :].split("  (")[0]) for line in lines if line.startswith("  try ")]
    return report["training"]["gap_by_epoch"][-1], remedies, lines[0]


# Runs that receive each kind of remedy: (what the verdict says, the run's arguments, a flag the remedy adds).
RUNS = {
    "larger lr and more epochs (still converging, slowly)": (
        "still converging",
        ["--trainer.max_epochs", "1", "--model.optimizer.lr", "0.001"],
        ["--model.optimizer.lr", "--trainer.max_epochs"],
    ),
    "averaging, or smaller steps (at the noise floor)": (
        "noise floor",
        ["--data.noise_std", "1.0"],
        ["--trainer.callbacks+=linreg.callbacks.AveragedSGD", "--model.optimizer.lr"],
    ),
    "averaging, or smaller steps over enough epochs (the book's own run, at its noise floor)": (
        "noise floor",
        [],
        ["--trainer.callbacks+=linreg.callbacks.AveragedSGD", "--model.optimizer.lr"],
    ),
    "smaller lr (above the stability bound)": (
        "stability bound",
        ["--model.optimizer.lr", "0.95", "--trainer.max_epochs", "1", "--data.num_train", "200"],
        ["--model.optimizer.lr"],
    ),
    "larger lr for Adam (its steps too small to arrive)": (
        "too small",
        ["--model.optimizer", "Adam", "--model.optimizer.lr", "0.001"],
        ["--model.optimizer.lr"],
    ),
}


@pytest.mark.slow
@pytest.mark.parametrize("kind", list(RUNS))
def test_each_remedy_printed_runs_and_brings_the_fit_closer(
    tmp_path: Path, capsys: pytest.CaptureFixture[str], kind: str
) -> None:
    said, args, flags = RUNS[kind]
    gap, remedies, verdict = _fit(tmp_path / "before", args, capsys)
    assert said in verdict
    printed = " ".join(" ".join(remedy) for remedy in remedies)
    for flag in flags:
        assert flag in printed
    for i, remedy in enumerate(remedies):
        assert "AveragedSGD" not in " ".join(args) or "AveragedSGD" not in " ".join(remedy)
        after, _, _ = _fit(tmp_path / f"after{i}", [*args, *remedy], capsys)
        assert after < gap, f"{remedy} left the gap at {after:.3g} (was {gap:.3g})"
