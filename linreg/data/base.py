"""``RegressionData``: what every data module of this project tells the model, the report and the CLI."""

from __future__ import annotations

from lightning.pytorch import LightningDataModule
from torch import Tensor


class RegressionData(LightningDataModule):
    """Base class of the data modules: tensors ``(X, y)`` per split, plus what is known about them.

    Subclasses set ``train_data``, ``val_data`` and ``test_data`` in ``setup()`` (``X`` of shape
    ``(n, input_dim)``, ``y`` of shape ``(n, 1)``, in the units the model is trained in) and override
    the properties below where they know more.
    """

    train_data: tuple[Tensor, Tensor] | None = None
    val_data: tuple[Tensor, Tensor] | None = None
    test_data: tuple[Tensor, Tensor] | None = None

    @property
    def input_dim(self) -> int:
        """Number of features; the CLI links it to ``model.input_dim``."""
        raise NotImplementedError

    @property
    def feature_names(self) -> list[str]:
        """One name per feature, for reports."""
        return [f"x{i}" for i in range(self.input_dim)]

    @property
    def true_w(self) -> Tensor | None:
        """The true weights, shape ``(input_dim,)``, when the data were generated from them."""
        return None

    @property
    def true_b(self) -> float | None:
        """The true bias, when known."""
        return None

    def to_original_units(self, w: Tensor, b: Tensor) -> tuple[Tensor, Tensor]:
        """Converts coefficients of the model (fitted on transformed data) to the data's own units."""
        return w, b

    def prediction_columns(self, predictions: Tensor) -> dict[str, Tensor]:
        """The columns of ``predictions.csv``, one value per example of ``predict_dataloader()``, in its order.

        Args:
            predictions: the model's outputs for those examples, shape ``(n,)`` or ``(n, 1)``, in the units
                it is trained in; subclasses that transform the target convert them back here.
        """
        return {"prediction": predictions.reshape(-1)}
