"""The evaluation of a fit, read back from its run directory: curves, report.json, hparams, figures."""

from __future__ import annotations

import json
from pathlib import Path

import numpy as np
import pytest
import torch
import yaml
from matplotlib.image import imread
from tensorboard.backend.event_processing.event_accumulator import EventAccumulator
from tensorboard.plugins.hparams import metadata

from linreg.data import SyntheticRegressionData
from tests.conftest import D2L_CONFIG, fit_d2l, run_cli

TRUE_W = torch.tensor([2.0, -3.4, 5.6, 3.2, -0.6])
TRUE_B = 4.2


def _events(run_dir: Path) -> EventAccumulator:
    events = EventAccumulator(str(run_dir))
    events.Reload()
    return events


def _report(run_dir: Path) -> dict:
    return json.loads((run_dir / "report.json").read_text())


def _training_data(run_dir: Path) -> tuple[np.ndarray, np.ndarray]:
    """The run's training split, rebuilt from its saved config, as ``[X 1]`` and ``y`` in float64."""
    config = yaml.safe_load((run_dir / "config.yaml").read_text())
    data = SyntheticRegressionData(**config["data"]["init_args"])
    data.setup("fit")
    X, y = data.train_data
    return np.column_stack([X.double().numpy(), np.ones(len(X))]), y.double().numpy().reshape(-1)


def test_recovery_curves_start_at_the_initial_weights_and_follow_every_epoch(d2l_run: Path) -> None:
    events = _events(d2l_run)
    curves = ["params/w_error", "params/b_error", "params/w_gap_ols", "params/b_gap_ols", "params/b"]
    curves += [f"params/w/x{i}" for i in range(5)]
    assert set(curves) <= set(events.Tags()["scalars"])
    for tag in curves:
        assert len(events.Scalars(tag)) == 4, tag  # before the first step, then after each of 3 epochs
    w_error = [e.value for e in events.Scalars("params/w_error")]
    # The weights start near 0 (std 0.01) and the bias at 0: the errors start at about |w_true| and b_true.
    assert w_error[0] == pytest.approx(TRUE_W.norm().item(), abs=0.1)
    assert events.Scalars("params/b_error")[0].value == pytest.approx(TRUE_B, abs=1e-6)
    assert w_error[-1] < 5e-3
    final = torch.tensor([events.Scalars(f"params/w/x{i}")[-1].value for i in range(5)])
    torch.testing.assert_close(final, TRUE_W, rtol=0, atol=5e-3)


def test_report_ols_matches_numpy_lstsq_on_the_training_data(d2l_run: Path) -> None:
    A, y = _training_data(d2l_run)
    beta = np.linalg.lstsq(A, y, rcond=None)[0]
    residual = y - A @ beta
    s2 = residual @ residual / (A.shape[0] - A.shape[1])
    se = np.sqrt(np.diag(s2 * np.linalg.inv(A.T @ A)))
    report = _report(d2l_run)
    rows = report["parameters"]
    assert [row["name"] for row in rows] == [f"w[x{i}]" for i in range(5)] + ["b"]
    np.testing.assert_allclose([row["ols"] for row in rows], beta, rtol=0, atol=1e-6)
    np.testing.assert_allclose([row["ols_se"] for row in rows], se, rtol=1e-6)
    np.testing.assert_allclose([row["true"] for row in rows], [*TRUE_W.tolist(), TRUE_B], rtol=1e-6)
    assert report["ols"]["residual_variance"] == pytest.approx(s2, rel=1e-9)
    assert report["ols"]["degrees_of_freedom"] == 1000 - 6
    # OLS minimises the training MSE: its loss there is RSS / n, and no other estimate does better.
    train = report["metrics"]["train"]
    assert train["ols"]["mse"] == pytest.approx(residual @ residual / len(y), rel=1e-9)
    assert train["ols"]["mse"] <= train["sgd"]["mse"]


def test_sgd_estimate_lies_within_a_few_standard_errors_of_ols(d2l_run: Path) -> None:
    for row in _report(d2l_run)["parameters"]:
        z = (row["sgd"] - row["ols"]) / row["ols_se"]
        assert row["sgd_minus_ols_in_se"] == pytest.approx(z)
        assert row["sgd_minus_true"] == pytest.approx(row["sgd"] - row["true"])
        assert abs(z) < 5, row


