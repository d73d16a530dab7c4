"""The end-of-fit report: the learned parameters beside the true ones, as the seed prints them."""

from __future__ import annotations

from lightning.pytorch import Callback, LightningModule, Trainer
from lightning.pytorch.utilities import rank_zero_only
from torch import Tensor


def parameter_table(learned_w: Tensor, learned_b: float, true_w: Tensor | None, true_b: float | None) -> str:
    """A text table: one row per parameter, with the true value and the error where the truth is known."""
    names = [f"w[{i}]" for i in range(learned_w.numel())] + ["b"]
    learned = [*learned_w.tolist(), learned_b]
    truth = None if true_w is None or true_b is None else [*true_w.tolist(), true_b]
    header = f"{'param':>8} {'learned':>12}" + ("" if truth is None else f" {'true':>12} {'true - learned':>15}")
    rows = [header]
    for i, name in enumerate(names):
        row = f"{name:>8} {learned[i]:>12.6f}"
        if truth is not None:
            row += f" {truth[i]:>12.6f} {truth[i] - learned[i]:>15.3e}"
        rows.append(row)
    return "\n".join(rows)


class FitReport(Callback):
    """Prints the parameter table at the end of ``fit``."""

    @rank_zero_only
    def on_fit_end(self, trainer: Trainer, pl_module: LightningModule) -> None:
        data = trainer.datamodule
        true_w = data.true_w if data is not None else None
        true_b = data.true_b if data is not None else None
        print("\n" + parameter_table(pl_module.weight.cpu(), float(pl_module.bias), true_w, true_b), flush=True)
