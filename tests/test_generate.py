"""The synthetic data generator follows d2l's definition: X ~ N(0, 1), y = Xw + b + N(0, noise)."""

import pytest
import torch

from linreg.data.generate import random_weights, synthetic_data

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


def test_random_weights_are_seeded() -> None:
    w = random_weights(10, torch.Generator().manual_seed(3))
    assert torch.equal(w, random_weights(10, torch.Generator().manual_seed(3)))
    assert not torch.equal(w, random_weights(10, torch.Generator().manual_seed(4)))


@pytest.mark.parametrize("noise", [0.0, 0.01, 1.0])
def test_noise_scale_is_the_given_std(noise: float) -> None:
    X, y = synthetic_data(W, 0.0, 50_000, noise, torch.Generator().manual_seed(4))
    residual_std = (y.squeeze(1) - X @ W).std().item()
    assert residual_std == pytest.approx(noise, rel=0.02, abs=1e-5)