def test_final_val_metrics_are_those_of_the_last_validation(d2l_run: Path) -> None:
    last_epoch = {tag: _events(d2l_run).Scalars(tag)[2].value for tag in ("val/loss", "val/mae", "val/r2")}
    sgd = _report(d2l_run)["metrics"]["val"]["sgd"]
    assert sgd["mse"] == pytest.approx(last_epoch["val/loss"], rel=1e-5)
    assert sgd["mae"] == pytest.approx(last_epoch["val/mae"], rel=1e-5)
    assert sgd["r2"] == pytest.approx(last_epoch["val/r2"], abs=1e-6)


def test_hparams_tab_shows_the_run_hyperparameters_with_the_final_val_loss(d2l_run: Path) -> None:
    events = _events(d2l_run)
    content = events.PluginTagToContent(metadata.PLUGIN_NAME)
    experiment = metadata.parse_experiment_plugin_data(content[metadata.EXPERIMENT_TAG])
    assert [info.name.tag for info in experiment.metric_infos] == ["val/loss"]
    session = metadata.parse_session_start_info_plugin_data(content[metadata.SESSION_START_INFO_TAG])
    hparams = {name: getattr(value, value.WhichOneof("kind")) for name, value in session.hparams.items()}
    assert hparams["model.optimizer"] == "SGD"
    assert hparams["model.optimizer.lr"] == pytest.approx(0.03)
    assert hparams["data.batch_size"] == 10
    assert hparams["trainer.max_epochs"] == 3
    assert hparams["model.input_dim"] == 5
    # The tab shows the last value of the metric's curve: the val/loss of the final weights.
    val_loss = events.Scalars("val/loss")
    assert max(val_loss, key=lambda e: e.step).value == pytest.approx(val_loss[2].value)


def test_parity_and_residual_figures_are_saved_and_logged(d2l_run: Path) -> None:
    for name in ("val_parity", "val_residuals"):
        image = imread(d2l_run / f"{name}.png")
        assert image.ndim == 3
        assert image.shape[0] >= 300, image.shape
        assert image.shape[1] >= 400, image.shape
        assert image[..., :3].std() > 0.05  # something is drawn
    assert {"plots/val_parity", "plots/val_residuals"} <= set(_events(d2l_run).Tags()["images"])


@pytest.mark.parametrize("stage", ["validate", "test"])
def test_validate_and_test_print_their_metrics(
    stage: str, d2l_run: Path, tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    checkpoint = d2l_run / "checkpoints" / "last.ckpt"
    run_cli(
        stage,
        "--config",
        str(D2L_CONFIG),
        "--ckpt_path",
        str(checkpoint),
        "--trainer.logger.init_args.save_dir",
        str(tmp_path),
    )
    prefix = "val" if stage == "validate" else "test"
    out = capsys.readouterr().out
    for metric in ("loss", "mae", "r2"):
        assert f"{prefix}/{metric}" in out


def test_wide_models_get_no_per_coefficient_curves(tmp_path: Path, capsys: pytest.CaptureFixture[str]) -> None:
    run_dir = fit_d2l(tmp_path, "--data.true_w", "17", "--data.num_train", "200", "--trainer.max_epochs", "1")
    tags = set(_events(run_dir).Tags()["scalars"])
    assert {"params/w_error", "params/w_gap_ols"} <= tags
    assert not any(tag.startswith("params/w/") for tag in tags)
    assert len(_report(run_dir)["parameters"]) == 18
    assert "w[x16]" in capsys.readouterr().out


def test_every_curve_shares_the_axis_of_the_training_steps(tmp_path: Path) -> None:
    run_dir = fit_d2l(tmp_path, "--trainer.max_epochs", "2")
    events = EventAccumulator(str(run_dir), size_guidance={"images": 0})
    events.Reload()
    steps = 2 * 100  # 100 steps of 10 examples per epoch
    assert max(e.step for e in events.Scalars("train/loss")) < steps
    assert max(e.step for e in events.Scalars("val/loss")) == steps
    assert max(e.step for e in events.Scalars("params/w_error")) <= steps
    assert {e.step for e in events.Images("plots/val_parity")} == {steps}  # the end of fit
