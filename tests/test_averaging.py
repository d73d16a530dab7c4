"""AveragedSGD: the reported weights are the mean of the SGD iterates from the start epoch, recorded independently."""

from __future__ import annotations

import json
import os
import signal
from pathlib import Path

import lightning.pytorch as pl
import numpy as np
import pytest
import torch
from lightning.pytorch.utilities.exceptions import SIGTERMException

from linreg import LinearRegression, SyntheticRegressionData
from linreg.callbacks import AveragedSGD, FitReport
from linreg.checkpointing.interrupt import SaveOnInterrupt
from linreg.grouped import GroupedStepsRegression
from linreg.validation import UserInputError
from tests.conftest import ROOT, run_cli

STEPS_PER_EPOCH = 5  # 50 examples in batches of 10


class _Iterates(pl.Callback):
    """Records the weights after every optimizer step, and the weights each validation sees."""

    def __init__(self) -> None:
        self.after_step: list[tuple[int, torch.Tensor]] = []  # (epoch, weights)
        self.validated: list[torch.Tensor] = []

    def on_train_batch_end(self, trainer: pl.Trainer, pl_module: LinearRegression, *args: object) -> None:
        self.after_step.append((trainer.current_epoch, _params(pl_module)))

    def on_validation_epoch_end(self, trainer: pl.Trainer, pl_module: LinearRegression) -> None:
        if not trainer.sanity_checking:
            self.validated.append(_params(pl_module))


def _params(model: LinearRegression) -> torch.Tensor:
    return torch.cat([model.weight, model.bias.reshape(1)]).clone()


def _fit(averaging: AveragedSGD, max_epochs: int = 4) -> tuple[LinearRegression, _Iterates]:
    data = SyntheticRegressionData(true_w=3, num_train=50, num_val=10, batch_size=10)
    torch.manual_seed(0)
    model = LinearRegression(input_dim=3, init_std=1.0)
    iterates = _Iterates()
    trainer = pl.Trainer(
        max_epochs=max_epochs, logger=False, enable_checkpointing=False, enable_progress_bar=False,
        enable_model_summary=False, callbacks=[iterates, averaging],  # iterates first: it sees the SGD iterate
    )  # fmt: skip
    trainer.fit(model, data)
    return model, iterates


@pytest.mark.parametrize(("start", "first_step"), [(10, 10), (7, 7), (0.5, 10), (0, 0), (0.3, 6), (0.99, 19)])
def test_the_final_weights_are_the_mean_of_the_iterates_from_the_start(start: float, first_step: int) -> None:
    # 4 epochs of 5 steps: an int leaves that many steps out; a fraction f leaves int(f * 20) out, within an epoch.
    model, iterates = _fit(AveragedSGD(start=start))
    averaged = [w for _, w in iterates.after_step[first_step:]]
    assert len(averaged) == 4 * STEPS_PER_EPOCH - first_step
    torch.testing.assert_close(_params(model), torch.stack(averaged).mean(0))


def test_validation_sees_the_model_before_the_start_and_the_average_after() -> None:
    _, iterates = _fit(AveragedSGD(start=10))
    last_of_epoch = [w for i, (_, w) in enumerate(iterates.after_step) if (i + 1) % STEPS_PER_EPOCH == 0]
    assert torch.equal(iterates.validated[0], last_of_epoch[0])  # epochs 0 and 1: the SGD iterate itself
    assert torch.equal(iterates.validated[1], last_of_epoch[1])
    mean_of_epoch_2 = torch.stack([w for epoch, w in iterates.after_step if epoch == 2]).mean(0)
    torch.testing.assert_close(iterates.validated[2], mean_of_epoch_2)


@pytest.mark.parametrize("start", [-1, 1.0, 1.5, float("nan"), True, "2"])
def test_a_start_that_is_not_an_epoch_or_a_fraction_is_refused(start: object) -> None:
    with pytest.raises(
        UserInputError,
        match=r"start must be an integer >= 0 \(optimizer steps left out\) or in \[0, 1\) \(a fraction of the run",
    ):
        AveragedSGD(start=start)  # type: ignore[arg-type]


def test_a_model_taking_several_sgd_steps_per_batch_has_every_step_averaged() -> None:
    # The independent truth: the same SGD steps taken one per Lightning step (bit-identical updates, tested in
    # test_model.py), averaged by the same callback. Averaging only once per batch would give another mean.
    def fit(model: LinearRegression, batch_size: int) -> torch.Tensor:
        data = SyntheticRegressionData(true_w=3, num_train=60, num_val=10, batch_size=batch_size, seed=1)
        trainer = pl.Trainer(
            max_epochs=3, logger=False, enable_checkpointing=False, enable_progress_bar=False,
            enable_model_summary=False, callbacks=[AveragedSGD(start=4)],
        )  # fmt: skip
        trainer.fit(model, data)
        return _params(model)

    torch.manual_seed(0)
    one_per_batch = fit(LinearRegression(input_dim=3, init_std=1.0), batch_size=5)  # 12 steps an epoch
    torch.manual_seed(0)
    grouped = fit(GroupedStepsRegression(input_dim=3, mini_batch_size=5, init_std=1.0), batch_size=20)  # 4 of 3
    torch.testing.assert_close(grouped, one_per_batch)


