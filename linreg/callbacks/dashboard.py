"""``Dashboard``: TensorBoard's Custom Scalars page for a fit, the curves that tell how SGD approaches least squares.

TensorBoard draws one tag per chart everywhere else; its Custom Scalars page draws several on one chart,
in the layout a run writes once (``SummaryWriter.add_custom_scalars``). The charts, in order:

1. the loss on the whole training set and on the validation set, against the loss of the least-squares
   solution on the training set, the floor no model of these data goes below (log10);
2. how far SGD's coefficients are from the least-squares ones (log10);
3. how far they are from the true ones, when the data know them;
4. the coefficients themselves, and the mini-batch loss ``train/loss``.

The tags are those of ``ParameterRecovery`` and of the model; a tag a run does not log leaves its
line out.
"""

from __future__ import annotations

from lightning.pytorch import Callback, LightningModule, Trainer
from lightning.pytorch.loggers import TensorBoardLogger

# {category: {chart title: ["Multiline", [tag regexes]]}}, the form add_custom_scalars takes.
LAYOUT: dict[str, dict[str, list]] = {
    "fit": {
        "loss (log10): training set, validation set, and least squares on the training set": [
            "Multiline",
            [r"^convergence/log10_loss_(train_full|val)$", r"^reference/log10_loss_least_squares$"],
        ],
        "distance from least squares (log10): |w - w_ols| and |b - b_ols|": [
            "Multiline",
            [r"^convergence/log10_ols_gap_[wb]$"],
        ],
        "error against the true values: |w - w_true| and |b - b_true|": ["Multiline", [r"^params/[wb]_error$"]],
        "coefficients: w and b": ["Multiline", [r"^params/w/", r"^params/b$"]],
        "mini-batch loss (train/loss)": ["Multiline", [r"^train/loss$"]],
    }
}


class Dashboard(Callback):
    """Writes the Custom Scalars layout into the event file of every TensorBoard logger when training starts."""

    def on_train_start(self, trainer: Trainer, pl_module: LightningModule) -> None:
        if not trainer.is_global_zero:  # one event file per run, written by the first process
            return
        for logger in trainer.loggers:
            if isinstance(logger, TensorBoardLogger):
                logger.experiment.add_custom_scalars(LAYOUT)
