"""``predictions.csv``: what ``predict`` writes into the run directory, one row per input row, in input order.

Written atomically, and only if every prediction is finite (an input far beyond the training data overflows
float32): the file holds only numbers the model stands behind.
"""

from __future__ import annotations

import csv
import io
import math
from collections.abc import Sequence
from pathlib import Path
from typing import IO, Any

import torch
import torch.distributed as dist
from lightning.pytorch import LightningModule, Trainer
from lightning.pytorch.callbacks import BasePredictionWriter
from torch import Tensor

from linreg.atomic_write import save_atomically
from linreg.validation import UserInputError


def in_input_order(predictions: Tensor, indices: Tensor) -> Tensor:
    """``predictions`` ``(n,)`` placed at their row ``indices`` ``(n,)``, which must be a permutation of 0..n-1."""
    n = indices.numel()
    if predictions.numel() != n or not torch.equal(indices.sort().values, torch.arange(n)):
        raise RuntimeError(f"predictions do not cover rows 0..{n - 1} exactly once; cannot restore the input order")
    ordered = torch.empty_like(predictions)
    ordered[indices] = predictions
    return ordered


def check_finite_predictions(columns: dict[str, Tensor]) -> None:
    """Refuses ``columns`` whose ``prediction`` is inf or NaN, naming the first such row by its first column."""
    bad = (~torch.isfinite(columns["prediction"])).nonzero()
    if len(bad):
        i = int(bad[0])
        where, positions = next(iter(columns.items()))
        raise UserInputError(
            f"{where} {positions[i].item()}: the prediction is {columns['prediction'][i].item()}"
            f" ({len(bad)} row(s) in all): the inputs are beyond what the model's float32 arithmetic holds"
            " (values far outside the training data); nothing was written"
        )


def write_csv(path: str | Path, columns: dict[str, Tensor]) -> None:
    """Writes ``columns`` (name -> values) to ``path`` atomically; NaN blank, floats as their round-tripping repr."""
    rows = zip(*(_cells(column) for column in columns.values()), strict=True)

    def write(_: object, file: IO[bytes]) -> None:
        text = io.TextIOWrapper(file, encoding="utf-8", newline="")
        writer = csv.writer(text)
        writer.writerow(columns)
        writer.writerows(rows)
        text.flush()
        text.detach()  # the binary file stays open for save_atomically to sync and close

    save_atomically(None, path, save=write)


def _cells(column: Tensor) -> list[Any]:
    """The column as CSV cells: NaN blank, whole numbers without ``.0`` (a price read as 617077 stays so)."""
    values = column.tolist()
    if not column.is_floating_point():
        return values
    return ["" if math.isnan(v) else int(v) if v.is_integer() and abs(v) < 1e15 else v for v in values]


class PredictionWriter(BasePredictionWriter):
    """Writes ``predictions.csv`` into ``trainer.log_dir`` (the run directory) at the end of ``predict``."""

    def __init__(self) -> None:
        super().__init__(write_interval="epoch")

    def setup(self, trainer: Trainer, pl_module: LightningModule, stage: str) -> None:
        # Lightning skips predict without a word when it may read no batch: the user asked for rows and gets none.
        if stage == "predict" and trainer.limit_predict_batches == 0:
            raise UserInputError(
                f"trainer.limit_predict_batches {trainer.limit_predict_batches:g} predicts no rows; nothing was"
                " written. Leave it unset to predict every row"
            )

    def write_on_epoch_end(
        self, trainer: Trainer, pl_module: LightningModule, predictions: Sequence[Any], batch_indices: Sequence[Any]
    ) -> None:
        # One predict dataloader: a list of (batch, 1) outputs, and the row indices of each batch.
        values = torch.cat([p.reshape(-1).cpu() for p in predictions] or [torch.empty(0)])
        batches = batch_indices[0] if batch_indices else []
        rows = torch.cat([torch.as_tensor(b, dtype=torch.long).reshape(-1) for b in batches] or [torch.empty(0).long()])
        values, rows = _gather_all(values, rows)
        run_dir = trainer.log_dir or "."  # under DDP a broadcast from rank 0: every process must ask
        if not trainer.is_global_zero:
            return
        columns = trainer.datamodule.prediction_columns(in_input_order(values, rows))
        check_finite_predictions(columns)
        path = Path(run_dir, "predictions.csv")
        write_csv(path, columns)
        print(f"predictions: {path} ({values.numel()} rows)", flush=True)


def _gather_all(values: Tensor, rows: Tensor) -> tuple[Tensor, Tensor]:
    """Every process's ``(values, rows)``, concatenated in rank order; unchanged in a single process."""
    if not (dist.is_available() and dist.is_initialized()) or dist.get_world_size() == 1:
        return values, rows
    shares: list[Any] = [None] * dist.get_world_size()
    dist.all_gather_object(shares, (values, rows))  # the shares differ in length: objects, not tensors
    return torch.cat([v for v, _ in shares]), torch.cat([r for _, r in shares])
