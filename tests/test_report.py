"""The report's rows, text and verdict: comparisons worked by hand or with numpy, columns that depend on what is
known, and the runs the usual verdict cannot judge (untrained, noise-free labels, 16-bit precision)."""

from __future__ import annotations

import json
import math
from pathlib import Path

import numpy as np
import pytest
import torch
from lightning.pytorch import Trainer

from linreg.callbacks import FitReport
from linreg.callbacks.report import estimator
from linreg.data import SyntheticRegressionData
from linreg.model import LinearRegression
from linreg.stats.ols import LeastSquaresFit
from linreg.stats.report import build_report, estimator_names, format_report, parameter_rows
from linreg.stats.verdict import SE_LIMIT, resolution, verdict
from tests.conftest import fit_d2l


def _ols(w: list[float], b: float, se: list[float]) -> LeastSquaresFit:
    covariance = torch.diag(torch.tensor(se, dtype=torch.float64) ** 2)
    return LeastSquaresFit(
        torch.tensor(w, dtype=torch.float64), torch.tensor(b, dtype=torch.float64), covariance, 0.01, 100, 1.0
    )


def _report(
    rows: list[dict],
    gap: float = 0.0,
    optimizer: str = "SGD",
    averaged: bool = False,
    gaps: list[float] | None = None,
    precision: str = "32-true",
    target_variance: float = 1.0,
    lr: float = 0.01,
    floor: float = 0.0,
    distance: float = 0.1,
    steps_per_epoch: int = 100,
) -> dict:
    """A report of least squares (objective value 0.01, Hessian 2·I on 2 coefficients), as ``build_report`` makes."""
    scores = {"mse": 0.01, "mae": 0.08, "r2": 0.99}
    gaps = gaps or [gap]
    curvature = {"largest": 2.0, "smallest": 2.0, "condition": 1.0, "trace": 4.0}
    about = {"optimizer": optimizer, "averaged": averaged, "averaging_configured": averaged, "momentum": 0.0}
    return {
        "estimator": {**estimator_names(optimizer, averaged), **about, "lr": lr, "precision": precision},
        "trained": True,
        "training": {
            "mse_by_epoch": [],
            "gap_by_epoch": gaps,
            "epochs": len(gaps),
            "steps": steps_per_epoch * len(gaps),
            "early_stopping": False,
            "max_steps": -1,
        },
        "parameters": rows,
        "reference": {
            "kind": "least squares",
            "tag": "OLS",
            "objective": "MSE",
            "value": 0.01,
            "why": None,
            "w_norm": 1.0,
            "target_variance": target_variance,
            "curvature": curvature,
            "noise_floor": floor,
        },
        "ols": {"residual_std": 0.1, "num_examples": 100, "degrees_of_freedom": 97, "target_variance": target_variance},
        "metrics": {
            "train": {"sgd": {**scores, "mse": 0.01 + gaps[-1]}, "ols": scores},
            "val": {"sgd": scores, "ols": scores},
        },
        "w_norm": 1.0,
        "distance": distance,
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
    ("z", "gap", "short"),
    [(0.5, 0.0, False), (2.9, 0.0000499, False), (3.5, 0.0, True), (0.5, 0.0000501, True)],
)
def test_the_verdict_says_short_of_least_squares_past_half_a_percent_of_the_objective_or_3_standard_errors(
    z: float, gap: float, short: bool
) -> None:
    line = verdict(_report(_rows_at(z), gap=gap))  # the optimum's objective is 0.01: half a percent is 5e-5
    assert ("stopped short" in line) is short


def _remedies(line: str) -> list[str]:
    return [row.strip()[len("try ") :].split("  (")[0] for row in line.splitlines()[1:]]


def test_a_fit_still_converging_is_told_the_learning_rate_under_its_bound_and_the_epochs_the_rest_takes() -> None:
    # Hessian 2·I: the bound is 2/λmax = 1, so lr 0.01 is raised to half of it; λmin·lr = 0.02 per step.
    line = verdict(_report(_rows_at(800.0), gaps=[2.0, 1.0]))
    assert "still converging" in line
    target = 0.005 * 0.01  # the verdict's margin: half a percent of the optimum's objective
    efolds = math.log(1.0 / target)  # ~10: at lr 0.5 (1 per step) the run's 200 steps are enough
    epochs_at_001 = 2 + math.ceil(efolds / (0.01 * 2.0) / 100)
    assert _remedies(line) == ["--model.optimizer.lr 0.5", f"--trainer.max_epochs {epochs_at_001}"]
    assert "averaging" not in line


def test_a_fit_at_its_noise_floor_is_told_to_average_or_take_smaller_steps() -> None:
    line = verdict(_report(_rows_at(3.5), gaps=[2e-4, 2e-4], floor=1e-4))
    assert "noise floor" in line
    # A quarter of 0.01, rounded down to 1-2-5: steps k = 5 times smaller. At lr 0.01 the slowest direction shrinks
    # 0.02 per step (Hessian 2·I), 2 e-folds an epoch of 100 steps; the floor 5 times lower is ln 5 e-folds further.
    epochs = math.ceil(5 * (2 + math.log(5) / 2.0))
    assert _remedies(line) == [
        "--trainer.callbacks+=linreg.callbacks.AveragedSGD",
        f"--model.optimizer.lr 0.002 --trainer.max_epochs {epochs}",
    ]


