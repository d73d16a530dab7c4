"""Synthetic linear-regression data with the semantics of d2l's ``synthetic_data``.

``X ~ N(0, 1)`` of shape ``(n, d)`` and ``y = X w + b + N(0, noise_std)`` of shape ``(n, 1)``.
Plain functions on tensors, so they can be tested and reused without Lightning.
"""

from __future__ import annotations

import torch


def synthetic_data(
    w: torch.Tensor,
    b: float,
    num_examples: int,
    noise_std: float,
    generator: torch.Generator | None = None,
    dtype: torch.dtype = torch.float32,
) -> tuple[torch.Tensor, torch.Tensor]:
    """Draws ``num_examples`` examples of ``y = X w + b + noise``.

    Args:
        w: true weights, shape ``(d,)``.
        b: true bias.
        num_examples: number of rows to draw (may be 0).
        noise_std: standard deviation of the Gaussian label noise (0 gives exact labels).
        generator: source of randomness; pass a seeded one for reproducible data.
        dtype: floating dtype of the returned tensors.

    Returns:
        ``(X, y)`` with shapes ``(num_examples, d)`` and ``(num_examples, 1)``.

    Example:
        >>> g = torch.Generator().manual_seed(0)
        >>> X, y = synthetic_data(torch.tensor([2.0, -3.4]), 4.2, 5, 0.01, g)
        >>> X.shape, y.shape
        (torch.Size([5, 2]), torch.Size([5, 1]))
    """
    w = w.to(dtype).reshape(-1, 1)
    X = torch.randn(num_examples, w.shape[0], generator=generator, dtype=dtype)  # (n, d)
    y = X @ w  # (n, d) @ (d, 1) -> (n, 1)
    y += b
    # Drawn after X, in place, so a 1M x 100 data set costs its own bytes and nothing more.
    y += noise_std * torch.randn(num_examples, 1, generator=generator, dtype=dtype)
    return X, y


def random_weights(num_features: int, generator: torch.Generator | None = None) -> torch.Tensor:
    """Draws ``num_features`` true weights from N(0, 1), for problems too wide to list by hand.

    Example:
        >>> random_weights(3, torch.Generator().manual_seed(0)).shape
        torch.Size([3])
    """
    return torch.randn(num_features, generator=generator)
