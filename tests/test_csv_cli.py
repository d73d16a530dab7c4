"""A CSV file of one's own through the command line: fit, predict to predictions.csv, and bad files refused."""

from __future__ import annotations

import csv
import json
import subprocess
import sys
from pathlib import Path

import numpy as np
import pytest
import torch

from tests.conftest import ROOT, run_cli
from tests.test_csv_data import split_rows

# Features on scales 1e3 and 1e-2 apart: plain SGD on the raw columns diverges (see the first test).
MEANS = np.array([5e3, 0.05, 0.0, 100.0])
STDS = np.array([1e3, 1e-2, 1.0, 10.0])
TRUE_W = np.array([0.003, 200.0, 1.5, -0.2])
TRUE_B = 10.0
NOISE_STD = 1.0
FILE_COLUMNS = ["target y", "x_small", "x big", "x3", "x4"]
FEATURES = ["x big", "x_small", "x4", "x3"]  # not the file's order


def make_table(n: int = 2000, seed: int = 0) -> tuple[np.ndarray, np.ndarray]:
    """``(X, y)`` in the order of FEATURES: ``y = X w + b + N(0, 1)``, R² about 0.95."""
    rng = np.random.default_rng(seed)
    X = MEANS + STDS * rng.standard_normal((n, 4))
    return X, X @ TRUE_W + TRUE_B + NOISE_STD * rng.standard_normal(n)


def write_awkward_csv(path: Path, X: np.ndarray, y: np.ndarray) -> Path:
    """A BOM, quoted and padded names, spaces around cells, CRLF line endings, columns in another order."""
    by_name = dict(zip(FEATURES, X.T.tolist(), strict=True)) | {"target y": y.tolist()}
    header = '\ufeff "target y" , x_small ,"x big", x3,x4'
    rows = [" , ".join(repr(by_name[name][i]) for name in FILE_COLUMNS) for i in range(len(y))]
    path.write_bytes("\r\n".join([header, *rows, ""]).encode())
    return path


def lstsq(X: np.ndarray, y: np.ndarray) -> tuple[np.ndarray, float]:
    solution, *_ = np.linalg.lstsq(np.column_stack([X, np.ones(len(X))]), y, rcond=None)
    return solution[:-1], float(solution[-1])


def r2(y: np.ndarray, pred: np.ndarray) -> float:
    return float(1 - ((y - pred) ** 2).sum() / ((y - y.mean()) ** 2).sum())


def csv_args(data: Path, save_dir: Path) -> list[str]:
    return [
        "--data", "CSVRegressionData",
        "--data.path", str(data),
        "--data.target", "target y",
        "--data.features", f"[{', '.join(FEATURES)}]",
        "--trainer.logger.init_args.save_dir", str(save_dir),
        "--trainer.logger.init_args.name", "csv",
    ]  # fmt: skip


def latest_run(save_dir: Path) -> Path:
    return max((save_dir / "csv").glob("version_*"), key=lambda p: int(p.name.split("_")[1]))


def read_predictions(path: Path) -> dict[str, list[str]]:
    with open(path, newline="") as file:
        rows = list(csv.reader(file))
    return {name: [row[i] for row in rows[1:]] for i, name in enumerate(rows[0])}


@pytest.fixture(scope="module")
def fitted(tmp_path_factory: pytest.TempPathFactory) -> dict:
    """One fit and one predict of the awkward CSV file, shared by the tests that read their outputs."""
    tmp = tmp_path_factory.mktemp("csv")
    X, y = make_table()
    data = write_awkward_csv(tmp / "my data.csv", X, y)
    args = csv_args(data, tmp / "runs")
    run_cli("fit", *args, "--data.batch_size", "32", "--trainer.max_epochs", "10", "--trainer.accelerator", "cpu")
    fit_dir = latest_run(tmp / "runs")
    checkpoint = fit_dir / "checkpoints" / "last.ckpt"
    run_cli("predict", *args, "--ckpt_path", str(checkpoint), "--trainer.accelerator", "cpu")
    return {"X": X, "y": y, "data": data, "checkpoint": checkpoint, "predict_dir": latest_run(tmp / "runs")}


def original_units_from_checkpoint(checkpoint: Path) -> tuple[np.ndarray, float]:
    """``y = x w + b`` on the raw columns, worked out from the saved weights and the saved statistics."""
    saved = torch.load(checkpoint, weights_only=True)
    w = saved["state_dict"]["net.0.weight"].double().reshape(-1).numpy()
    b = saved["state_dict"]["net.0.bias"].double().item()
    stats = saved["CSVRegressionData"]
    x_mean, x_std = stats["x_mean"].numpy(), stats["x_std"].numpy()
    y_mean, y_std = stats["y_mean"], stats["y_std"]
    # y = y_mean + y_std * (b + sum_j w_j (x_j - x_mean_j) / x_std_j)
    return y_std * w / x_std, y_mean + y_std * (b - (w * x_mean / x_std).sum())


