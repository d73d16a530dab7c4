"""``Dashboard``: TensorBoard's Custom Scalars page for a fit, the curves that tell how SGD approaches least squares.

Custom Scalars draws several tags on one chart, in a layout the run writes once (``add_custom_scalars``): the
losses against least squares' floor, the distances from least squares and from the truth, the coefficients and
the mini-batch loss. The tags are ``ParameterRecovery``'s and the model's; one a run does not log is left out.
"""

from __future__ import annotations

from lightning.pytorch import Callback, LightningModule, Trainer
from lightning.pytorch.loggers import TensorBoardLogger
from lightning.pytorch.utilities import rank_zero_only

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
    """Writes the Custom Scalars layout into every TensorBoard logger's event file when training starts."""

    @rank_zero_only  # one event file per run
    def on_train_start(self, trainer: Trainer, pl_module: LightningModule) -> None:
        for logger in trainer.loggers:
            if isinstance(logger, TensorBoardLogger):
                logger.experiment.add_custom_scalars(LAYOUT)
