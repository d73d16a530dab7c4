"""linreg: linear regression trained with SGD in PyTorch Lightning, checked against the closed form."""

from importlib.metadata import PackageNotFoundError, version

from linreg.data import SyntheticRegressionData
from linreg.model import LinearRegression

__all__ = ["LinearRegression", "SyntheticRegressionData"]
try:
    __version__ = version("linreg")
except PackageNotFoundError:  # run from a source tree that is not installed
    __version__ = "0+unknown"