def test_a_learning_rate_above_the_stability_bound_is_told_one_under_it() -> None:
    line = verdict(_report(_rows_at(50.0), gaps=[5.0, 50.0], lr=1.5))
    assert "above the stability bound 2(1 + momentum)/λmax = 1" in line
    assert _remedies(line) == ["--model.optimizer.lr 0.5"]


def test_adam_too_slow_to_arrive_is_told_a_learning_rate_that_covers_the_distance() -> None:
    # 5 from the optimum after 300 steps of about 0.001: steps of 4·5/300 = 0.067, rounded up to 0.1, arrive.
    report = _report(_rows_at(800.0), optimizer="Adam", gaps=[70.85, 68.16, 66.0], lr=0.001, distance=5.0)
    line = verdict(report)
    assert "learning rate 0.001 is too small" in line
    assert _remedies(line) == ["--model.optimizer.lr 0.1"]


def test_remedies_are_worded_as_python_arguments_for_a_fit_built_in_python() -> None:
    line = verdict(_report(_rows_at(3.5), gaps=[2e-4, 2e-4], floor=1e-4), python=True)
    epochs = math.ceil(5 * (2 + math.log(5) / 2.0))  # the noise-floor run's, derived in the test above
    assert _remedies(line) == [
        "AveragedSGD() among the Trainer's callbacks",
        f"Trainer(max_epochs={epochs}) and lr=0.002 in the model's optimizer",
    ]


def test_the_report_names_the_optimizer_and_averaging_and_drops_a_remedy_already_used() -> None:
    text = format_report(_report(_rows_at(5.0), optimizer="Adam"))
    assert "the Adam estimate against the exact optimum of MSE (least squares, OLS)" in text
    assert "largest |Adam-OLS|/SE: 5.00" in text
    line = verdict(_report(_rows_at(5.0), averaged=True, gaps=[2e-4, 2e-4], floor=1e-4))
    assert line.startswith("verdict: averaged SGD stopped short")
    assert "AveragedSGD" not in line


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
    with_truth = parameter_rows(
        ["a"],
        (torch.tensor([1.0], dtype=torch.float64), torch.tensor(0.0)),
        _ols([1.0], 0.0, [0.1, 0.1]),
        (torch.tensor([1.0]), 0.0),
    )
    assert "true-SGD: the error of the estimate" in format_report(_report(with_truth))
    text = format_report(_report(_rows_at(0.5)))  # no true values: a table of one's own
    assert "true" not in text.split("verdict:")[1]


def test_the_legend_draws_the_line_where_the_verdict_does() -> None:
    text = " ".join(format_report(_report(_rows_at(0.5))).split("verdict:")[1].split())
    assert f"Up to {SE_LIMIT:g} (the verdict's limit)" in text
    assert "About 1 or less" not in text


def _noise_free(num_train: int = 200) -> tuple[SyntheticRegressionData, np.ndarray, np.ndarray]:
    """Labels without noise, with numpy's least-squares solution ``[w, b]`` of the training split and its labels."""
    data = SyntheticRegressionData(true_w=[2.0, -3.4, 5.6], noise_std=0.0, num_train=num_train, num_val=50)
    data.setup("fit")
    X, y = (t.double().numpy() for t in data.train_data)
    A = np.column_stack([X, np.ones(len(X))])
    return data, np.linalg.lstsq(A, y.reshape(-1), rcond=None)[0], y.reshape(-1)


def _report_of(data: SyntheticRegressionData, coefficients: np.ndarray, precision: str = "32-true") -> dict:
    """The report of a model with these ``[w, b]`` (float64), built as the callback builds it."""
    w, b = torch.tensor(coefficients[:-1]), torch.tensor(coefficients[-1])
    about = {**estimator_names("SGD", averaged=False), "averaged": False, "lr": 0.03, "precision": precision}
    cpu, run = torch.device("cpu"), {"gap_by_epoch": [1.0, 0.5], "epochs": 2, "steps": 14}
    return build_report(lambda x: x.double() @ w + b, (w, b), data, cpu, about, run)


def test_noise_free_labels_are_judged_against_their_variance_not_the_noise() -> None:
    data, beta, _ = _noise_free()
    line = verdict(_report_of(data, beta.astype(np.float32).astype(np.float64)))  # OLS to float32's last place
    assert line.startswith("verdict: the optimum fits the training labels almost exactly")
    assert "SGD reached the optimum of its objective" in line
    assert "stopped short" not in line


