"""A callback for tests that need to see, from outside, which examples each process trained on, in order."""

from __future__ import annotations

from pathlib import Path
from typing import Any

import torch
from lightning.pytorch import Callback, LightningModule, Trainer


class RecordTargets(Callback):
    """Saves the targets of every training batch of this process, in order, to ``<directory>/rank<N>.pt``."""

    def __init__(self, directory: str) -> None:
        self.directory = Path(directory)
        self.targets: list[torch.Tensor] = []

    def on_train_batch_start(self, trainer: Trainer, pl_module: LightningModule, batch: Any, batch_idx: int) -> None:
        self.targets.append(batch[1].detach().cpu().reshape(-1))

    def on_train_end(self, trainer: Trainer, pl_module: LightningModule) -> None:
        self.directory.mkdir(parents=True, exist_ok=True)
        torch.save(torch.cat(self.targets), self.directory / f"rank{trainer.global_rank}.pt")
