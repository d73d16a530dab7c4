"""``CSVRegressionData``: a CSV file of numeric columns as a LightningDataModule.

The header is read in ``__init__`` (the CLI needs ``input_dim`` before anything else runs), the rows in
``prepare_data``/``setup``. The rows are split with a seeded permutation; features and target are
standardised with statistics of the training split (see ``linreg.data.scaling`` for why), and those
statistics are saved in checkpoints, so ``validate``, ``test`` and ``predict`` from a checkpoint apply
the transform the model was trained with, even if the file has changed since.
"""

from __future__ import annotations

from dataclasses import replace
from typing import Any

import torch
from torch import Tensor

from linreg.data.base import RegressionData
from linreg.data.scaling import Standardizer
from linreg.data.table import Table, read_header, read_table, select_columns
from linreg.validation import UserInputError, check_float


def split_rows(
    num_rows: int, val_fraction: float, test_fraction: float, seed: int, source: str = "the table"
) -> tuple[Tensor, Tensor, Tensor]:
    """Row indices of the training, validation and test splits: a permutation drawn from ``seed``, cut in three.

    A split with a positive fraction gets at least one row; the training split, the rest, at least two.

    Raises:
        UserInputError: if ``num_rows`` is too few for that.

    Example:
        >>> [len(part) for part in split_rows(10, 0.2, 0.1, seed=0)]
        [7, 2, 1]
    """
    num_val = max(1, round(val_fraction * num_rows)) if val_fraction > 0 else 0
    num_test = max(1, round(test_fraction * num_rows)) if test_fraction > 0 else 0
    num_train = num_rows - num_val - num_test
    if num_train < 2:
        needed = 2 + (val_fraction > 0) + (test_fraction > 0)
        raise UserInputError(
            f"{source}: {num_rows} data rows are too few; val_fraction={val_fraction:g} and"
            f" test_fraction={test_fraction:g} need at least {needed} (2 of them for training)"
        )
    order = torch.randperm(num_rows, generator=torch.Generator().manual_seed(seed))
    return order[:num_train], order[num_train : num_train + num_val], order[num_train + num_val :]


