"""R² that is NaN for a 1-row split (a 16-row table's validation split, say), where torchmetrics' ``R2Score`` raises."""

from __future__ import annotations

import torch
from torch import Tensor
from torchmetrics import R2Score


class DefinedR2Score(R2Score):
    """``R2Score`` that is NaN (undefined) for fewer than two rows instead of raising."""

    def compute(self) -> Tensor:
        if self.total < 2:
            return torch.full((), float("nan"), dtype=self.sum_error.dtype, device=self.sum_error.device)
        return super().compute()
