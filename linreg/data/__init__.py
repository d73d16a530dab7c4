"""Data modules: where the examples come from and how they are batched."""

from linreg.data.base import RegressionData
from linreg.data.csv import CSVRegressionData
from linreg.data.synthetic import SyntheticRegressionData

__all__ = ["CSVRegressionData", "RegressionData", "SyntheticRegressionData"]
