"""Thin Lightning glue: the callbacks that log, report, plot, predict, average and guard a run."""

from __future__ import annotations

from lightning.pytorch import Callback

from linreg.callbacks.averaging import AveragedSGD
from linreg.callbacks.divergence import DivergenceGuard
from linreg.callbacks.plots import FitPlots
from linreg.callbacks.predictions import PredictionWriter
from linreg.callbacks.progress import ConsoleProgress, quiet_lightning
from linreg.callbacks.recovery import ParameterRecovery
from linreg.callbacks.report import FitReport

__all__ = ["AveragedSGD", "FitReport", "default_callbacks"]


def default_callbacks(subcommand: str | None = "fit", command_line: bool = False) -> list[Callback]:
    """The callbacks the command line gives a run of ``subcommand`` (``None``: fit), for a Trainer built in Python too.

    Only those it uses: Lightning calls every callback at every hook. ``command_line``: the report's remedies as
    flags. Quiets Lightning's console (``quiet_lightning``).

    Example:
        >>> [type(callback).__name__ for callback in default_callbacks("predict")]
        ['ConsoleProgress', 'PredictionWriter']
    """
    quiet_lightning()  # here, not on import: importing linreg changes nothing for a program that only imports it
    if subcommand in (None, "fit"):
        # This order is needed: Lightning calls on_train_epoch_end in list order, ParameterRecovery logs train/full_loss
        # there (only then are the epoch's weights final: a streamed epoch's length is not known before it ends), and
        # ConsoleProgress and FitReport print and record it in that same hook.
        return [
            ParameterRecovery(),
            ConsoleProgress(),
            DivergenceGuard(),
            FitReport(python=not command_line),
            FitPlots(),
        ]
    if subcommand == "predict":
        return [ConsoleProgress(), PredictionWriter()]
    return [ConsoleProgress()]
