"""LinearRegression: the book's initialisation, and an SGD step that matches the gradient worked by hand."""

import lightning.pytorch as pl
import pytest
import torch

from linreg.data import SyntheticRegressionData
from linreg.model import LinearRegression
from linreg.validation import UserInputError


def test_initial_weights_are_normal_with_the_given_std_and_bias_is_zero() -> None:
    torch.manual_seed(0)
    model = LinearRegression(input_dim=20_000, init_std=0.01)
    w = model.weight
    assert w.shape == (20_000,)
    assert abs(w.mean().item()) < 5 * 0.01 / 20_000**0.5
    assert w.std().item() == pytest.approx(0.01, rel=0.03)
    assert model.bias.item() == 0.0


def test_default_optimizer_is_sgd_with_the_books_learning_rate() -> None:
    optimizer = LinearRegression(input_dim=2).configure_optimizers()
    assert type(optimizer) is torch.optim.SGD
    assert optimizer.defaults["lr"] == 0.03
    assert optimizer.defaults["momentum"] == 0


def test_one_sgd_step_matches_the_closed_form_gradient() -> None:
    torch.manual_seed(0)
    model = LinearRegression(input_dim=3)
    X, y = torch.randn(8, 3, dtype=torch.float64), torch.randn(8, 1, dtype=torch.float64)
    model = model.double()
    w0, b0 = model.weight.clone(), model.bias.clone()
    # d/dw mean((Xw + b - y)^2) = 2/n X^T r,  d/db = 2/n sum(r)
    r = X @ w0 + b0 - y.squeeze(1)
    expected_w = w0 - 0.03 * (2 / 8) * (X.T @ r)
    expected_b = b0 - 0.03 * (2 / 8) * r.sum()

    optimizer = model.configure_optimizers()
    loss = torch.nn.functional.mse_loss(model(X), y)
    loss.backward()
    optimizer.step()
    torch.testing.assert_close(model.weight, expected_w)
    torch.testing.assert_close(model.bias, expected_b)


def test_optimizer_is_swappable() -> None:
    model = LinearRegression(input_dim=2, optimizer=lambda p: torch.optim.Adam(p, lr=0.1))
    assert type(model.configure_optimizers()) is torch.optim.Adam


def test_hyperparameters_are_plain_values() -> None:
    model = LinearRegression(input_dim=4, init_std=0.02)
    assert dict(model.hparams) == {"input_dim": 4, "init_std": 0.02}


@pytest.mark.parametrize(
    ("kwargs", "match"),
    [({"input_dim": 0}, "input_dim must be an integer >= 1, got 0"), ({"input_dim": 2, "init_std": -1.0}, "init_std")],
)
def test_bad_arguments_are_refused(kwargs: dict, match: str) -> None:
    with pytest.raises(UserInputError, match=match):
        LinearRegression(**kwargs)


def _fit_params(steps_per_batch: int) -> torch.Tensor:
    data = SyntheticRegressionData(true_w=4, num_train=250, num_val=10, batch_size=8, steps_per_batch=steps_per_batch)
    torch.manual_seed(0)
    model = LinearRegression(input_dim=data.input_dim)
    trainer = pl.Trainer(
        max_epochs=2, logger=False, enable_checkpointing=False, enable_progress_bar=False, enable_model_summary=False
    )
    trainer.fit(model, data)
    assert trainer.global_step == 2 * 32  # optimizer steps: ceil(250 / 8) per epoch, whatever the grouping
    return torch.cat([model.weight, model.bias.reshape(1)])


def test_grouping_mini_batches_per_step_changes_no_update() -> None:
    assert torch.equal(_fit_params(1), _fit_params(5))