def test_plain_sgd_on_the_raw_columns_diverges() -> None:
    X, y = make_table()
    X_raw, y_raw = torch.tensor(X, dtype=torch.float32), torch.tensor(y, dtype=torch.float32).reshape(-1, 1)
    model = torch.nn.Linear(4, 1)
    optimizer = torch.optim.SGD(model.parameters(), lr=0.03)
    for start in range(0, 320, 32):
        loss = torch.nn.functional.mse_loss(model(X_raw[start : start + 32]), y_raw[start : start + 32])
        optimizer.zero_grad()
        loss.backward()
        optimizer.step()
    assert not loss.item() < 1e6


def test_r2_on_the_full_table_is_within_0_01_of_least_squares(fitted: dict) -> None:
    X, y = fitted["X"], fitted["y"]
    w, b = lstsq(X, y)
    predictions = np.array(read_predictions(fitted["predict_dir"] / "predictions.csv")["prediction"], dtype=float)
    assert abs(r2(y, predictions) - r2(y, X @ w + b)) < 0.01


def test_coefficients_in_original_units_are_close_to_least_squares(fitted: dict) -> None:
    X, y = fitted["X"], fitted["y"]
    w_ls, b_ls = lstsq(X, y)
    design = np.column_stack([X, np.ones(len(X))])
    residual_var = ((y - design @ np.append(w_ls, b_ls)) ** 2).sum() / (len(y) - 5)
    standard_errors = np.sqrt(residual_var * np.diag(np.linalg.inv(design.T @ design)))
    w, b = original_units_from_checkpoint(fitted["checkpoint"])
    # SGD stops near, not at, the least-squares solution: within the statistical uncertainty of that solution.
    assert (np.abs(np.append(w, b) - np.append(w_ls, b_ls)) < 3 * standard_errors).all()


def test_report_states_the_fit_in_the_columns_own_units(fitted: dict) -> None:
    report = json.loads((fitted["checkpoint"].parents[1] / "report.json").read_text())
    X, y = fitted["X"], fitted["y"]
    train_rows = split_rows(len(y), 0.1, 0.1, seed=0)[0].numpy()  # the data module's defaults
    X_train, y_train = X[train_rows], y[train_rows]
    w_ls, b_ls = lstsq(X_train, y_train)
    residuals = y_train - (X_train @ w_ls + b_ls)
    ols = {row["name"]: row["ols"] for row in report["parameters"]}
    np.testing.assert_allclose([ols[f"w[{name}]"] for name in FEATURES], w_ls, rtol=1e-6)
    assert report["ols"]["residual_std"] == pytest.approx(np.sqrt((residuals**2).sum() / (len(y_train) - 5)), rel=1e-6)
    assert report["metrics"]["train"]["ols"]["mse"] == pytest.approx((residuals**2).mean(), rel=1e-6)
    assert report["ols"]["residual_std"] == pytest.approx(NOISE_STD, rel=0.1)  # the noise the table was made with


def test_predictions_csv_has_one_row_per_input_row_in_input_order(fitted: dict) -> None:
    X, y = fitted["X"], fitted["y"]
    columns = read_predictions(fitted["predict_dir"] / "predictions.csv")
    assert list(columns) == ["line", "target y", "prediction"]
    assert columns["line"] == [str(i) for i in range(2, len(y) + 2)]
    assert [float(v) for v in columns["target y"]] == y.tolist()  # written exactly, in file order
    w, b = original_units_from_checkpoint(fitted["checkpoint"])
    np.testing.assert_allclose(np.array(columns["prediction"], dtype=float), X @ w + b, rtol=1e-5, atol=1e-4)


def test_predict_from_a_checkpoint_keeps_its_statistics_when_the_file_changes(fitted: dict, tmp_path: Path) -> None:
    X, y = fitted["X"], fitted["y"]
    grown = write_awkward_csv(tmp_path / "grown.csv", np.vstack([X, 10 * X[:500]]), np.concatenate([y, 10 * y[:500]]))
    args = csv_args(grown, tmp_path / "runs")
    run_cli("predict", *args, "--ckpt_path", str(fitted["checkpoint"]), "--trainer.accelerator", "cpu")
    before = read_predictions(fitted["predict_dir"] / "predictions.csv")["prediction"]
    after = read_predictions(latest_run(tmp_path / "runs") / "predictions.csv")["prediction"]
    assert len(after) == len(y) + 500
    np.testing.assert_allclose(np.array(after[: len(y)], dtype=float), np.array(before, dtype=float), rtol=1e-6)


def test_predict_from_a_checkpoint_accepts_a_file_whose_column_is_now_constant(fitted: dict, tmp_path: Path) -> None:
    X, y = fitted["X"].copy(), fitted["y"]
    X[:, FEATURES.index("x3")] = 1.0  # constant now; the checkpoint's statistics come from the training file
    changed = write_awkward_csv(tmp_path / "changed.csv", X, y)
    run_cli("predict", *csv_args(changed, tmp_path / "runs"), "--ckpt_path", str(fitted["checkpoint"]))
    predictions = np.array(read_predictions(latest_run(tmp_path / "runs") / "predictions.csv")["prediction"], float)
    w, b = original_units_from_checkpoint(fitted["checkpoint"])
    np.testing.assert_allclose(predictions, X @ w + b, rtol=1e-5, atol=1e-4)


