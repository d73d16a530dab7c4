"""The book's synthetic data: ``synthetic_data`` follows d2l (X ~ N(0, 1), y = Xw + b + N(0, noise)), and
``SyntheticRegressionData``: splits, determinism, the input_dim link, and its argument checks."""

import pytest
import torch

from linreg.data import SyntheticRegressionData
from linreg.data.synthetic import synthetic_data
from linreg.validation import UserInputError

W = torch.tensor([2.0, -3.4, 5.6, 3.2, -0.6])


def test_shapes_and_dtype() -> None:
    X, y = synthetic_data(W, 4.2, 1000, 0.01, torch.Generator().manual_seed(0))
    assert X.shape == (1000, 5)
    assert y.shape == (1000, 1)
    assert X.dtype == y.dtype == torch.float32


def test_without_noise_labels_are_exactly_linear() -> None:
    X, y = synthetic_data(W, 4.2, 200, 0.0, torch.Generator().manual_seed(1))
    expected = X.double() @ W.double() + 4.2  # computed independently, in float64
    torch.testing.assert_close(y.squeeze(1).double(), expected, rtol=0, atol=1e-5)


def test_same_seed_same_data_other_seed_other_data() -> None:
    a = synthetic_data(W, 4.2, 50, 0.01, torch.Generator().manual_seed(7))
    b = synthetic_data(W, 4.2, 50, 0.01, torch.Generator().manual_seed(7))
    c = synthetic_data(W, 4.2, 50, 0.01, torch.Generator().manual_seed(8))
    assert torch.equal(a[0], b[0])
    assert torch.equal(a[1], b[1])
    assert not torch.equal(a[0], c[0])


def test_zero_examples_give_empty_tensors() -> None:
    X, y = synthetic_data(W, 4.2, 0, 0.01)
    assert X.shape == (0, 5)
    assert y.shape == (0, 1)


@pytest.mark.parametrize("noise", [0.0, 0.01, 1.0])
def test_noise_scale_is_the_given_std(noise: float) -> None:
    X, y = synthetic_data(W, 0.0, 50_000, noise, torch.Generator().manual_seed(4))
    residual_std = (y.squeeze(1) - X @ W).std().item()
    assert residual_std == pytest.approx(noise, rel=0.02, abs=1e-5)


def test_splits_have_the_requested_sizes_and_input_dim() -> None:
    dm = SyntheticRegressionData(true_w=[1.0, 2.0, 3.0], num_train=40, num_val=20, num_test=10, batch_size=8)
    dm.setup("fit")
    assert dm.input_dim == 3
    assert [s[0].shape for s in (dm.train_data, dm.val_data, dm.test_data)] == [(40, 3), (20, 3), (10, 3)]
    assert len(dm.train_dataloader()) == 5
    assert sum(len(b[0]) for b in dm.val_dataloader()) == 20


def test_same_arguments_give_identical_tensors() -> None:
    a, b = SyntheticRegressionData(seed=5), SyntheticRegressionData(seed=5)
    a.setup("fit")
    b.setup("fit")
    for split_a, split_b in zip((a.train_data, a.val_data), (b.train_data, b.val_data), strict=True):
        assert torch.equal(split_a[0], split_b[0])
        assert torch.equal(split_a[1], split_b[1])


def test_more_validation_examples_leave_the_training_data_unchanged() -> None:
    a, b = SyntheticRegressionData(num_val=10), SyntheticRegressionData(num_val=500)
    a.setup("fit")
    b.setup("fit")
    assert torch.equal(a.train_data[0], b.train_data[0])


def test_an_int_true_w_draws_that_many_seeded_weights() -> None:
    a = SyntheticRegressionData(true_w=64, seed=1)
    assert a.input_dim == 64
    assert torch.equal(a.true_w, SyntheticRegressionData(true_w=64, seed=1).true_w)
    assert not torch.equal(a.true_w, SyntheticRegressionData(true_w=64, seed=2).true_w)


def test_training_batches_are_shuffled_and_cover_the_split() -> None:
    dm = SyntheticRegressionData(num_train=100, batch_size=10)
    dm.setup("fit")
    X = torch.cat([x for x, _ in dm.train_dataloader()])
    train = dm.train_data[0]
    assert not torch.equal(X, train)
    assert torch.equal(X[X[:, 0].argsort()], train[train[:, 0].argsort()])


@pytest.mark.parametrize(
    ("kwargs", "match"),
    [
        ({"batch_size": 0}, r"batch_size must be an integer >= 1, got 0"),
        ({"noise_std": -0.1}, r"noise_std must be a finite number >= 0, got -0.1"),
        ({"noise_std": float("nan")}, r"noise_std must be a finite number"),
        ({"true_w": []}, r"true_w must be an integer >= 1 or a non-empty list, each a finite number, got \[\]$"),
        ({"true_w": 0}, r"true_w must be an integer >= 1 or a non-empty list, each a finite number, got 0$"),
        ({"true_w": [1.0, float("nan")]}, r"true_w must be .* got \[1\.0, nan\]$"),
        ({"num_train": 0}, r"num_train must be an integer >= 1, got 0"),
        ({"num_val": -1}, r"num_val must be an integer >= 0, got -1"),
        ({"num_test": -1}, r"num_test must be an integer >= 0, got -1"),
        ({"true_b": float("inf")}, r"true_b must be a finite number"),
    ],
)
def test_bad_arguments_are_refused_with_the_field_and_value(kwargs: dict, match: str) -> None:
    with pytest.raises(UserInputError, match=match):
        SyntheticRegressionData(**kwargs)