def test_evaluating_a_checkpoint_scores_its_average_not_the_iterate_beside_it(tmp_path: object) -> None:
    # A checkpoint of an averaged fit holds the average as state_dict and the SGD iterate as current_model_state;
    # validate with AveragedSGD among the callbacks (the config's) must leave the average in the model.
    data = SyntheticRegressionData(true_w=3, num_train=50, num_val=10, batch_size=10)
    model = LinearRegression(input_dim=3)
    average = {k: torch.full_like(v, 1.0) for k, v in model.state_dict().items()}
    iterate = {k: torch.full_like(v, 2.0) for k, v in model.state_dict().items()}
    path = f"{tmp_path}/averaged.ckpt"
    trainer = pl.Trainer(logger=False, enable_checkpointing=False, enable_progress_bar=False, callbacks=[AveragedSGD()])
    trainer.strategy.connect(model)
    trainer.save_checkpoint(path)
    checkpoint = torch.load(path, weights_only=True)
    torch.save({**checkpoint, "state_dict": average, "current_model_state": iterate}, path)
    iterates = _Iterates()
    trainer = pl.Trainer(logger=False, enable_progress_bar=False, callbacks=[AveragedSGD(), iterates])
    trainer.validate(model, data, ckpt_path=path, verbose=False)
    assert torch.equal(iterates.validated[0], torch.ones(4))


def test_the_average_of_many_iterates_is_their_float64_mean_where_a_float32_running_mean_stalls() -> None:
    # 20,000 float32 iterates jittering by 1e-5 around weights of size 0.14: a float32 running mean's increment
    # (w - mean) / n falls below half its resolution (7e-9) after about a thousand of them, and it stops moving.
    generator = torch.Generator().manual_seed(0)
    centre = torch.randn(50, generator=generator, dtype=torch.float64) / 50**0.5
    drift = torch.linspace(0, 1e-5, 20_000, dtype=torch.float64)  # the iterates' mean moves as SGD's does
    iterates = [(centre + d + 1e-5 * torch.randn(50, generator=generator, dtype=torch.float64)).float() for d in drift]
    truth = torch.stack(iterates).double().mean(0)  # the reference: numpy-style float64 mean of the float32 iterates
    averaging, weights = AveragedSGD(start=0), torch.empty(50)
    averaging._weights = [weights]  # as on_train_start sets it: a view of the model's parameter
    float32_mean = iterates[0].clone()
    for n, iterate in enumerate(iterates, 1):
        weights.copy_(iterate)
        averaging._update()
        float32_mean.lerp_(iterate, 1.0 / n)  # torch's AveragedModel and a float32 lerp: the stalling mean
    se_like = 1e-5 / len(iterates) ** 0.5  # the scale at which the mean of the jitter is resolved
    assert float((float32_mean.double() - truth).abs().max()) > 10 * se_like  # the test is real
    assert float((averaging.average[0] - truth).abs().max()) < 1e-3 * se_like


def _trainer(callback: pl.Callback, **limits: object) -> pl.Trainer:
    return pl.Trainer(
        logger=False, enable_checkpointing=False, enable_progress_bar=False, enable_model_summary=False,
        callbacks=[callback], **limits,
    )  # fmt: skip


def test_a_start_in_steps_the_run_never_reaches_is_warned_of_at_fit_start_naming_both() -> None:
    # 16 training rows in one batch: 100 epochs are 100 optimizer steps, and step 300 never comes.
    data = SyntheticRegressionData(true_w=3, num_train=16, num_val=4, batch_size=16)
    averaging = AveragedSGD(start=300)
    warning = r"^AveragedSGD start 300 is at or past the run's last optimizer step \(100 planned\): averaging will not"
    with pytest.warns(UserWarning, match=warning):
        _trainer(averaging, max_epochs=100).fit(LinearRegression(input_dim=3), data)
    assert not averaging.started


RUNS = [(16, {"max_epochs": 100}, 100), (400, {"max_steps": 60}, 60)]  # (rows, the run's limit, its steps)


@pytest.mark.parametrize(("num_train", "limits", "steps"), RUNS)
def test_a_fractional_start_averages_the_rest_of_any_run(num_train: int, limits: dict[str, int], steps: int) -> None:
    # A quarter of the run left out, on a 16-row table (one step an epoch) and on a 400-row one cut by max_steps.
    data = SyntheticRegressionData(true_w=3, num_train=num_train, num_val=4, batch_size=16)
    averaging = AveragedSGD(start=0.25)
    _trainer(averaging, **limits).fit(LinearRegression(input_dim=3), data)
    assert averaging.averaged == steps - steps // 4