def test_a_fit_of_noise_free_labels_off_by_more_than_rounding_stopped_short() -> None:
    data, beta, y = _noise_free()
    off = beta + np.array([1e-4, 0.0, 0.0, 0.0])
    X = data.train_data[0].double().numpy()
    excess = np.mean((X @ off[:-1] + off[-1] - y) ** 2) - np.mean((X @ beta[:-1] + beta[-1] - y) ** 2)
    report = _report_of(data, off)
    assert report["training"]["gap_by_epoch"][-1] == pytest.approx(excess, rel=1e-6)  # the exact gap, vs numpy
    assert excess / np.var(y) > resolution("32-true")
    assert "stopped short of the optimum of its objective" in verdict(report)


def test_where_least_squares_fits_exactly_a_model_with_any_error_has_not_reached_it() -> None:
    report = _report(_rows_at(0.0), gaps=[0.5, 0.25])
    report["reference"]["value"] = 0.0
    assert "stopped short" in verdict(report)


def test_at_16_bit_precision_a_gap_within_its_rounding_is_not_blamed_on_sgd() -> None:
    data, beta, _ = _noise_free()
    off = beta + np.array([1e-3, 0.0, 0.0, 0.0])  # an excess of ~1e-6 var(y): finer than bf16's 2^-8
    for precision in ("16-mixed", "bf16-mixed", "bf16-true", "16-true"):
        line = verdict(_report_of(data, off, precision))
        assert line.startswith(f"verdict: at precision {precision} the comparison with the optimum cannot resolve")
        assert "try" not in line
    assert "SGD stopped short" in verdict(_report_of(data, off, "32-true"))
    assert "SGD stopped short" in verdict(_report_of(data, beta + np.array([1.0, 0, 0, 0]), "bf16-mixed"))


def test_at_16_bit_precision_noisy_labels_are_still_judged_in_standard_errors() -> None:
    # The optimum's objective 0.01 is a quarter of var(y): half a percent of it is coarser than bf16 rounding.
    report = _report(_rows_at(0.5), gaps=[2e-4, 2e-4], floor=1e-4, precision="bf16-mixed", target_variance=0.04)
    assert "stopped short" in verdict(report)
    assert "noise floor" in verdict(report)


def test_the_resolution_is_ten_units_in_the_last_place_of_the_arithmetic() -> None:
    assert resolution("64-true") == pytest.approx((10 * 2.0**-53) ** 2)
    assert resolution("16-mixed") == resolution("16-true") == pytest.approx((10 * 2.0**-11) ** 2)
    assert resolution("bf16-true") == pytest.approx((10 * 2.0**-8) ** 2)


def test_the_report_reads_the_trainers_precision() -> None:
    trainer = Trainer(accelerator="cpu", precision="bf16-mixed", logger=False, enable_checkpointing=False)
    assert estimator(trainer)["precision"] == "bf16-mixed"


def test_an_untrained_model_is_left_out_and_least_squares_shown_alone() -> None:
    data, beta, _ = _noise_free()
    cpu, untouched = torch.device("cpu"), (torch.zeros(3), torch.tensor(0.0))
    report = build_report(lambda x: pytest.fail("scored"), untouched, data, cpu, trained=False)
    assert report["trained"] is False
    assert all(set(row) == {"name", "true", "ols", "ols_se"} for row in report["parameters"])
    assert [row["ols"] for row in report["parameters"]] == pytest.approx(beta.tolist())
    assert set(report["metrics"]["train"]) == {"ols"}
    text = format_report(report)
    assert "error in estimating" not in text
    assert "SGD" not in text.replace("0 SGD steps", "")
    header = next(line for line in text.splitlines() if line.startswith("parameter")).split()
    assert header == ["parameter", "true", "OLS", "±", "SE"]  # least squares: the optimum of the MSE
    assert "verdict: the model was not trained (0 SGD steps" in text


@pytest.mark.parametrize("limit", [{"max_epochs": 0}, {"limit_train_batches": 0}])
def test_the_callback_reports_a_fit_of_no_steps_as_untrained(limit: dict, tmp_path: Path) -> None:
    data = SyntheticRegressionData(num_train=40, num_val=20, num_test=0)
    report = FitReport()
    trainer = Trainer(
        accelerator="cpu",
        logger=False,
        enable_checkpointing=False,
        enable_progress_bar=False,
        enable_model_summary=False,
        callbacks=[report],
        default_root_dir=tmp_path,  # where report.json is written
        **{"max_epochs": 1, **limit},
    )
    trainer.fit(LinearRegression(input_dim=5), datamodule=data)
    assert report.report is not None
    assert report.report["trained"] is False
    assert report.report["steps"] == 0
    assert json.loads((tmp_path / "report.json").read_text())["trained"] is False  # without a logger: the root dir


@pytest.mark.slow
def test_the_cli_says_a_run_of_zero_epochs_trained_nothing(tmp_path: Path, capsys: pytest.CaptureFixture) -> None:
    run = fit_d2l(tmp_path, "--trainer.max_epochs", "0")
    assert "verdict: the model was not trained" in capsys.readouterr().out
    assert (run / "report.json").is_file()
