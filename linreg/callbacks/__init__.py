"""Thin Lightning glue: the callbacks that log, report, plot, predict and guard a run."""
