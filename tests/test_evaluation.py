"""The evaluation of a fit, read back from its run directory: curves, report.json, hparams, figures."""

from __future__ import annotations

import json
import re
from pathlib import Path

import numpy as np
import pytest
import torch
import yaml
from matplotlib.image import imread
from tensorboard.backend.event_processing.event_accumulator import EventAccumulator
from tensorboard.backend.event_processing.io_wrapper import GetLogdirSubdirectories
from tensorboard.plugins.custom_scalar import layout_pb2
from tensorboard.plugins.custom_scalar import metadata as custom_scalar_metadata
from tensorboard.plugins.hparams import metadata

from linreg.data import SyntheticRegressionData
from tests.conftest import D2L_CONFIG, final_params, fit_d2l, run_cli

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


def _last(events: EventAccumulator, tag: str) -> float:
    return max(events.Scalars(tag), key=lambda e: e.step).value


def test_recovery_curves_start_at_the_initial_weights_and_have_a_point_wherever_the_loss_has(d2l_run: Path) -> None:
    events = _events(d2l_run)
    curves = [
        "params/w_error",
        "params/b_error",
        "params/w_gap_optimum",
        "params/b_gap_optimum",
        "params/b",
        "train/full_loss",
    ]
    curves += [f"params/w/x{i}" for i in range(5)]
    curves += [f"convergence/log10_{name}" for name in ("loss_train_full", "gap_w", "gap_b", "objective_gap")]
    loss_steps = {e.step for e in events.Scalars("train/loss")}
    assert len(loss_steps) == 30  # every 10 of 300 steps: enough points for TensorBoard's smoothing
    for tag in curves:
        steps = [e.step for e in events.Scalars(tag)]
        assert steps[0] == 0, tag  # before the first step
        assert loss_steps <= set(steps), tag
    w_error = [e.value for e in events.Scalars("params/w_error")]
    # The weights start near 0 (std 0.01) and the bias at 0: the errors start at about |w_true| and b_true.
    assert w_error[0] == pytest.approx(TRUE_W.norm().item(), abs=0.1)
    assert events.Scalars("params/b_error")[0].value == pytest.approx(TRUE_B, abs=1e-6)
    assert w_error[-1] < 5e-3
    final = torch.tensor([_last(events, f"params/w/x{i}") for i in range(5)])
    torch.testing.assert_close(final, TRUE_W, rtol=0, atol=5e-3)


def test_training_set_loss_is_the_mse_over_every_training_example_above_the_least_squares_floor(
    d2l_run: Path,
) -> None:
    A, y = _training_data(d2l_run)
    params = final_params(d2l_run)
    theta = np.append(params["net.0.weight"].double().numpy().reshape(-1), params["net.0.bias"].item())
    floor = np.mean((A @ np.linalg.lstsq(A, y, rcond=None)[0] - y) ** 2)
    events = _events(d2l_run)
    assert _last(events, "train/full_loss") == pytest.approx(np.mean((A @ theta - y) ** 2), rel=1e-6)
    # The objective's gap to its optimum (least squares here), against numpy's: exact, not a difference of rounded MSEs.
    assert _last(events, "train/objective_gap") == pytest.approx(np.mean((A @ theta - y) ** 2) - floor, rel=1e-4)
    assert _last(events, "convergence/log10_loss_train_full") == pytest.approx(np.log10(np.mean((A @ theta - y) ** 2)))
    for point in events.Scalars("reference/log10_loss_optimum"):
        assert point.value == pytest.approx(np.log10(floor))
    val_loss = {e.step: e.value for e in events.Scalars("val/loss")}
    for point in events.Scalars("convergence/log10_loss_val"):  # at val/loss's steps: one chart, one axis
        assert point.value == pytest.approx(np.log10(val_loss[point.step]), abs=1e-5)


