"""Data modules: where the examples come from and how they are batched."""

from linreg.data.base import RegressionData
from linreg.data.synthetic import SyntheticRegressionData

__all__ = ["RegressionData", "SyntheticRegressionData"]
