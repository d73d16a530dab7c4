"""linreg: linear regression trained with SGD in PyTorch Lightning, checked against the closed form."""

from importlib.metadata import version

from linreg.data import SyntheticRegressionData
from linreg.model import LinearRegression

__all__ = ["LinearRegression", "SyntheticRegressionData"]
__version__ = version("linreg")