def test_custom_scalars_draw_the_losses_against_the_least_squares_floor(d2l_run: Path) -> None:
    events = EventAccumulator(str(d2l_run), size_guidance={"tensors": 0})
    events.Reload()
    config = events.Tensors(custom_scalar_metadata.CONFIG_SUMMARY_TAG)[0].tensor_proto.string_val[0]
    layout = layout_pb2.Layout.FromString(config)
    charts = {chart.title: list(chart.multiline.tag) for category in layout.category for chart in category.chart}
    tags = events.Tags()["scalars"]

    def drawn(title_start: str) -> set[str]:
        title = next(t for t in charts if t.startswith(title_start))
        return {tag for tag in tags if any(re.search(pattern, tag) for pattern in charts[title])}

    assert next(iter(charts)).startswith("loss (log10)")  # the first chart of the page
    assert drawn("loss (log10)") == {
        "convergence/log10_loss_train_full",
        "convergence/log10_loss_val",
        "reference/log10_loss_optimum",
    }
    assert drawn("distance from the optimum") == {"convergence/log10_gap_w", "convergence/log10_gap_b"}
    assert drawn("objective's gap") == {"convergence/log10_objective_gap"}
    assert all(drawn(title) for title in charts), charts


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


def _hparams_tab(run_dir: Path) -> tuple[list[str], dict]:
    """The columns a run declares to the hparams tab, in order, and its values, read with TensorBoard's reader."""
    content = _events(run_dir).PluginTagToContent(metadata.PLUGIN_NAME)
    experiment = metadata.parse_experiment_plugin_data(content[metadata.EXPERIMENT_TAG])
    assert [info.name.tag for info in experiment.metric_infos] == ["val/final_loss"]
    session = metadata.parse_session_start_info_plugin_data(content[metadata.SESSION_START_INFO_TAG])
    values = {name: getattr(value, value.WhichOneof("kind")) for name, value in session.hparams.items()}
    return [info.name for info in experiment.hparam_infos], values


def test_hparams_tab_shows_the_run_settings_with_the_final_val_loss(d2l_run: Path) -> None:
    columns, hparams = _hparams_tab(d2l_run)
    # configs/d2l.yaml's settings, as text (the tab prints numbers as 10.000). The tab shows the first five names
    # in alphabetical order until more are ticked: these five.
    assert sorted(columns)[:5] == [
        "data.batch_size",
        "model.optimizer",
        "model.scheduler",
        "trainer",
        "trainer.callbacks",
    ]
    assert hparams["data.batch_size"] == "10"
    assert hparams["model.optimizer"] == "SGD(lr=0.03)"
    assert hparams["model.scheduler"] == "none"
    assert hparams["trainer"] == "3 epochs, 1 cpu"
    assert hparams["trainer.callbacks"] == "none"
    assert hparams["trainer.strategy"] == "auto"
    # The tab shows the last value of the metric's curve: the val/loss of the final weights.
    events = _events(d2l_run)
    assert [e.value for e in events.Scalars("val/final_loss")] == [pytest.approx(_last(events, "val/loss"))]


# Each changes one setting of the book's run (on 60 examples); the first five columns must show it.
VARIANTS = {
    "momentum": (("--model.optimizer.momentum", "0.9"), "SGD(lr=0.03, momentum=0.9)"),
    "adam": (("--model.optimizer", "Adam", "--model.optimizer.lr", "0.1"), "Adam(lr=0.1)"),
    "scheduler": (
        ("--model.scheduler", "StepLR", "--model.scheduler.step_size", "1", "--model.scheduler.gamma", "0.5"),
        "StepLR(step_size=1, gamma=0.5, last_epoch=-1)",
    ),
    "averaged": (("--trainer.callbacks+=AveragedSGD",), "AveragedSGD("),  # then its arguments
    "batch_size": (("--data.batch_size", "20"), "20"),
    "devices": (("--trainer.devices", "auto"), "2 epochs, auto cpu"),  # "2 epochs, 2 cpu, ddp" under DDP
    "strategy": (("--trainer.strategy", "single_device"), "2 epochs, 1 cpu, single_device"),
    "epochs": (("--trainer.max_epochs", "3"), "3 epochs, 1 cpu"),
}