def test_predict_file_without_the_target_gets_predictions(fitted: dict, tmp_path: Path) -> None:
    new_rows = tmp_path / "new.csv"
    new_rows.write_text("x4,x3,x big,x_small\n100,0,5000,0.05\n110,1,4000,0.06\n")
    args = [*csv_args(fitted["data"], tmp_path / "runs"), "--data.predict_path", str(new_rows)]
    run_cli("predict", *args, "--ckpt_path", str(fitted["checkpoint"]), "--trainer.accelerator", "cpu")
    columns = read_predictions(latest_run(tmp_path / "runs") / "predictions.csv")
    assert list(columns) == ["line", "prediction"]
    w, b = original_units_from_checkpoint(fitted["checkpoint"])
    expected = np.array([[5000, 0.05, 100, 0], [4000, 0.06, 110, 1]]) @ w + b
    np.testing.assert_allclose(np.array(columns["prediction"], dtype=float), expected, rtol=1e-5)


def test_a_bad_predict_file_leaves_no_run_directory_and_no_predictions(
    fitted: dict, tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    new_rows = tmp_path / "new.csv"
    new_rows.write_text("x4,x3,x big,x_small\n100,0,5000,0.05\n110,1,inf,0.06\n")
    args = [*csv_args(fitted["data"], tmp_path / "runs"), "--data.predict_path", str(new_rows)]
    with pytest.raises(SystemExit) as exit_info:
        run_cli("predict", *args, "--ckpt_path", str(fitted["checkpoint"]))
    assert exit_info.value.code == 2
    assert f"{new_rows}: line 3, column 'x big': 'inf' is not a finite number" in capsys.readouterr().err
    assert not (tmp_path / "runs").exists()


def test_the_example_config_fits_and_predicts_the_new_houses(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.chdir(ROOT)  # the config's paths are relative to the repository root
    config = ["--config", str(ROOT / "configs" / "csv.yaml"), "--trainer.logger.init_args.save_dir", str(tmp_path)]
    run_cli("fit", *config, "--trainer.max_epochs", "2")
    checkpoint = tmp_path / "csv" / "version_0" / "checkpoints" / "last.ckpt"
    run_cli("predict", *config, "--ckpt_path", str(checkpoint), "--data.predict_path", "configs/houses_new.csv")
    columns = read_predictions(tmp_path / "csv" / "version_1" / "predictions.csv")
    assert list(columns) == ["line", "prediction"]
    assert columns["line"] == ["2", "3", "4", "5", "6"]


@pytest.mark.slow
def test_predict_under_ddp_writes_the_same_file_as_one_process(fitted: dict, tmp_path: Path) -> None:
    args = csv_args(fitted["data"], tmp_path / "runs")
    command = [sys.executable, "-m", "linreg", "predict", *args, "--ckpt_path", str(fitted["checkpoint"])]
    ddp = ["--trainer.accelerator", "cpu", "--trainer.strategy", "ddp", "--trainer.devices", "2"]
    # Small batches, so each process gets many, interleaved with the other's in input order.
    result = subprocess.run(
        [*command, *ddp, "--data.eval_batch_size", "64"], capture_output=True, text=True, check=False
    )
    assert result.returncode == 0, result.stderr[-2000:]
    ddp_columns = read_predictions(latest_run(tmp_path / "runs") / "predictions.csv")
    one_process = read_predictions(fitted["predict_dir"] / "predictions.csv")
    assert ddp_columns["line"] == one_process["line"]
    assert ddp_columns["target y"] == one_process["target y"]
    # Other batch sizes may round differently in float32; the order is what this checks.
    np.testing.assert_allclose(
        np.array(ddp_columns["prediction"], dtype=float), np.array(one_process["prediction"], dtype=float), rtol=1e-6
    )


def test_predict_with_only_a_checkpoint_uses_the_data_module_of_its_run(
    fitted: dict, tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    new_rows = tmp_path / "new.csv"
    new_rows.write_text("x4,x3,x big,x_small\n100,0,5000,0.05\n")
    run_cli("predict", "--ckpt_path", str(fitted["checkpoint"]), "--data.predict_path", str(new_rows))
    run_config = fitted["checkpoint"].parents[1] / "config.yaml"
    assert (
        f"predict: no --config was given; using that of the checkpoint's run, {run_config}" in capsys.readouterr().out
    )
    columns = read_predictions(latest_run(fitted["checkpoint"].parents[3]) / "predictions.csv")
    w, b = original_units_from_checkpoint(fitted["checkpoint"])
    np.testing.assert_allclose(np.array(columns["prediction"], dtype=float), [5000, 0.05, 100, 0] @ w + b, rtol=1e-5)
