"""Data modules: where the examples come from and how they are batched."""

from linreg.data.base import RegressionData
from linreg.data.synthetic import SyntheticRegressionData
from linreg.data.tables import CSVRegressionData, TableRegressionData

__all__ = ["CSVRegressionData", "RegressionData", "SyntheticRegressionData", "TableRegressionData"]