@pytest.mark.slow
@pytest.mark.parametrize(("config", "rows"), [("csv.yaml", 16), ("parquet.yaml", 40)])  # 40: two validation rows
def test_the_table_configs_keep_min_steps_and_average_on_a_small_table(tmp_path: Path, config: str, rows: int) -> None:
    rng = np.random.default_rng(0)
    X = rng.standard_normal((rows, 3))
    y = X @ [1.0, -2.0, 0.5] + 3.0 + 0.1 * rng.standard_normal(rows)
    lines = [",".join(str(float(v)) for v in [*x, t]) for x, t in zip(X, y, strict=True)]
    table = tmp_path / "small.csv"
    table.write_text("\n".join(["a,b,c,y", *lines, ""]))
    run_cli(
        "fit", "--config", str(ROOT / "configs" / config), "--data.path", str(table), "--data.target", "y",
        "--data.features", "null", "--trainer.logger.init_args.save_dir", str(tmp_path / "runs"),
    )  # fmt: skip
    report = json.loads(next((tmp_path / "runs").glob("*/version_0/report.json")).read_text())
    assert report["steps"] >= 1000  # min_steps, on a table of one batch an epoch
    assert report["estimator"]["averaged"]


def test_one_callback_object_in_two_fits_gives_the_second_fit_its_own_average() -> None:
    # The truth: the mean of the second fit's own iterates. Carrying the first fit's sum would pull the mean to it.
    averaging = AveragedSGD(start=10)
    _fit(averaging, max_epochs=2)  # another run: its iterates differ from those of the 4 epochs below
    model, iterates = _fit(averaging)
    assert averaging.averaged == 4 * STEPS_PER_EPOCH - 10
    torch.testing.assert_close(_params(model), torch.stack([w for _, w in iterates.after_step[10:]]).mean(0))


class _Fails(pl.Callback):
    def on_train_start(self, trainer: pl.Trainer, pl_module: pl.LightningModule) -> None:
        raise RuntimeError("this fit fails")


def test_a_failed_fit_has_no_report_not_an_earlier_fits(tmp_path: Path) -> None:
    data = SyntheticRegressionData(true_w=3, num_train=50, num_val=10, batch_size=10)
    report = FitReport()
    first = _trainer(report, max_epochs=1, default_root_dir=tmp_path)  # where report.json goes
    first.fit(LinearRegression(input_dim=3), data)
    assert FitReport.of(first) is not None
    second = _trainer(report, max_epochs=1, default_root_dir=tmp_path)
    second.callbacks.append(_Fails())  # type: ignore[attr-defined]
    with pytest.raises(RuntimeError, match="this fit fails"):
        second.fit(LinearRegression(input_dim=3), data)
    assert FitReport.of(second) is None
    assert report.report is None


class _SignalInValidation(pl.Callback):
    """Sends SIGTERM after the first batch of the validation at the end of ``epoch``, as a scheduler would."""

    def __init__(self, epoch: int) -> None:
        self.epoch = epoch

    def on_validation_batch_end(self, trainer: pl.Trainer, *args: object) -> None:
        if not trainer.sanity_checking and trainer.current_epoch == self.epoch:
            os.kill(os.getpid(), signal.SIGTERM)


def _averaged_fit(root: Path, *callbacks: pl.Callback, ckpt_path: Path | None = None) -> LinearRegression:
    data = SyntheticRegressionData(true_w=3, num_train=50, num_val=20, batch_size=10, eval_batch_size=5)
    torch.manual_seed(0)
    model = LinearRegression(input_dim=3, init_std=1.0)
    trainer = pl.Trainer(
        max_epochs=4, logger=False, enable_progress_bar=False,  # checkpointing on: the interrupt saves last.ckpt
        enable_model_summary=False, default_root_dir=root, callbacks=[AveragedSGD(start=3), *callbacks],
    )  # fmt: skip
    trainer.fit(model, data, ckpt_path=ckpt_path)
    return model


def test_a_signal_during_validation_saves_a_checkpoint_that_resumes_exactly(tmp_path: Path) -> None:
    # Validation runs on the average swapped into the model; the checkpoint must still hold the SGD iterate as the
    # iterate and the average as the average. The truth: the same fit, uninterrupted.
    uninterrupted = _params(_averaged_fit(tmp_path / "whole"))
    interrupt = SaveOnInterrupt()
    with pytest.raises(SIGTERMException):
        _averaged_fit(tmp_path / "cut", interrupt, _SignalInValidation(epoch=1))
    assert interrupt.saved is not None
    resumed = _params(_averaged_fit(tmp_path / "cut", ckpt_path=interrupt.saved))
    assert torch.equal(resumed, uninterrupted)
