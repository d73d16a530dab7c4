"""``AveragedSGD``: the average of the SGD iterates from a chosen point of the run on (Polyak-Ruppert averaging).

With a constant learning rate SGD does not settle on the least-squares solution: every step moves the
weights by a noisy gradient, so the last iterate jitters around it by an amount set by the learning
rate, the batch size and the label noise. The mean of the iterates cancels most of that jitter; for
least squares it reaches the statistical accuracy of the closed form, in a single pass over the data
(Bach & Moulines, 2013). The average is started once the loss has levelled: iterates from the first
steps would pull it back towards the starting point.

Not Lightning's ``WeightAveraging``: its ``AveragedModel`` keeps a running mean in the parameters' float32,
which stops moving after about a thousand iterates (``test_the_average_of_many_iterates_is_their_float64_mean_
where_a_float32_running_mean_stalls``), and it averages once per Lightning batch, missing the steps
``linreg.grouped`` takes within one (``test_a_model_taking_several_sgd_steps_per_batch_has_every_step_averaged``).
What it keeps from it: validation sees the averaged weights; checkpoints hold the average as their ``state_dict``
and the SGD iterate beside it (``current_model_state``), so a resumed run continues the same average bit for bit
and ``predict`` uses the average; when training ends the average is copied into the model.

The update is one ``lerp_`` per parameter tensor, run by a hook on the optimizer after every step
(``Optimizer.register_step_post_hook``): every SGD step is averaged, also those a model takes several
of per Lightning step (``linreg.grouped``).
"""

from __future__ import annotations

import contextlib
from collections.abc import Iterator
from typing import Any

import torch
from lightning.pytorch import Callback, LightningModule, Trainer
from lightning.pytorch.utilities import rank_zero_warn
from torch import Tensor
from torch.utils.hooks import RemovableHandle

from linreg.validation import UserInputError


