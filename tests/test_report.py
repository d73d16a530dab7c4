"""The report's rows and text: comparisons worked by hand, columns that depend on what is known."""

from __future__ import annotations

import pytest
import torch

from linreg.stats.ols import LeastSquaresFit
from linreg.stats.report import SE_LIMIT, estimator_names, format_report, parameter_rows, verdict


def _ols(w: list[float], b: float, se: list[float]) -> LeastSquaresFit:
    covariance = torch.diag(torch.tensor(se, dtype=torch.float64) ** 2)
    return LeastSquaresFit(
        torch.tensor(w, dtype=torch.float64), torch.tensor(b, dtype=torch.float64), covariance, 0.01, 100
    )


def _report(
    rows: list[dict],
    train_mse: float = 0.01,
    optimizer: str = "SGD",
    averaged: bool = False,
    mse_by_epoch: list[float] | None = None,
) -> dict:
    scores = {"mse": 0.01, "mae": 0.08, "r2": 0.99}
    return {
        "estimator": {**estimator_names(optimizer, averaged), "averaged": averaged, "lr": 0.01},
        "training": {"mse_by_epoch": mse_by_epoch or []},
        "parameters": rows,
        "ols": {"residual_std": 0.1, "num_examples": 100, "degrees_of_freedom": 97},
        "metrics": {
            "train": {"sgd": {**scores, "mse": train_mse}, "ols": scores},
            "val": {"sgd": scores, "ols": scores},
        },
    }


def test_rows_compare_sgd_with_the_truth_and_with_ols_in_standard_errors() -> None:
    ols = _ols([1.0, 2.0], 0.5, [0.1, 0.2, 0.05])
    sgd = (torch.tensor([1.3, 1.9], dtype=torch.float64), torch.tensor(0.5, dtype=torch.float64))
    rows = parameter_rows(["a", "b"], sgd, ols, (torch.tensor([1.0, 2.1]), 0.45))
    assert [r["name"] for r in rows] == ["w[a]", "w[b]", "b"]
    assert [r["sgd_minus_ols_in_se"] for r in rows] == pytest.approx([3.0, -0.5, 0.0])
    assert [r["sgd_minus_true"] for r in rows] == pytest.approx([0.3, -0.2, 0.05], abs=1e-6)
    assert [r["ols_se"] for r in rows] == pytest.approx([0.1, 0.2, 0.05])


def test_without_a_known_truth_the_true_columns_are_left_out() -> None:
    ols = _ols([1.0], 0.0, [0.1, 0.1])
    rows = parameter_rows(["x0"], (torch.tensor([1.05], dtype=torch.float64), torch.tensor(0.0)), ols, None)
    assert rows[0]["true"] is None
    assert rows[0]["sgd_minus_true"] is None
    text = format_report(_report(rows))
    header = next(line for line in text.splitlines() if line.startswith("parameter"))
    assert "true" not in header
    assert "(SGD-OLS)/SE" in header
    assert "+0.50" in text


def test_a_long_table_shows_the_parameters_farthest_from_ols() -> None:
    d = 30
    ols = _ols([0.0] * d, 0.0, [1.0] * (d + 1))
    sgd = torch.zeros(d, dtype=torch.float64)
    sgd[[3, 17]] = torch.tensor([4.0, -6.0], dtype=torch.float64)
    rows = parameter_rows([f"x{i}" for i in range(d)], (sgd, torch.tensor(0.0)), ols, None)
    text = format_report(_report(rows), max_rows=2)
    table = [line.split()[0] for line in text.splitlines() if line.startswith(("w[", "b "))]
    assert table == ["w[x3]", "w[x17]"]
    assert "2 of 31 parameters shown" in text
    assert "largest |SGD-OLS|/SE: 6.00 (w[x17])" in text


def _rows_at(z: float) -> list[dict]:
    """One coefficient ``z`` standard errors from OLS."""
    return parameter_rows(
        ["x0"], (torch.tensor([z], dtype=torch.float64), torch.tensor(0.0)), _ols([0.0], 0.0, [1.0, 1.0]), None
    )


