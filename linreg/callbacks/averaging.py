"""``AveragedSGD``: the mean of the SGD iterates from a chosen point on (Polyak-Ruppert averaging).

With a constant learning rate the last iterate jitters around the optimum; their mean reaches the closed form's
statistical accuracy in one pass (Bach & Moulines, 2013). Not Lightning's ``WeightAveraging``: its float32 running
mean stalls after about a thousand iterates, and it averages once per batch, missing ``linreg.grouped``'s steps.
As there, validation and checkpoints (``state_dict``; the iterate as ``current_model_state``) see the average.
"""

from __future__ import annotations

import contextlib
import math
from collections.abc import Iterator
from typing import Any

import torch
from lightning.pytorch import Callback, LightningModule, Trainer
from lightning.pytorch.utilities import rank_zero_warn
from torch import Tensor
from torch.utils.hooks import RemovableHandle

from linreg.constraints import check
from linreg.validation import UserInputError


class AveragedSGD(Callback):
    """Averages the weights after every optimizer step from ``start`` on.

    Args:
        start: optimizer steps left out (int), or the fraction of the run's batches left out (float in [0, 1)).
    """

    def __init__(self, start: int | float = 0.8) -> None:
        self.start = check("AveragedSGD.start", start)  # an int or a float, numpy's too
        self.averaged = 0  # iterates in the mean so far; while 0, the "average" is the model itself
        # The sum of the averaged iterates, in float64: a float32 running mean stops moving once its increment
        # (iterate - mean) / n falls below half the mean's resolution, a few thousand steps into a long run.
        self.total: list[Tensor] = []
        self._first_batch = 0  # with a fractional start: the run's first averaged batch
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
        # A fresh average for every fit (one object may serve several Trainers); a resumed one is restored after.
        if stage == "fit":
            self.averaged, self.total, self._iterate = 0, [], None

    @property
    def average(self) -> list[Tensor]:
        """The mean of the averaged iterates, in float64, one tensor per parameter of the model."""
        return [total / self.averaged for total in self.total]

    def on_train_start(self, trainer: Trainer, pl_module: LightningModule) -> None:
        self._trainer = trainer
        self._step = trainer.global_step  # optimizer steps taken, a resumed run's included
        # The run's training batches from its limits, or None if unlimited (estimated_stepping_batches reloads data).
        limits = [trainer.max_steps] if trainer.max_steps is not None and trainer.max_steps >= 0 else []
        if trainer.max_epochs is not None and trainer.max_epochs >= 0 and trainer.num_training_batches != math.inf:
            limits.append(trainer.max_epochs * trainer.num_training_batches)
        planned = min(limits, default=None)
        if isinstance(self.start, float):
            if planned is None:
                raise UserInputError(
                    f"start {self.start} is a fraction of the run, whose length is not set (max_epochs or max_steps);"
                    " give a number of steps"
                )
            self._first_batch = int(self.start * planned)  # counted from 0 over the run's epochs
        # linreg.grouped takes steps Lightning does not count in batches; a warning: short trial runs are common.
        elif pl_module.automatic_optimization and planned is not None and self.start >= planned:
            rank_zero_warn(
                f"AveragedSGD start {self.start} is at or past the run's last optimizer step ({int(planned)}"
                " planned): averaging will not start, and the report is of the last SGD iterate; give fewer"
                " steps, or a fraction of the run such as 0.25"
            )
        # Views of the parameters, updated in place by the optimizer: nothing to look up at every step.
        self._weights = [p.detach() for p in pl_module.parameters()]
        self.total = [total.to(w.device) for total, w in zip(self.total, self._weights, strict=False)]  # restored
        self._hooks = [optimizer.register_step_post_hook(self._update) for optimizer in trainer.optimizers]

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
        """Puts the average into the model, the iterate aside (during fit, once begun); returns whether it did."""
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
        """The average as the checkpoint's weights, the SGD iterate beside it, whatever the model holds now."""
        if not self.averaged or trainer.state.fn != "fit":
            return
        names = [name for name, _ in pl_module.named_parameters()]
        iterate = self._iterate if self._iterate is not None else [p.detach() for p in pl_module.parameters()]
        average = [mean.to(p.dtype) for p, mean in zip(pl_module.parameters(), self.average, strict=True)]
        weights = checkpoint["state_dict"]
        checkpoint["current_model_state"] = {**weights, **{n: w.clone() for n, w in zip(names, iterate, strict=True)}}
        checkpoint["state_dict"] = {**weights, **dict(zip(names, average, strict=True))}

    def on_load_checkpoint(self, trainer: Trainer, pl_module: LightningModule, checkpoint: dict[str, Any]) -> None:
        """Fit goes on from the iterate beside the average; validate, test and predict keep the average."""
        if "current_model_state" not in checkpoint or trainer.state.fn != "fit":
            return
        pl_module.load_state_dict(checkpoint["current_model_state"])

    def state_dict(self) -> dict[str, Any]:
        return {"averaged": self.averaged, "total": [total.clone() for total in self.total]}

    def load_state_dict(self, state_dict: dict[str, Any]) -> None:
        self.averaged = state_dict["averaged"]
        self.total = [total.to(torch.float64, copy=True) for total in state_dict["total"]]


@contextlib.contextmanager
def reported_weights(trainer: Trainer) -> Iterator[None]:
    """Within it, the model holds the weights the fit will report (the average once begun): the curves end there."""
    model = trainer.lightning_module
    averaging = [cb for cb in trainer.callbacks if isinstance(cb, AveragedSGD)]  # type: ignore[attr-defined]
    shown = [cb for cb in averaging if cb.show_average(model)]  # not those already showing it (in validation)
    try:
        yield
    finally:
        for callback in reversed(shown):
            callback.show_iterate(model)