class AveragedSGD(Callback):
    """Averages the weights after every optimizer step from ``start`` on.

    Args:
        start: where the average starts: an int is the number of optimizer steps left out (the time SGD
            needs to reach the noise floor, which depends on the learning rate and the data's conditioning,
            not on the table's size); a float in [0, 1) is the fraction of the run left out, counted in
            training batches (0.8, the default, averages the last fifth, as Lightning's
            ``StochasticWeightAveraging`` does; 0.05 averages all but the first 5% of a single pass). A
            number of steps the planned run never reaches is warned of when training starts.

    Attributes:
        averaged: how many iterates this fit averaged so far; ``started`` says whether it began at all (early
            stopping or ``max_time`` can end a run before ``start``).
        average: their mean, in float64.

    Example:
        >>> AveragedSGD(start=0.25).first_batch(num_training_batches=100, max_epochs=2)  # 25% of 200 batches
        50
    """

    def __init__(self, start: int | float = 0.8) -> None:
        if isinstance(start, float):
            valid = 0 <= start < 1
        else:
            valid = isinstance(start, int) and not isinstance(start, bool) and start >= 0
        if not valid:
            raise UserInputError(
                f"start must be a number of optimizer steps (an int >= 0) or a fraction of the run in [0, 1), got"
                f" {start!r}"
            )
        self.start = start
        self.averaged = 0  # iterates in the mean so far; while 0, the "average" is the model itself
        # The sum of the averaged iterates, in float64: a float32 running mean stops moving once its increment
        # (iterate - mean) / n falls below half the mean's resolution, a few thousand steps into a long run.
        self.total: list[Tensor] = []
        self._first_batch = 0  # with a fractional start: the run's first averaged batch (over all its epochs)
        self._trainer: Trainer | None = None
        self._step = 0
        self._weights: list[Tensor] = []
        self._iterate: list[Tensor] | None = None  # the SGD iterate while the model holds the average
        self._hooks: list[RemovableHandle] = []

    @property
    def started(self) -> bool:
        """Whether averaging began in this fit (a run cut short by early stopping or max_time may end before)."""
        return self.averaged > 0

    def setup(self, trainer: Trainer, pl_module: LightningModule, stage: str) -> None:
        """A fresh average for every fit: this object may serve several Trainers. Lightning restores a resumed
        run's average after ``setup`` (``load_state_dict``)."""
        if stage == "fit":
            self.averaged, self.total, self._iterate = 0, [], None

    @property
    def average(self) -> list[Tensor]:
        """The mean of the averaged iterates, in float64, one tensor per parameter of the model."""
        return [total / self.averaged for total in self.total]

    def first_batch(self, num_training_batches: float, max_epochs: int | None, max_steps: int = -1) -> int:
        """With a fractional ``start``: the first averaged training batch of the run, counted from 0 over its epochs.

        The run is as long as the first of its limits: ``max_steps``, or ``max_epochs`` epochs of
        ``num_training_batches``.
        """
        assert isinstance(self.start, float)
        total = _run_length(num_training_batches, max_epochs, max_steps)
        if total is None:
            raise UserInputError(
                f"start {self.start} is a fraction of the run, whose length is not set (max_epochs or max_steps);"
                " give a number of steps"
            )
        return int(self.start * total)

    def on_train_start(self, trainer: Trainer, pl_module: LightningModule) -> None:
        self._trainer = trainer
        self._step = trainer.global_step  # optimizer steps taken, a resumed run's included
        if isinstance(self.start, float):
            self._first_batch = self.first_batch(trainer.num_training_batches, trainer.max_epochs, trainer.max_steps)
        elif pl_module.automatic_optimization:  # linreg.grouped takes steps Lightning does not count in batches
            planned = _run_length(trainer.num_training_batches, trainer.max_epochs, trainer.max_steps)
            self._warn_if_never_started(planned)
        # Views of the parameters, updated in place by the optimizer: nothing to look up at every step.
        self._weights = [p.detach() for p in pl_module.parameters()]
        self.total = [total.to(w.device) for total, w in zip(self.total, self._weights, strict=False)]  # restored
        self._hooks = [optimizer.register_step_post_hook(self._update) for optimizer in trainer.optimizers]

    def _warn_if_never_started(self, planned: float | None) -> None:
        """Warns of a start in steps that the run never reaches: its report is then of the plain iterate.

        A warning, not a refusal: a short trial run of a config (``--trainer.max_epochs 2``) is a common use.
        """
        if planned is not None and self.start >= planned:
            rank_zero_warn(
                f"AveragedSGD start {self.start} is at or past the run's last optimizer step ({int(planned)} planned):"
                " averaging will not start, and the report is of the last SGD iterate; give fewer steps, or a"
                " fraction of the run such as 0.25"
            )

    def _update(self, *_: Any) -> None:
        """After an optimizer step: the model's weights enter the mean, once past the start."""
        self._step += 1
        if isinstance(self.start, int):
            started = self._step > self.start
        else:  # total_batch_idx: this batch, counted over the run's epochs
            assert self._trainer is not None, "registered in on_train_start"
            started = self._trainer.fit_loop.total_batch_idx >= self._first_batch
        if not started:
            return
        self.averaged += 1
        if self.averaged == 1:
            self.total = [w.to(torch.float64, copy=True) for w in self._weights]
            return
        for total, w in zip(self.total, self._weights, strict=True):
            total.add_(w)  # float64 += the iterate, rounded once to float64's 16 digits

    def on_train_end(self, trainer: Trainer, pl_module: LightningModule) -> None:
        self._remove_hooks()
        if self.averaged:  # what the report, the figures and the final checkpoint show
            self.show_average(pl_module)
            self._iterate = None  # the average stays

    def on_exception(self, trainer: Trainer, pl_module: LightningModule, exception: BaseException) -> None:
        self._remove_hooks()

    def _remove_hooks(self) -> None:
        for hook in self._hooks:
            hook.remove()
        self._hooks = []

    def on_validation_epoch_start(self, trainer: Trainer, pl_module: LightningModule) -> None:
        self.show_average(pl_module)  # validation during fit scores the average

    def on_validation_epoch_end(self, trainer: Trainer, pl_module: LightningModule) -> None:
        self.show_iterate(pl_module)  # and training goes on from the iterate

    def show_average(self, pl_module: LightningModule) -> bool:
        """Puts the average into the model, the iterate aside (once averaging has begun, during fit).

        Returns:
            Whether the model's weights changed (False before the start, outside fit, or when already shown).
        """
        if not self.averaged or self._iterate is not None or pl_module.trainer.state.fn != "fit":
            return False
        with torch.no_grad():
            self._iterate = [p.detach().clone() for p in pl_module.parameters()]
            for p, mean in zip(pl_module.parameters(), self.average, strict=True):
                p.copy_(mean)
        return True

    def show_iterate(self, pl_module: LightningModule) -> None:
        """Puts the SGD iterate set aside by ``show_average`` back into the model."""
        if self._iterate is None:
            return
        with torch.no_grad():
            for p, iterate in zip(pl_module.parameters(), self._iterate, strict=True):
                p.copy_(iterate)
        self._iterate = None

    def on_save_checkpoint(self, trainer: Trainer, pl_module: LightningModule, checkpoint: dict[str, Any]) -> None:
        """The average as the checkpoint's weights, the SGD iterate beside it (as ``WeightAveraging`` saves them),
        whatever the model holds now: a checkpoint saved during validation (on a signal) finds the average in it."""
        if not self.averaged or trainer.state.fn != "fit":
            return
        names = [name for name, _ in pl_module.named_parameters()]
        iterate = self._iterate if self._iterate is not None else [p.detach() for p in pl_module.parameters()]
        average = [mean.to(p.dtype) for p, mean in zip(pl_module.parameters(), self.average, strict=True)]
        weights = checkpoint["state_dict"]
        checkpoint["current_model_state"] = {**weights, **{n: w.clone() for n, w in zip(names, iterate, strict=True)}}
        checkpoint["state_dict"] = {**weights, **dict(zip(names, average, strict=True))}

    def on_load_checkpoint(self, trainer: Trainer, pl_module: LightningModule, checkpoint: dict[str, Any]) -> None:
        """The model holds the checkpoint's ``state_dict`` now (the average): fit goes on from the iterate beside it.
        validate, test and predict keep the average: it is what the fit reports."""
        if "current_model_state" not in checkpoint or trainer.state.fn != "fit":
            return
        pl_module.load_state_dict(checkpoint["current_model_state"])

    def state_dict(self) -> dict[str, Any]:
        return {"averaged": self.averaged, "total": [total.clone() for total in self.total]}

    def load_state_dict(self, state_dict: dict[str, Any]) -> None:
        self.averaged = state_dict["averaged"]
        self.total = [total.to(torch.float64, copy=True) for total in state_dict["total"]]


def _run_length(num_training_batches: float, max_epochs: int | None, max_steps: int | None) -> float | None:
    """The training batches of a run: the first of ``max_steps`` and ``max_epochs`` epochs; None if unlimited.

    Counted from the limits, not by ``Trainer.estimated_stepping_batches``, which loads the training data again.
    """
    limits = [max_steps] if max_steps is not None and max_steps >= 0 else []
    if max_epochs is not None and max_epochs >= 0 and num_training_batches != float("inf"):
        limits.append(max_epochs * num_training_batches)
    return min(limits) if limits else None


@contextlib.contextmanager
def reported_weights(trainer: Trainer) -> Iterator[None]:
    """Within it, the model holds the weights the fit will report: ``AveragedSGD``'s average once it has begun,
    else the SGD iterate itself. What the curves of a fit show, so that they end where the report does."""
    model = trainer.lightning_module
    averaging = [cb for cb in trainer.callbacks if isinstance(cb, AveragedSGD)]  # type: ignore[attr-defined]
    shown = [cb for cb in averaging if cb.show_average(model)]  # not those already showing it (in validation)
    try:
        yield
    finally:
        for callback in reversed(shown):
            callback.show_iterate(model)
