"""The book's synthetic data: ``synthetic_data`` (d2l's function, plain tensors) and ``SyntheticRegressionData``."""

from __future__ import annotations

from collections.abc import Sequence

import torch
from torch import Tensor

from linreg.constraints import check
from linreg.data.base import RegressionData
from linreg.validation import check_fits_in_memory

D2L_TRUE_W = (2.0, -3.4, 5.6, 3.2, -0.6)


def synthetic_data(
    w: Tensor,
    b: float,
    num_examples: int,
    noise_std: float,
    generator: torch.Generator | None = None,
    dtype: torch.dtype = torch.float32,
) -> tuple[Tensor, Tensor]:
    """Draws ``X ~ N(0, 1)`` ``(num_examples, d)`` and ``y = X w + b + N(0, noise_std)`` ``(num_examples, 1)``."""
    w = w.to(dtype).reshape(-1, 1)
    X = torch.randn(num_examples, w.shape[0], generator=generator, dtype=dtype)  # (n, d)
    y = X @ w  # (n, d) @ (d, 1) -> (n, 1)
    y += b
    # Drawn after X and added in place: no second label-sized tensor.
    y += noise_std * torch.randn(num_examples, 1, generator=generator, dtype=dtype)
    return X, y


class SyntheticRegressionData(RegressionData):
    """Train, validation and test splits of ``y = X w + b + N(0, noise_std)``, drawn from one seed.

    Args:
        true_w: the true weights, or an int ``d`` to draw ``d`` weights from N(0, 1) with ``seed``.
        true_b: the true bias.
        noise_std: standard deviation of the label noise.
        num_train: training examples.
        num_val: validation examples; 0 turns validation off.
        num_test: test examples (also the examples ``predict`` runs on).
        batch_size: examples per SGD step.
        eval_batch_size: examples per validation/test/predict batch (no gradient step: large is faster).
        seed: seeds the data and the shuffling order; the same seed gives the same tensors and batches.

    Example:
        >>> dm = SyntheticRegressionData(true_w=[1.0, 2.0], num_train=8, num_val=4, num_test=4)
        >>> dm.setup("fit")
        >>> dm.input_dim, dm.train_data[0].shape
        (2, torch.Size([8, 2]))
    """

    def __init__(
        self,
        true_w: Sequence[float] | int = D2L_TRUE_W,
        true_b: float = 4.2,
        noise_std: float = 0.01,
        num_train: int = 1000,
        num_val: int = 1000,
        num_test: int = 1000,
        batch_size: int = 10,
        eval_batch_size: int = 10_000,
        seed: int = 0,
    ) -> None:
        super().__init__(batch_size, eval_batch_size, seed)
        self.noise_std = check("data.noise_std", noise_std)
        self.num_train = check("data.num_train", num_train)
        self.num_val = check("data.num_val", num_val)
        self.num_test = check("data.num_test", num_test)
        true_w = check("data.true_w", true_w)  # an int: that many weights, drawn from N(0, 1) with the seed
        self._true_b = check("data.true_b", true_b)
        # Checked before anything is drawn: the splits, as float32 features and target.
        width = true_w if isinstance(true_w, int) else len(true_w)
        examples = self.num_train + self.num_val + self.num_test
        check_fits_in_memory(
            f"{examples} examples (num_train + num_val + num_test) of {width} features", examples * (width + 1) * 4
        )
        if isinstance(true_w, int):
            self._true_w = torch.randn(true_w, generator=torch.Generator().manual_seed(seed))
        else:
            self._true_w = torch.tensor(true_w)

    @property
    def input_dim(self) -> int:
        return self._true_w.numel()

    @property
    def true_w(self) -> Tensor:
        return self._true_w

    @property
    def true_b(self) -> float:
        return self._true_b

    def setup(self, stage: str) -> None:
        if self.train_data is not None:  # Lightning calls setup once per stage; the data is drawn once.
            return
        generator = torch.Generator().manual_seed(self.seed)
        # Drawn in this order so that changing num_val or num_test leaves the training data as it was.
        self.train_data = synthetic_data(self.true_w, self.true_b, self.num_train, self.noise_std, generator)
        self.val_data = synthetic_data(self.true_w, self.true_b, self.num_val, self.noise_std, generator)
        self.test_data = synthetic_data(self.true_w, self.true_b, self.num_test, self.noise_std, generator)
