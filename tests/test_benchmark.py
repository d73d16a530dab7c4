"""The benchmark runs end to end on a tiny problem and reports its figures (no timing is asserted)."""

import json
import subprocess
import sys

import pytest

from tests.conftest import ROOT


def _benchmark(*args: str) -> dict:
    result = subprocess.run(
        [sys.executable, "-m", "linreg.benchmark", *args, "--json"],
        capture_output=True, text=True, cwd=ROOT, check=False,
    )  # fmt: skip
    assert result.returncode == 0, result.stderr[-2000:]
    return json.loads(result.stdout)


@pytest.mark.slow
def test_loops_mode_reports_every_candidate_and_the_ratios() -> None:
    report = _benchmark("--n", "4096", "--d", "8", "--batch-size", "64", "--repeats", "1")
    assert set(report["median_examples_per_s"]) == {
        "book_loop",
        "fused_loop",
        "fused_index_select",
        "bare_lightning",
        "linreg",
    }
    assert all(v > 0 for v in report["median_examples_per_s"].values())
    assert set(report["ratios"]) == {
        "linreg/fused_loop",
        "linreg/fused_index_select",
        "linreg/book_loop",
        "linreg_step/bare_lightning_step",
    }


def test_the_plain_book_script_reproduces_the_books_result() -> None:
    result = subprocess.run(
        [sys.executable, str(ROOT / "linreg" / "benchmark" / "book.py")], capture_output=True, text=True, check=True
    )
    lines = result.stdout.splitlines()
    assert lines[0].startswith("epoch 1, loss")
    final_loss = float(lines[2].split()[-1])
    assert final_loss < 3e-4  # the book's run ends near the noise floor, 1e-4