class CSVRegressionData(RegressionData):
    """Train, validation and test splits of the rows of a CSV file; ``predict`` runs on every row.

    Args:
        path: the CSV file; its first line names the columns.
        target: the column to predict.
        features: the columns to predict it from; all other columns when not given.
        val_fraction: share of the rows held out for validation (``val/loss`` after every epoch).
        test_fraction: share of the rows held out for ``test``; may be 0.
        predict_path: a CSV file of rows to predict instead of every row of ``path``; it needs the
            feature columns, and the target column may be absent or blank.
        batch_size: rows per SGD step.
        eval_batch_size: rows per validation/test/predict batch (no gradient step: large is faster).
        seed: seeds the split and the shuffling order.

    Example:
        >>> import tempfile, os
        >>> f = tempfile.NamedTemporaryFile("w", suffix=".csv", delete=False)
        >>> _ = f.write("x,y\\n" + "".join(f"{i},{2 * i + 1}\\n" for i in range(10))); f.close()
        >>> dm = CSVRegressionData(f.name, target="y", val_fraction=0.2, test_fraction=0.0)
        >>> dm.setup("fit")
        >>> dm.input_dim, dm.feature_names, dm.train_data[0].shape
        (1, ['x'], torch.Size([8, 1]))
        >>> os.remove(f.name)
    """

    def __init__(
        self,
        path: str,
        target: str,
        features: list[str] | None = None,
        val_fraction: float = 0.1,
        test_fraction: float = 0.1,
        predict_path: str | None = None,
        batch_size: int = 32,
        eval_batch_size: int = 10_000,
        seed: int = 0,
    ) -> None:
        super().__init__(batch_size, eval_batch_size, seed)
        self.val_fraction = check_float("val_fraction", val_fraction, 0.0, strict=True)
        self.test_fraction = check_float("test_fraction", test_fraction, 0.0)
        if self.val_fraction + self.test_fraction >= 1:
            raise UserInputError(
                "val_fraction + test_fraction must be < 1 (the rest is for training),"
                f" got {val_fraction} + {test_fraction}"
            )
        self.path = path
        self.target = target
        self.predict_path = predict_path
        self._features = select_columns(path, read_header(path), target, features)
        self.standardizer: Standardizer | None = None
        self._table: Table | None = None  # every row of `path`, raw
        self._splits: tuple[Tensor, Tensor, Tensor] | None = None  # row indices of train, val, test
        self._predict_table: Table | None = None  # the rows `predict` runs on, raw
        self._predict_x: Tensor | None = None  # ... standardised

    @property
    def input_dim(self) -> int:
        return len(self._features)

    @property
    def target_name(self) -> str:
        return self.target

    @property
    def feature_names(self) -> list[str]:
        return list(self._features)

    def prepare_data(self) -> None:
        # Lightning calls this before the logger makes the run directory: a bad file stops the run with
        # nothing written. setup() reads the file only where this did not run (other processes under DDP).
        stage = self.trainer.state.fn if self.trainer is not None else None  # a TrainerFn, which is a str
        self._read(stage or "fit")

    def setup(self, stage: str) -> None:
        self._read(stage)
        self._standardize()

    def _read(self, stage: str) -> None:
        if self._table is None:
            self._table = read_table(self.path, [*self._features, self.target])
            self._splits = split_rows(len(self._table), self.val_fraction, self.test_fraction, self.seed, self.path)
            if self.standardizer is None:  # not already restored from a checkpoint
                # Training needs statistics it can learn from. validate/test/predict usually get the
                # training run's from the checkpoint (load_state_dict, after setup), whatever the file
                # holds now; these stand in until then.
                self.standardizer = self._fit_standardizer(self._table, self._splits[0], for_training=stage == "fit")
        if stage == "predict" and self._predict_table is None:
            if self.predict_path is None:
                self._predict_table = self._table
            else:
                self._predict_table = read_table(self.predict_path, self._features, optional=[self.target])

    def _fit_standardizer(self, table: Table, train_rows: Tensor, for_training: bool) -> Standardizer:
        """The training split's statistics; a constant column (std 0) cannot be standardised, nor learnt from.

        ``for_training=False``: a constant column is kept, with a std of 1 (no model is fitted to it here).
        """
        X, y = self._x(table), table.columns[self.target].reshape(-1, 1)
        standardizer = Standardizer.fit(X[train_rows], y[train_rows])
        if not for_training:
            return replace(
                standardizer,
                x_std=torch.where(standardizer.x_std == 0, 1.0, standardizer.x_std),
                y_std=standardizer.y_std or 1.0,
            )
        stds = [*standardizer.x_std.tolist(), standardizer.y_std]
        for name, std in zip([*self._features, self.target], stds, strict=True):
            if std == 0:
                value = table.columns[name][train_rows[0]].item()
                raise UserInputError(
                    f"{self.path}: column {name!r} is constant on the training split (every value is {value:g});"
                    + (" there is nothing to predict" if name == self.target else " leave it out of data.features")
                )
        return standardizer

    def _x(self, table: Table) -> Tensor:
        return torch.stack([table.columns[name] for name in self._features], dim=1)  # (n, d), float64

    def _standardize(self) -> None:
        """The splits (and predict rows) in the units the model is trained in: standardised, float32."""
        assert self._table is not None, "_read() comes first"
        assert self._splits is not None
        assert self.standardizer is not None
        X, y = self._x(self._table), self._table.columns[self.target].reshape(-1, 1)  # (n, d), (n, 1)
        X_s, y_s = self.standardizer.transform_x(X).float(), self.standardizer.transform_y(y).float()
        self.train_data, self.val_data, self.test_data = ((X_s[rows], y_s[rows]) for rows in self._splits)
        if self._predict_table is not None:
            self._predict_x = self.standardizer.transform_x(self._x(self._predict_table)).float()

    def state_dict(self) -> dict[str, Any]:
        """The standardisation statistics and the columns they belong to: plain tensors, floats and strings."""
        if self.standardizer is None:
            return {}
        return {"target": self.target, "features": list(self._features), **self.standardizer.state_dict()}

    def load_state_dict(self, state_dict: dict[str, Any]) -> None:
        """Restores the statistics of the checkpoint's training split (Lightning calls it after ``setup``)."""
        saved = (state_dict["target"], list(state_dict["features"]))
        if saved != (self.target, self._features):
            raise UserInputError(
                f"the checkpoint was trained to predict {saved[0]!r} from {saved[1]};"
                f" this run asks for {self.target!r} from {self._features}"
            )
        self.standardizer = Standardizer.from_state_dict(state_dict)
        if self._table is not None:
            self._standardize()

    def to_original_units(self, w: Tensor, b: Tensor) -> tuple[Tensor, Tensor]:
        """Coefficients of the standardised model as those of ``target = columns @ w' + b'`` (float64)."""
        assert self.standardizer is not None, "setup() must run before the statistics are known"
        return self.standardizer.to_original_units(w, b)

    def to_target_units(self, values: Tensor) -> Tensor:
        assert self.standardizer is not None, "setup() must run before the statistics are known"
        return self.standardizer.inverse_y(values)

    @property
    def target_scale(self) -> float:
        assert self.standardizer is not None, "setup() must run before the statistics are known"
        return self.standardizer.y_std

    def prediction_columns(self, predictions: Tensor) -> dict[str, Tensor]:
        """``line`` (of the input file), the actual target where the file has it, and the prediction."""
        assert self._predict_table is not None, "setup('predict') comes first"
        assert self.standardizer is not None
        columns = {"line": self._predict_table.lines}
        if self.target in self._predict_table.columns:
            actual = self.target if self.target not in ("line", "prediction") else f"actual_{self.target}"
            columns[actual] = self._predict_table.columns[self.target]
        columns["prediction"] = self.to_target_units(predictions.reshape(-1))
        return columns

    def predict_inputs(self) -> tuple[Tensor] | None:
        """Every row of ``path``, or of ``predict_path`` when given."""
        return (self._predict_x,) if self._predict_x is not None else None