@pytest.mark.slow  # a whole process or several fits: seconds
def test_runs_that_differ_in_any_setting_differ_in_the_first_five_columns_of_the_hparams_tab(tmp_path: Path) -> None:
    small = ("--data.num_train", "60", "--data.num_val", "20", "--trainer.max_epochs", "2")
    columns, book = _hparams_tab(fit_d2l(tmp_path, *small))
    for name, (args, value) in VARIANTS.items():
        declared, hparams = _hparams_tab(fit_d2l(tmp_path, *small, *args))
        assert declared == columns, name  # whichever run the tab takes its columns from, they are the same
        differing = [column for column in columns if hparams[column] != book[column]]
        assert differing, name
        assert differing[0] in sorted(columns)[:5], name
        shown = hparams[differing[0]]
        assert shown == value or (value.endswith("(") and shown.startswith(value)), name


def test_parity_and_residual_figures_are_saved_and_logged(d2l_run: Path) -> None:
    for name in ("val_parity", "val_residuals"):
        image = imread(d2l_run / f"{name}.png")
        assert image.ndim == 3
        assert image.shape[0] >= 300, image.shape
        assert image.shape[1] >= 400, image.shape
        assert image[..., :3].std() > 0.05  # something is drawn
    assert {"plots/val_parity", "plots/val_residuals"} <= set(_events(d2l_run).Tags()["images"])


@pytest.mark.parametrize("stage", ["validate", "test", "predict"])
def test_evaluating_a_checkpoint_prints_its_results_and_adds_no_run_to_tensorboard(
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
    out = capsys.readouterr().out
    assert list(GetLogdirSubdirectories(str(tmp_path))) == []  # TensorBoard's own list of runs
    (run_dir,) = (tmp_path / "d2l").iterdir()  # the evaluation's record: its config and its results
    if stage == "predict":
        assert f"predictions: {run_dir / 'predictions.csv'}" in out
        return
    prefix = "val" if stage == "validate" else "test"
    for metric in ("loss", "mae", "r2"):
        assert f"{prefix}/{metric}" in out
        assert f"{prefix}/{metric}" in (run_dir / "metrics.csv").read_text()


def test_wide_models_get_no_per_coefficient_curves(tmp_path: Path, capsys: pytest.CaptureFixture[str]) -> None:
    run_dir = fit_d2l(tmp_path, "--data.true_w", "17", "--data.num_train", "200", "--trainer.max_epochs", "1")
    tags = set(_events(run_dir).Tags()["scalars"])
    assert {"params/w_error", "params/w_gap_optimum"} <= tags
    assert not any(tag.startswith("params/w/") for tag in tags)
    assert len(_report(run_dir)["parameters"]) == 18
    assert "w[x16]" in capsys.readouterr().out


def test_every_curve_shares_the_axis_of_the_training_steps(tmp_path: Path) -> None:
    run_dir = fit_d2l(tmp_path, "--trainer.max_epochs", "2")
    events = EventAccumulator(str(run_dir), size_guidance={"images": 0})
    events.Reload()
    steps = 2 * 100  # 100 steps of 10 examples per epoch
    assert max(e.step for e in events.Scalars("train/loss")) < steps
    assert max(e.step for e in events.Scalars("val/loss")) == steps - 1  # Lightning's: the last step's index
    assert max(e.step for e in events.Scalars("params/w_error")) <= steps
    assert {e.step for e in events.Images("plots/val_parity")} == {steps}  # the end of fit


def test_with_averaging_the_recovery_curves_end_where_the_report_does(tmp_path: Path) -> None:
    # The curves follow the weights the fit reports (the average, once averaging has begun), not the SGD iterate.
    run_dir = fit_d2l(tmp_path, "--trainer.callbacks+=AveragedSGD", "--trainer.callbacks.start", "0.5")
    parameters = _report(run_dir)["parameters"]
    reported = torch.tensor([row["sgd"] for row in parameters], dtype=torch.float64)
    ols = torch.tensor([row["ols"] for row in parameters], dtype=torch.float64)
    events = _events(run_dir)
    assert _last(events, "params/w_gap_optimum") == pytest.approx((reported[:-1] - ols[:-1]).norm().item(), rel=1e-4)
    assert _last(events, "params/b_gap_optimum") == pytest.approx(abs(reported[-1] - ols[-1]).item(), rel=1e-4)
