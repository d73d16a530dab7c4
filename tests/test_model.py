"""LinearRegression: the book's initialisation, and an SGD step that matches the gradient worked by hand."""

import lightning.pytorch as pl
import pytest
import torch

from linreg.data import SyntheticRegressionData
from linreg.grouped import GroupedStepsRegression
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


def _trainer(**kwargs: object) -> pl.Trainer:
    return pl.Trainer(
        logger=False, enable_checkpointing=False, enable_progress_bar=False, enable_model_summary=False, **kwargs
    )


def test_one_training_step_is_sgd_on_the_batch_mse_by_the_closed_form_gradient() -> None:
    data = SyntheticRegressionData(true_w=3, num_train=8, num_val=2, batch_size=8)
    data.setup("fit")
    X, y = (t.double() for t in data.train_data)
    torch.manual_seed(0)
    model = LinearRegression(input_dim=3).double()
    w0, b0 = model.weight.clone(), model.bias.clone()
    # d/dw mean((Xw + b - y)^2) = 2/n X^T r,  d/db = 2/n sum(r)
    r = X @ w0 + b0 - y.squeeze(1)
    expected_w = w0 - 0.03 * (2 / 8) * (X.T @ r)
    expected_b = b0 - 0.03 * (2 / 8) * r.sum()
    data.train_data = (X, y)
    _trainer(max_steps=1, limit_val_batches=0).fit(model, data)
    torch.testing.assert_close(model.weight, expected_w)
    torch.testing.assert_close(model.bias, expected_b)


def test_a_scheduler_is_stepped_by_lightning_every_epoch() -> None:
    data = SyntheticRegressionData(true_w=2, num_train=20, num_val=4, batch_size=10)
    model = LinearRegression(
        input_dim=2, scheduler=lambda optimizer: torch.optim.lr_scheduler.StepLR(optimizer, step_size=1, gamma=0.5)
    )
    trainer = _trainer(max_epochs=3)
    trainer.fit(model, data)
    assert trainer.optimizers[0].param_groups[0]["lr"] == pytest.approx(0.03 / 2**3)


def test_optimizer_is_swappable() -> None:
    model = LinearRegression(input_dim=2, optimizer=lambda p: torch.optim.Adam(p, lr=0.1))
    assert type(model.configure_optimizers()) is torch.optim.Adam


def test_hyperparameters_are_plain_values() -> None:
    model = LinearRegression(input_dim=4, init_std=0.02)
    assert dict(model.hparams) == {"input_dim": 4, "init_std": 0.02, "weight_decay": 0.0}


@pytest.mark.parametrize(
    ("kwargs", "match"),
    [({"input_dim": 0}, "input_dim must be an integer >= 1, got 0"), ({"input_dim": 2, "init_std": -1.0}, "init_std")],
)
def test_bad_arguments_are_refused(kwargs: dict, match: str) -> None:
    with pytest.raises(UserInputError, match=match):
        LinearRegression(**kwargs)


def _fit_params(model: LinearRegression, batch_size: int) -> torch.Tensor:
    data = SyntheticRegressionData(true_w=4, num_train=250, num_val=10, batch_size=batch_size)
    trainer = _trainer(max_epochs=2)
    trainer.fit(model, data)
    assert trainer.global_step == 2 * 32  # optimizer steps: ceil(250 / 8) per epoch, however they are grouped
    return torch.cat([model.weight, model.bias.reshape(1)])


def test_grouped_steps_make_the_same_updates_as_one_step_per_batch() -> None:
    torch.manual_seed(0)
    plain = _fit_params(LinearRegression(input_dim=4), batch_size=8)
    torch.manual_seed(0)
    grouped = _fit_params(GroupedStepsRegression(input_dim=4, mini_batch_size=8), batch_size=40)
    assert torch.equal(plain, grouped)


@pytest.mark.parametrize(
    ("arguments", "message"),
    [
        (
            {"loss": torch.nn.L1Loss()},
            "loss must be torch.nn.MSELoss or torch.nn.HuberLoss with reduction 'mean', got L1Loss$",
        ),
        ({"loss": torch.nn.MSELoss(reduction="sum")}, "got MSELoss with reduction 'sum'"),
        ({"loss": torch.nn.HuberLoss(delta=0.0)}, "delta must be a finite number > 0, got 0.0"),
        ({"weight_decay": -0.1}, "weight_decay must be a finite number >= 0, got -0.1"),
    ],
)
def test_the_objective_is_refused_unless_its_exact_optimum_is_known(arguments: dict, message: str) -> None:
    with pytest.raises(UserInputError, match=message):
        LinearRegression(input_dim=2, **arguments)


def test_weight_decay_penalises_the_weights_and_not_the_bias() -> None:
    # One SGD step (lr 1) on rows of zeros: the loss pulls only the bias (its gradient 2b), the penalty only the
    # weights (its gradient weight_decay·w), as the book's section 3.7 has it.
    model = LinearRegression(input_dim=2, optimizer=lambda p: torch.optim.SGD(p, lr=1.0), weight_decay=0.5)
    with torch.no_grad():
        model.net[0].weight.copy_(torch.tensor([[1.0, -2.0]]))
        model.net[0].bias.fill_(0.25)
    rows = torch.utils.data.DataLoader(
        torch.utils.data.TensorDataset(torch.zeros(4, 2), torch.zeros(4, 1)), batch_size=4
    )
    trainer = pl.Trainer(
        max_steps=1,
        logger=False,
        enable_checkpointing=False,
        enable_progress_bar=False,
        enable_model_summary=False,
        accelerator="cpu",
    )
    trainer.fit(model, rows)
    torch.testing.assert_close(model.weight, torch.tensor([1.0, -2.0]) * (1 - 0.5))
    assert model.bias.item() == pytest.approx(0.25 - 2 * 0.25)
