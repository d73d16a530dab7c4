"""Standardisation: columns shifted and scaled to mean 0 and standard deviation 1, and back.

SGD with one learning rate cannot fit features on scales of 1e3 and 1e-2 at once: the step that moves
the small-scale weight diverges on the large-scale one. Standardised, every feature has unit scale and
the default learning rate suits any table. The target is standardised too: Adam moves a parameter
by about ``lr`` a step whatever its gradient, so an intercept of 50 000 in raw units would take millions
of steps; and float32 keeps ~7 digits, too few for residuals of 1 around values of 1e6.

The model then learns ``y_s = x_s w + b`` with ``x_s = (x - mean_x) / std_x`` and
``y_s = (y - mean_y) / std_y``; ``to_original_units`` turns ``(w, b)`` into the coefficients of
``y = x w' + b'`` on the raw columns. Plain functions and a small container of tensors, no Lightning.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Any

import torch
from torch import Tensor


@dataclass(frozen=True)
class Standardizer:
    """Means and standard deviations of the features and the target, from the training split.

    Attributes:
        x_mean: shape ``(d,)``, float64.
        x_std: shape ``(d,)``, float64, all > 0.
        y_mean: the target's mean.
        y_std: the target's standard deviation, > 0.
    """

    x_mean: Tensor
    x_std: Tensor
    y_mean: float
    y_std: float

    def transform_x(self, X: Tensor) -> Tensor:
        """``(X - x_mean) / x_std``, in X's dtype: ``(n, d) -> (n, d)``."""
        return ((X.double() - self.x_mean) / self.x_std).to(X.dtype)

    def transform_y(self, y: Tensor) -> Tensor:
        """``(y - y_mean) / y_std``, in y's dtype and shape."""
        return ((y.double() - self.y_mean) / self.y_std).to(y.dtype)

    def inverse_y(self, y_s: Tensor) -> Tensor:
        """``y_s * y_std + y_mean``: standardised targets or predictions back in the target's units (float64)."""
        return y_s.double() * self.y_std + self.y_mean

    def to_original_units(self, w: Tensor, b: Tensor | float) -> tuple[Tensor, Tensor]:
        """The coefficients of ``y = x w' + b'`` on raw columns, from those of the standardised model.

        ``w' = std_y * w / std_x`` and ``b' = mean_y + std_y * (b - sum(w * mean_x / std_x))``.

        Args:
            w: weights of the standardised model, shape ``(d,)``.
            b: its bias.

        Returns:
            ``(w', b')`` in float64, shapes ``(d,)`` and ``()``.

        Example:
            >>> s = Standardizer(torch.tensor([2.0]), torch.tensor([4.0]), 10.0, 3.0)
            >>> w, b = s.to_original_units(torch.tensor([1.0]), 0.0)  # y = 10 + 3 (x - 2) / 4
            >>> w.tolist(), b.item()
            ([0.75], 8.5)
        """
        w_over_std = w.double().reshape(-1) / self.x_std
        b = torch.as_tensor(b, dtype=torch.float64).reshape(())
        return self.y_std * w_over_std, self.y_mean + self.y_std * (b - (w_over_std * self.x_mean).sum())

    def state_dict(self) -> dict[str, Any]:
        """Tensors and floats only, so a checkpoint holding it loads with ``torch.load(weights_only=True)``."""
        return {"x_mean": self.x_mean, "x_std": self.x_std, "y_mean": self.y_mean, "y_std": self.y_std}

    @classmethod
    def from_state_dict(cls, state: dict[str, Any]) -> Standardizer:
        return cls(state["x_mean"].double(), state["x_std"].double(), float(state["y_mean"]), float(state["y_std"]))
