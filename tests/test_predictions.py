"""predictions.csv: rows back in input order, exact values, atomic writes, and synthetic data predicted too."""

from __future__ import annotations

import csv
from pathlib import Path

import pytest
import torch

from linreg.callbacks.predictions import check_finite_predictions, in_input_order, write_csv
from linreg.data import SyntheticRegressionData
from linreg.validation import UserInputError
from tests.conftest import D2L_CONFIG, final_params, run_cli


def test_predictions_are_put_back_at_their_row_indices() -> None:
    rows = torch.randperm(100, generator=torch.Generator().manual_seed(0))
    predictions = rows.double() * 10  # the prediction for row i is 10 i
    assert torch.equal(in_input_order(predictions, rows), torch.arange(100).double() * 10)


@pytest.mark.parametrize("rows", [[0, 0, 2], [0, 1, 3], [0, 1]])
def test_rows_missing_or_repeated_are_an_error_not_a_silent_misalignment(rows: list[int]) -> None:
    with pytest.raises(RuntimeError, match="exactly once"):
        in_input_order(torch.zeros(3), torch.tensor(rows))


def test_written_values_read_back_exactly_and_nan_is_blank(tmp_path: Path) -> None:
    values = torch.tensor([0.1, -1 / 3, 1e-300, 617077.0, float("nan")], dtype=torch.float64)
    write_csv(tmp_path / "p.csv", {"line": torch.arange(2, 7), "prediction": values})
    with open(tmp_path / "p.csv", newline="") as file:
        rows = list(csv.reader(file))
    assert rows[0] == ["line", "prediction"]
    assert [row[0] for row in rows[1:]] == ["2", "3", "4", "5", "6"]
    assert rows[4][1] == "617077"  # a whole number stays one
    assert rows[5][1] == ""
    assert [float(row[1]) for row in rows[1:5]] == values[:4].tolist()


def test_a_failed_write_leaves_the_previous_file_and_no_temporary_file(tmp_path: Path) -> None:
    target = tmp_path / "predictions.csv"
    target.write_text("previous\n")
    with pytest.raises(ValueError, match="zip"):  # columns of unequal length fail part-way through the rows
        write_csv(target, {"a": torch.zeros(1000), "b": torch.zeros(999)})
    assert target.read_text() == "previous\n"
    assert [p.name for p in tmp_path.iterdir()] == ["predictions.csv"]


def test_predict_on_synthetic_data_writes_the_test_split_predictions(d2l_run: Path, tmp_path: Path) -> None:
    save_dir = tmp_path / "runs"
    checkpoint = d2l_run / "checkpoints" / "last.ckpt"
    run_cli("predict", "--config", str(D2L_CONFIG), "--trainer.logger.init_args.save_dir", str(save_dir),
            "--ckpt_path", str(checkpoint))  # fmt: skip
    (predict_dir,) = (save_dir / "d2l").iterdir()
    with open(predict_dir / "predictions.csv", newline="") as file:
        rows = list(csv.reader(file))
    assert rows[0] == ["prediction"]
    data = SyntheticRegressionData(seed=0)  # the config's data: the same seed draws the same test split
    data.setup("predict")
    X_test = data.test_data[0]
    params = final_params(d2l_run)
    expected = X_test @ params["net.0.weight"].reshape(-1) + params["net.0.bias"]
    torch.testing.assert_close(torch.tensor([float(r[0]) for r in rows[1:]]), expected, rtol=1e-5, atol=1e-5)


@pytest.mark.parametrize("bad", [float("inf"), float("nan")])
def test_a_prediction_that_is_not_finite_is_refused_naming_its_row(bad: float) -> None:
    columns = {"line": torch.tensor([2, 3, 4]), "prediction": torch.tensor([1.0, bad, 2.0], dtype=torch.float64)}
    with pytest.raises(UserInputError, match=rf"^line 3: the prediction is {bad} \(1 row\(s\) in all\)"):
        check_finite_predictions(columns)
    check_finite_predictions({"row": torch.tensor([0]), "prediction": torch.tensor([1e308], dtype=torch.float64)})
