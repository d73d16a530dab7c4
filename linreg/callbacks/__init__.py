"""Thin Lightning glue: the callbacks that log, report, plot, predict, average and guard a run."""

from linreg.callbacks.averaging import AveragedSGD

__all__ = ["AveragedSGD"]
