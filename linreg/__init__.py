"""linreg: linear regression trained with SGD in PyTorch Lightning, checked against the closed form."""

from __future__ import annotations

from importlib import import_module
from importlib.metadata import PackageNotFoundError, version
from typing import Any

__all__ = ["LinearRegression", "SyntheticRegressionData"]
# Imported when first used: `python -m linreg` checks the process environment before Lightning is imported.
_LAZY = {"LinearRegression": "linreg.model", "SyntheticRegressionData": "linreg.data"}
try:
    __version__ = version("linreg")
except PackageNotFoundError:  # run from a source tree that is not installed
    __version__ = "0+unknown"


def __getattr__(name: str) -> Any:
    if name in _LAZY:
        return getattr(import_module(_LAZY[name]), name)
    raise AttributeError(f"module 'linreg' has no attribute {name!r}")
