"""The training loops the project is measured against, one epoch each: plain PyTorch, and a bare Lightning step.

Each takes the same tensors and the same model as the linreg run, and returns examples per second.
"""

from __future__ import annotations

import time
from collections.abc import Iterable, Iterator

import lightning.pytorch as pl
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


class _BareModule(pl.LightningModule):
    """The least a LightningModule can be: ``nn.Linear``, MSE, SGD; no logging."""

    def __init__(self, features: int, lr: float) -> None:
        super().__init__()
        self.net, self.lr = nn.Linear(features, 1), lr

    def training_step(self, batch: tuple[Tensor, Tensor], batch_idx: int) -> Tensor:
        return F.mse_loss(self.net(batch[0]), batch[1])

    def configure_optimizers(self) -> torch.optim.Optimizer:
        return torch.optim.SGD(self.parameters(), lr=self.lr)


class _Batches:
    """Pre-cut batches behind the two methods Lightning asks a training loader for."""

    def __init__(self, batches: list[tuple[Tensor, Tensor]]) -> None:
        self.batches = batches

    def __iter__(self) -> Iterator[tuple[Tensor, Tensor]]:
        return iter(self.batches)

    def __len__(self) -> int:
        return len(self.batches)


def bare_lightning_loop(X: Tensor, y: Tensor, batch_size: int, lr: float, device: torch.device) -> float:
    """The floor of a Lightning step: a bare module over batches cut before the clock starts, and a Trainer with no
    logger, callbacks, checkpoints or progress bar. What a step of this project costs beyond this is its own."""
    X, y = X.to(device), y.to(device)
    order = torch.randperm(len(X), device=device)
    batches = [(X[i], y[i]) for i in order.split(batch_size)]
    trainer = pl.Trainer(
        max_epochs=1, logger=False, enable_checkpointing=False, enable_progress_bar=False, enable_model_summary=False,
        accelerator=device.type, devices=1, num_sanity_val_steps=0,
    )  # fmt: skip
    model = _BareModule(X.shape[1], lr)
    _sync(device)
    start = time.perf_counter()
    trainer.fit(model, train_dataloaders=_Batches(batches))
    _sync(device)
    return len(X) / (time.perf_counter() - start)


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
