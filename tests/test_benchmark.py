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


@pytest.mark.slow
def test_tables_mode_reports_linreg_and_scikit_learn_side_by_side() -> None:
    report = _benchmark(
        "tables", "--rows", "20000", "--d", "5", "--read-rows", "2000", "--csv-rows", "5000", "--row-group", "4096"
    )  # fmt: skip
    fit = report["fit"]
    for mode in ("streamed", "in_memory"):
        assert fit[mode]["train_rows_per_s"] > 0
        assert 0 < fit[mode]["fixed_seconds"] < fit[mode]["seconds"]
        assert fit[mode]["largest_se_from_ols"] < 1  # the config reaches least squares on these data
    assert set(fit["sklearn"]) >= {"SGDRegressor one epoch, in memory", "LinearRegression (closed form)"}
    assert fit["sklearn"]["LinearRegression (closed form)"]["largest_se_from_ols"] < 1e-6  # it is least squares
    assert report["csv"]["linreg"]["largest_se_from_ols"] < 1
    assert report["csv"]["sklearn_script_seconds"] > 0


@pytest.mark.slow  # a whole process or several fits: seconds
def test_the_plain_book_script_reproduces_the_books_result() -> None:
    result = subprocess.run(
        [sys.executable, str(ROOT / "linreg" / "benchmark" / "book.py")], capture_output=True, text=True, check=True
    )
    lines = result.stdout.splitlines()
    assert lines[0].startswith("epoch 1, loss")
    final_loss = float(lines[2].split()[-1])
    assert final_loss < 3e-4  # the book's run ends near the noise floor, 1e-4