@pytest.mark.parametrize(
    ("z", "train_mse", "short"),
    [(0.5, 0.01, False), (2.9, 0.0100999, False), (3.5, 0.01, True), (0.5, 0.0102, True)],
)
def test_the_verdict_says_short_of_least_squares_past_1_percent_of_mse_or_3_standard_errors(
    z: float, train_mse: float, short: bool
) -> None:
    line = verdict(_report(_rows_at(z), train_mse=train_mse, mse_by_epoch=[0.02, train_mse]))
    assert ("stopped short" in line) is short


# OLS's training MSE is 0.01 in _report: the excess is what each epoch leaves above it.
STILL_CLOSING_IN = [0.51, 0.33, 0.21]  # the excess falls by a third an epoch (Adam at too small a learning rate)
STALLED = [0.0135, 0.0102, 0.0102]  # the excess stays where the steps' jitter keeps it (SGD at a constant rate)


def test_a_fit_still_closing_in_is_told_to_take_more_or_larger_steps() -> None:
    line = verdict(_report(_rows_at(800.0), train_mse=0.21, optimizer="Adam", mse_by_epoch=STILL_CLOSING_IN))
    assert "was still closing in (training MSE 0.33 -> 0.21 in the last epoch)" in line
    assert "more epochs (--trainer.max_epochs) or a learning rate larger than 0.01 (--model.optimizer.lr)" in line
    assert "smaller" not in line
    assert "averaging" not in line


def test_a_fit_that_stalled_is_told_to_take_smaller_steps_or_average_them() -> None:
    line = verdict(_report(_rows_at(3.5), train_mse=0.0102, mse_by_epoch=STALLED))
    assert "had stalled" in line
    assert "averaging the iterates (--trainer.callbacks+=AveragedSGD)" in line
    assert "a smaller or decaying learning rate" in line
    assert "larger" not in line


def test_after_one_epoch_the_verdict_offers_both_remedies() -> None:
    line = verdict(_report(_rows_at(30.0), train_mse=0.03, mse_by_epoch=[0.03]))
    assert "more epochs" in line
    assert "if it stalls, averaging the iterates" in line


def test_the_report_names_the_optimizer_and_averaging_and_drops_a_remedy_already_used() -> None:
    text = format_report(_report(_rows_at(5.0), optimizer="Adam"))
    assert "the Adam estimate against least squares" in text
    assert "largest |Adam-OLS|/SE: 5.00" in text
    line = verdict(_report(_rows_at(5.0), averaged=True, mse_by_epoch=STALLED))
    assert line.startswith("verdict: averaged SGD stopped short")
    assert "averaging" not in line


def test_the_book_error_lines_are_true_minus_estimate_as_float32_tensors() -> None:
    ols = _ols([1.0, 2.0], 0.5, [0.1, 0.2, 0.05])
    sgd = (torch.tensor([1.3, 1.9], dtype=torch.float64), torch.tensor(0.5, dtype=torch.float64))
    rows = parameter_rows(["a", "b"], sgd, ols, (torch.tensor([1.0, 2.1]), 0.45))
    lines = format_report(_report(rows)).splitlines()
    # What the book's `print(f"error in estimating w: {true_w - w}")` prints for these values.
    assert lines[0] == f"error in estimating w: {torch.tensor([1.0 - 1.3, 2.1 - 1.9])}"
    assert lines[1] == f"error in estimating b: {torch.tensor([0.45 - 0.5])}"
    table = {line.split()[0]: line.split() for line in lines if line.startswith(("w[", "b "))}
    header = next(line for line in lines if line.startswith("parameter")).split()
    assert float(table["w[a]"][header.index("true-SGD")]) == pytest.approx(-0.3)  # the sign of the book lines


def test_the_legend_explains_true_columns_only_where_the_table_has_them() -> None:
    with_truth = parameter_rows(["a"], (torch.tensor([1.0], dtype=torch.float64), torch.tensor(0.0)),
                                _ols([1.0], 0.0, [0.1, 0.1]), (torch.tensor([1.0]), 0.0))  # fmt: skip
    assert "true-SGD: the error of the estimate" in format_report(_report(with_truth))
    text = format_report(_report(_rows_at(0.5)))  # no true values: a table of one's own
    assert "true" not in text.split("verdict:")[1]


def test_the_legend_draws_the_line_where_the_verdict_does() -> None:
    text = " ".join(format_report(_report(_rows_at(0.5))).split("verdict:")[1].split())
    assert f"Up to {SE_LIMIT:g} (the verdict's limit)" in text
    assert "About 1 or less" not in text
