"""The two plain-PyTorch training loops the project is measured against, one epoch each.

Both take the same tensors and the same model as the Lightning run, and return examples per second.
"""

from __future__ import annotations

import time
from collections.abc import Iterable, Iterator

import torch
import torch.nn.functional as F
from torch import Tensor, nn
from torch.utils.data import DataLoader, TensorDataset


def book_loop(X: Tensor, y: Tensor, batch_size: int, lr: float, device: torch.device) -> float:
    """The book's loop: ``DataLoader(TensorDataset(X, y), shuffle=True)``, per-example fetch and collate."""
    loader = DataLoader(TensorDataset(X, y), batch_size, shuffle=True, pin_memory=device.type == "cuda")
    batches = ((xb.to(device, non_blocking=True), yb.to(device, non_blocking=True)) for xb, yb in loader)
    return _timed_epoch(batches, len(X), X.shape[1], lr, device)


def fused_loop(X: Tensor, y: Tensor, batch_size: int, lr: float, device: torch.device, gather: str = "index") -> float:
    """No DataLoader: one permutation per epoch, each batch gathered from the tensors in one operation.

    Args:
        gather: ``"index"``, ``X[idx]`` (whole-batch advanced indexing, the usual way to write it), or
            ``"index_select"``, ``X.index_select(0, idx)``: the same rows, and on the CPU faster.

    The data are placed on ``device`` before the clock starts (as the project does when they fit).
    """
    X, y = X.to(device), y.to(device)

    def batches() -> Iterator[tuple[Tensor, Tensor]]:
        order = torch.randperm(len(X), device=device)
        for i in range(0, len(X), batch_size):
            index = order[i : i + batch_size]
            yield (X[index], y[index]) if gather == "index" else (X.index_select(0, index), y.index_select(0, index))

    return _timed_epoch(batches(), len(X), X.shape[1], lr, device)


def _timed_epoch(
    batches: Iterable[tuple[Tensor, Tensor]], examples: int, features: int, lr: float, device: torch.device
) -> float:
    """Trains a fresh ``nn.Linear`` with SGD on ``batches`` (fetched inside the clock); returns examples/s."""
    model = nn.Linear(features, 1).to(device)
    optimizer = torch.optim.SGD(model.parameters(), lr=lr)
    _sync(device)
    start = time.perf_counter()
    for xb, yb in batches:
        loss = F.mse_loss(model(xb), yb)
        optimizer.zero_grad()
        loss.backward()
        optimizer.step()
    _sync(device)
    return examples / (time.perf_counter() - start)


def _sync(device: torch.device) -> None:
    if device.type == "cuda":
        torch.cuda.synchronize(device)
