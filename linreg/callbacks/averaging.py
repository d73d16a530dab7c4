"""``AveragedSGD``: the average of the SGD iterates from a chosen epoch on (Polyak-Ruppert averaging).

With a constant learning rate SGD does not settle on the least-squares solution: every step moves the
weights by a noisy gradient, so the last iterate jitters around it by an amount set by the learning
rate, the batch size and the label noise. The mean of the iterates cancels most of that jitter; for
least squares it reaches the statistical accuracy of the closed form (Bach & Moulines, 2013). The
average is started once the loss has levelled: iterates from the first steps would pull it back towards
the starting point.

Built on Lightning's ``WeightAveraging``, which keeps an ``AveragedModel`` beside the model, validates
with the averaged weights, saves both in checkpoints (so a resumed run continues the same average,
bit for bit) and copies the average into the model when training ends, so that the report, the
figures and the checkpoints of a finished fit hold the averaged estimate. This subclass only chooses
which iterates enter the mean: before ``start_epoch`` the "average" follows the model step by step
(the mean of one iterate), from then on it is the running mean of every iterate.
"""

from __future__ import annotations

from typing import Any

from lightning.pytorch import LightningModule, Trainer
from lightning.pytorch.callbacks import WeightAveraging
from torch import Tensor

from linreg.validation import UserInputError


class AveragedSGD(WeightAveraging):
    """Averages the weights after every optimizer step from the start of epoch ``start_epoch`` on.

    Args:
        start_epoch: the first epoch whose iterates are averaged: an int counts epochs from 0 (1 leaves
            the first epoch out); a float in (0, 1) is a fraction of ``max_epochs``, rounded down, as in
            Lightning's ``StochasticWeightAveraging``.

    Example:
        >>> AveragedSGD().first_epoch(max_epochs=3)  # 0.8 of 3 epochs: the last one
        2
    """

    def __init__(self, start_epoch: int | float = 0.8) -> None:
        super().__init__(avg_fn=self.running_mean)
        if isinstance(start_epoch, float):
            valid = 0 <= start_epoch < 1
        else:
            valid = isinstance(start_epoch, int) and not isinstance(start_epoch, bool) and start_epoch >= 0
        if not valid:
            raise UserInputError(
                f"start_epoch must be an epoch (an int >= 0) or a fraction of max_epochs in [0, 1), got {start_epoch!r}"
            )
        self.start_epoch = start_epoch
        self.averaged = 0  # iterates in the mean so far
        self.weight = 1.0  # of the newest iterate in the next update: 1 / (iterates in the mean, it included)
        self._last_step = 0

    def first_epoch(self, max_epochs: int | None) -> int:
        """The first averaged epoch, given the run's ``max_epochs`` (needed for a fraction)."""
        if isinstance(self.start_epoch, int):
            return self.start_epoch
        if max_epochs is None or max_epochs < 0:
            raise UserInputError(
                f"start_epoch {self.start_epoch} is a fraction of max_epochs, and max_epochs is not set; give an epoch"
            )
        return int(self.start_epoch * max_epochs)

    def running_mean(self, averaged: Tensor, current: Tensor, num_averaged: Tensor) -> Tensor:
        """``AveragedModel``'s update of one parameter: the running mean from the start epoch on."""
        return averaged + (current - averaged) * self.weight

    def on_train_batch_end(
        self, trainer: Trainer, pl_module: LightningModule, outputs: Any, batch: Any, batch_idx: int
    ) -> None:
        if trainer.global_step > self._last_step:  # an optimizer step was taken (not so while accumulating)
            self._last_step = trainer.global_step
            if trainer.current_epoch >= self.first_epoch(trainer.max_epochs):
                self.averaged += 1
                self.weight = 1.0 / self.averaged
        super().on_train_batch_end(trainer, pl_module, outputs, batch, batch_idx)

    def state_dict(self) -> dict[str, Any]:
        return {**super().state_dict(), "averaged": self.averaged, "last_step": self._last_step}

    def load_state_dict(self, state_dict: dict[str, Any]) -> None:
        super().load_state_dict(state_dict)
        self.averaged, self._last_step = state_dict["averaged"], state_dict["last_step"]
        self.weight = 1.0 / self.averaged if self.averaged else 1.0
