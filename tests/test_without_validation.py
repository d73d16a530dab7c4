"""A fit without validation: every row trains (``val_fraction`` 0, ``num_val`` 0, or ``limit_val_batches`` 0), and
what monitors a validation metric says it stays idle instead of failing."""

from __future__ import annotations

import csv
import json
from pathlib import Path
from typing import Any

import lightning as L
import numpy as np
import pytest
from lightning.pytorch.callbacks import EarlyStopping, ModelCheckpoint

from linreg import LinearRegression, SyntheticRegressionData
from linreg.config_checks import CheckBeforeTraining
from linreg.data import CSVRegressionData
from linreg.validation import UserInputError
from tests.conftest import ROOT, run_cli


def test_a_zero_val_fraction_trains_on_every_row_but_the_test_split(tmp_path: Path) -> None:
    path = tmp_path / "t.csv"
    path.write_text("x,y\n" + "".join(f"{i},{(3 * i) % 7}\n" for i in range(20)))
    dm = CSVRegressionData(str(path), target="y", val_fraction=0.0, test_fraction=0.1)
    dm.setup("fit")
    assert (len(dm.train_data[0]), len(dm.val_data[0]), len(dm.test_data[0])) == (18, 0, 2)
    assert dm.split_chunks("val") is None  # the report and the figures leave the split out


def fit(tmp_path: Path, callbacks: list, **trainer: Any) -> L.Trainer:
    """Fits the book's model on 40 rows, without validation rows unless ``trainer`` switches validation off."""
    data = SyntheticRegressionData(num_train=40, num_val=0 if "limit_val_batches" not in trainer else 20, num_test=0)
    trainer = L.Trainer(
        accelerator="cpu",
        max_epochs=3,
        callbacks=[*callbacks, CheckBeforeTraining(lambda callback: type(callback).__name__)],
        logger=False,
        default_root_dir=tmp_path,
        enable_model_summary=False,
        enable_progress_bar=False,
        **trainer,
    )
    trainer.fit(LinearRegression(input_dim=data.input_dim), datamodule=data)
    return trainer


@pytest.mark.parametrize("trainer", [{}, {"limit_val_batches": 0}], ids=["no validation rows", "limit_val_batches 0"])
def test_callbacks_monitoring_validation_stay_idle_and_say_so(
    tmp_path: Path, capsys: pytest.CaptureFixture[str], trainer: dict
) -> None:
    best = ModelCheckpoint(dirpath=tmp_path / "best", monitor="val/loss")
    fitted = fit(tmp_path, [EarlyStopping(monitor="val/loss", patience=1), best], **trainer)
    assert (fitted.current_epoch, fitted.global_step) == (3, 12)  # every epoch ran: nothing stopped it
    assert "val/loss" not in fitted.callback_metrics
    assert not (tmp_path / "best").exists()  # no "best" by a metric that was never computed
    err = capsys.readouterr().err
    assert "validation is off (" in err
    assert (
        "EarlyStopping (EarlyStopping on val/loss), ModelCheckpoint (ModelCheckpoint on val/loss) have nothing" in err
    )
    assert "across ranks is zero" not in err  # Lightning is told, and builds no empty loader


def test_a_monitor_of_a_metric_never_logged_is_still_refused(tmp_path: Path) -> None:
    with pytest.raises(UserInputError, match=r"'val/mse' is not a metric this run logs"):
        fit(tmp_path, [EarlyStopping(monitor="val/mse")])


@pytest.mark.slow  # a whole process-like CLI fit of 100 epochs
def test_a_small_table_fits_every_row_from_the_command_line(tmp_path: Path) -> None:
    rows = (ROOT / "configs" / "houses.csv").read_text().splitlines()[:17]  # the header and 16 rows
    (tmp_path / "small.csv").write_text("\n".join(rows) + "\n")
    run_cli(
        "fit",
        "--config",
        str(ROOT / "configs" / "csv.yaml"),
        "--data.path",
        str(tmp_path / "small.csv"),
        "--data.val_fraction",
        "0",
        "--data.test_fraction",
        "0",
        "--trainer.logger.init_args.save_dir",
        str(tmp_path / "runs"),
    )
    run = tmp_path / "runs" / "csv" / "version_0"
    report = json.loads((run / "report.json").read_text())
    assert list(report["metrics"]) == ["train"]
    assert report["ols"]["num_examples"] == 16
    # Least squares on all 16 rows, by numpy, from the file itself.
    table = list(csv.DictReader(rows))
    X = np.array([[float(row[c]) for c in ("area_m2", "rooms", "age_years", "distance_km")] for row in table])
    y = np.array([float(row["price"]) for row in table])
    coefficients = np.linalg.lstsq(np.column_stack([X, np.ones(16)]), y, rcond=None)[0]
    np.testing.assert_allclose([row["ols"] for row in report["parameters"]], coefficients, rtol=1e-6)
    assert [p.name for p in (run / "checkpoints").iterdir()] == ["last.ckpt"]
