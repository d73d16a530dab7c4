"""The terminal output of a fit: what ended it, when that was before its max_epochs."""

from __future__ import annotations

import logging
import re
import warnings
from collections.abc import Iterator
from datetime import timedelta
from pathlib import Path
from typing import Any

import lightning as L
import pytest
from lightning.pytorch.callbacks import Callback, EarlyStopping, Timer

from linreg import LinearRegression, SyntheticRegressionData
from linreg.callbacks import default_callbacks
from linreg.callbacks.progress import LIGHTNING_LOGGERS, ConsoleProgress, quiet_lightning


def fit(capsys: pytest.CaptureFixture[str], callbacks: list[Callback], **trainer: Any) -> str:
    """Fits the book's model on 40 rows (4 steps an epoch) and returns what was printed on stderr."""
    L.seed_everything(0, verbose=False)
    data = SyntheticRegressionData(num_train=40, num_val=20, num_test=0)
    trainer = L.Trainer(
        accelerator="cpu",
        callbacks=[ConsoleProgress(), *callbacks],
        logger=False,
        enable_checkpointing=False,
        enable_model_summary=False,
        **trainer,
    )
    capsys.readouterr()
    trainer.fit(LinearRegression(input_dim=data.input_dim), datamodule=data)
    return capsys.readouterr().err


def test_a_fit_that_runs_its_epochs_says_nothing_about_stopping(capsys: pytest.CaptureFixture[str]) -> None:
    assert "training stopped" not in fit(capsys, [], max_epochs=2)


def test_max_steps_is_named_with_the_steps_and_epochs(capsys: pytest.CaptureFixture[str]) -> None:
    err = fit(capsys, [], max_epochs=10, max_steps=10)  # 4 steps an epoch: the third epoch is cut short
    assert "training stopped after 10 steps, in epoch 3 of max_epochs 10: max_steps 10 reached" in err


def test_early_stopping_is_named_with_its_monitor_patience_and_best_value(capsys: pytest.CaptureFixture[str]) -> None:
    # No improvement of 1e6 is possible: patience 2 runs out at the second validation after the first.
    stop = EarlyStopping(monitor="val/loss", min_delta=1e6, patience=2)
    err = fit(capsys, [stop], max_epochs=10)
    line = next(line for line in err.splitlines() if line.startswith("training stopped"))
    assert line.startswith("training stopped after 12 steps, in epoch 3 of max_epochs 10: EarlyStopping: val/loss")
    assert "min_delta 1e+06 in the last 2 validations (patience 2); best " in line
    assert float(line.rsplit(" ", 1)[1]) == pytest.approx(float(stop.best_score), rel=1e-5)


def test_early_stopping_held_back_by_min_steps_says_so(capsys: pytest.CaptureFixture[str]) -> None:
    stop = EarlyStopping(monitor="val/loss", min_delta=1e6, patience=1)
    err = fit(capsys, [stop], max_epochs=10, min_steps=20)  # patience runs out after epoch 2, min_steps in epoch 5
    assert "after 20 steps, in epoch 5 of max_epochs 10: EarlyStopping: val/loss" in err
    assert "in the last 4 validations (patience 1, then min_steps 20 reached); best " in err


def test_a_threshold_of_early_stopping_is_named(capsys: pytest.CaptureFixture[str]) -> None:
    err = fit(capsys, [EarlyStopping(monitor="val/loss", stopping_threshold=1e9)], max_epochs=10)
    assert "after 4 steps, in epoch 1 of max_epochs 10: EarlyStopping: Stopping threshold reached: val/loss" in err


def test_max_time_is_named(capsys: pytest.CaptureFixture[str]) -> None:
    err = fit(capsys, [Timer(duration=timedelta(seconds=1), interval="step")], max_epochs=100_000)
    assert re.search(
        r"training stopped after \d+ steps, in epoch \d+ of max_epochs 100000: max_time 0:00:01 ran out", err
    )


def test_a_time_limit_reached_before_the_first_step_is_named(capsys: pytest.CaptureFixture[str]) -> None:
    quiet_lightning()
    err = fit(capsys, [Timer(duration=timedelta(0))], max_epochs=3)
    assert "training stopped before its first step: max_time 0:00:00 ran out (Timer)" in err
    assert "Time limit reached" not in err  # Lightning's own line, said once in this project's words


def test_lightnings_own_line_about_the_limit_is_not_repeated(capsys: pytest.CaptureFixture[str]) -> None:
    quiet_lightning()
    err = fit(capsys, [], max_epochs=10, max_steps=10)
    assert "`Trainer.fit` stopped" not in err
    assert err.count("max_steps 10 reached") == 1


@pytest.fixture
def lightning_unquieted() -> Iterator[None]:
    """Lightning's loggers without the filters an earlier test's ``quiet_lightning`` left on them."""
    saved = {name: logging.getLogger(name).filters[:] for name in LIGHTNING_LOGGERS}
    for name in LIGHTNING_LOGGERS:
        logging.getLogger(name).filters.clear()
    yield
    for name, filters in saved.items():
        logging.getLogger(name).filters[:] = filters


@pytest.mark.usefixtures("lightning_unquieted")
def test_a_fit_from_python_with_the_default_callbacks_is_as_quiet_as_the_command_line(
    caplog: pytest.LogCaptureFixture, tmp_path: Path
) -> None:
    data = SyntheticRegressionData(num_train=40, num_val=20, num_test=0)
    with warnings.catch_warnings(record=True) as caught:
        warnings.simplefilter("always")  # every warning recorded, pytest's own filters included
        trainer = L.Trainer(
            max_epochs=1,
            accelerator="cpu",
            callbacks=default_callbacks(),
            logger=False,
            default_root_dir=tmp_path,  # the report and the figures
            enable_checkpointing=False,
            enable_model_summary=False,
        )
        with caplog.at_level(logging.INFO):
            trainer.fit(LinearRegression(input_dim=data.input_dim), datamodule=data)
    logged = [record.getMessage() for record in caplog.records]
    assert any(message.startswith("GPU available") for message in logged)  # what a user may act on stays
    assert not any("Tip" in message for message in logged)
    assert [str(warning.message) for warning in caught] == []
