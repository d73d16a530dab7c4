"""``RegressionData``: what every data module of this project tells the model, the report and the CLI."""

from __future__ import annotations

from collections.abc import Callable, Iterator, Sequence

import torch
from lightning.pytorch import LightningDataModule
from torch import Tensor
from torch.utils.data import DataLoader

from linreg.constraints import check
from linreg.data.batches import fits_on_device, tensor_loader
from linreg.stats.ols import Moments, mean_squared_error, row_chunks
from linreg.stats.reference import MSE, Objective, Reference, solve


class RegressionData(LightningDataModule):
    """Base class of the data modules: tensors ``(X, y)`` per split, plus what is known about them.

    Subclasses set ``train_data``, ``val_data`` and ``test_data`` in ``setup()`` (``X`` ``(n, input_dim)``, ``y``
    ``(n, 1)``, in the model's units) and override the properties below where they know more.

    Args:
        batch_size: examples per training batch (per SGD step).
        eval_batch_size: examples per validation/test/predict batch.
        seed: seeds the shuffling order (and whatever else the subclass draws).
    """

    train_data: tuple[Tensor, Tensor] | None = None
    val_data: tuple[Tensor, Tensor] | None = None
    test_data: tuple[Tensor, Tensor] | None = None

    def __init__(self, batch_size: int, eval_batch_size: int, seed: int) -> None:
        super().__init__()
        self.batch_size = check("data.batch_size", batch_size)
        self.eval_batch_size = check("data.eval_batch_size", eval_batch_size)
        # torch's generators take seeds below 2**64, numpy's non-negative ones; numbers either way.
        self.seed = check("data.seed", seed)
        # The references solved so far, by objective, and the training X they were solved on.
        self._references: tuple[Tensor | None, dict[Objective, Reference]] = (None, {})

    @property
    def ready(self) -> bool:
        """Whether ``setup`` has made the splits (in memory: ``train_data`` is set)."""
        return self.train_data is not None

    def split_chunks(self, split: str) -> Iterator[tuple[Tensor, Tensor]] | None:
        """Every row of ``split`` as ``(X, y)`` blocks in the model's units (for the report); None if empty."""
        tensors = {"train": self.train_data, "val": self.val_data, "test": self.test_data}[split]
        if tensors is None or len(tensors[0]) == 0:
            return None
        return row_chunks(*tensors, device=tensors[0].device, dtype=None)

    def reference(self, objective: Objective = MSE) -> Reference:
        """The exact optimum of ``objective`` on the training split, in the model's units, solved once per objective.

        Raises:
            UserInputError: without a penalty, a column the others determine (see ``linreg.stats.ols``).
        """
        assert self.ready, "setup() must run before the reference is asked for"
        key = self.train_data[0] if self.train_data is not None else None
        if self._references[0] is not key:
            self._references = (key, {})
        solved = self._references[1]
        if objective not in solved:
            solved[objective] = solve(
                objective,
                self.training_moments(),
                lambda: self.split_chunks("train") or iter(()),
                self.feature_names,
                self.residual_sum(),
            )
        return solved[objective]

    def training_moments(self) -> Moments:
        """Count, means and centred cross-products of ``[X y]`` over the training split, in the model's units."""
        assert self.train_data is not None
        X, y = self.train_data
        device = self.trainer.strategy.root_device if self.trainer is not None else X.device
        return Moments.of(row_chunks(X, y, device), X.shape[1] + 1, device)

    def residual_sum(self) -> Callable[[Tensor, Tensor], float] | None:
        """The residual sum of squares of ``(w, b)`` from a second pass over the training rows (exact where the
        moments' ``S_yy - mᵀw`` would cancel, as for noise-free labels); None where a pass costs a read."""
        assert self.train_data is not None
        X, y = self.train_data
        device = self.trainer.strategy.root_device if self.trainer is not None else X.device
        return lambda w, b: mean_squared_error(X, y, w, b, device) * X.shape[0]

    @property
    def input_dim(self) -> int:
        """Number of features; the CLI links it to ``model.input_dim``."""
        raise NotImplementedError

    @property
    def feature_names(self) -> list[str]:
        """One name per feature, for reports."""
        return [f"x{i}" for i in range(self.input_dim)]

    @property
    def target_name(self) -> str:
        """The target's name, for reports and figures."""
        return "y"

    @property
    def true_w(self) -> Tensor | None:
        """The true weights, shape ``(input_dim,)``, when the data were generated from them."""
        return None

    @property
    def true_b(self) -> float | None:
        """The true bias, when known."""
        return None

    def to_original_units(self, w: Tensor, b: Tensor) -> tuple[Tensor, Tensor]:
        """The model's coefficients in the data's own units; affine in ``(w, b)`` (standard errors go through it)."""
        return w, b

    def to_target_units(self, values: Tensor) -> Tensor:
        """Targets or predictions in the units the model is trained in, converted to the target's own."""
        return values

    @property
    def target_scale(self) -> float:
        """Target units per unit of the model's output: errors times this are in the target's own units."""
        return 1.0

    def prediction_columns(self, predictions: Tensor) -> dict[str, Tensor]:
        """The columns of ``predictions.csv`` from the model's outputs ``(n,)`` or ``(n, 1)``, in its units."""
        return {"prediction": predictions.reshape(-1)}

    def predict_inputs(self) -> Sequence[Tensor] | None:
        """The tensors ``predict`` runs on (``X`` first); the test split unless a subclass says otherwise."""
        return self.test_data

    def train_dataloader(self) -> DataLoader:
        return self._loader(self.train_data, self.batch_size, shuffle=True)

    def val_dataloader(self) -> DataLoader:
        return self._loader(self.val_data, self.eval_batch_size, shuffle=False)

    def test_dataloader(self) -> DataLoader:
        return self._loader(self.test_data, self.eval_batch_size, shuffle=False)

    def predict_dataloader(self) -> DataLoader:
        return self._loader(self.predict_inputs(), self.eval_batch_size, shuffle=False)

    def _loader(self, split: Sequence[Tensor] | None, batch_size: int, shuffle: bool) -> DataLoader:
        assert split is not None, "setup() must run before the dataloaders are asked for"
        device = self.trainer.strategy.root_device if self.trainer is not None else torch.device("cpu")
        on_device = fits_on_device(split, device)
        if on_device:  # placed once; no batch crosses from host to device afterwards
            split = tuple(t.to(device) for t in split)
        return tensor_loader(
            *split,
            batch_size=batch_size,
            shuffle=shuffle,
            seed=self.seed,
            pin_memory=device.type == "cuda" and not on_device,
        )
