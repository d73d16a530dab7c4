"""The optimizer and scheduler a model configures, built on copies of its weights and stepped once.

What torch refuses only when an optimizer steps (an lr beyond float32, a sparse-only optimizer) is found before
training, for the config's settings and a checkpoint's alike.
"""

from __future__ import annotations

import contextlib
from collections.abc import Iterable, Iterator
from typing import Any

import torch
from torch.optim import Optimizer

from linreg.constraints import OPTIMIZER
from linreg.errors import one_line
from linreg.validation import UserInputError


@contextlib.contextmanager
def answered_as(key: str) -> Iterator[None]:
    """Answers a refusal by torch's optimizer or scheduler classes (or arithmetic that fails) as ``key``."""
    try:
        yield
    except UserInputError:
        raise
    except (ValueError, TypeError, RuntimeError, ArithmeticError, KeyError) as error:
        raise UserInputError(f"{key}: {one_line(str(error))}") from error


def trial_optimizers(model: Any) -> tuple[list[Optimizer], list[Any]] | None:
    """The model's optimizer (on copies, stepped once) and scheduler; ``None`` without an optimizer factory."""
    factory, scheduler_factory = getattr(model, "optimizer", None), getattr(model, "scheduler", None)
    if not callable(factory):
        return None
    params = [p.detach().clone().requires_grad_() for p in model.parameters()]
    with answered_as("model.optimizer"):
        optimizer = factory(params)
        check_param_groups(optimizer.param_groups, "model.optimizer")
    for p in params:
        p.grad = torch.zeros_like(p)
    trial_step(optimizer, "model.optimizer")
    if scheduler_factory is None:
        return [optimizer], []
    with answered_as("model.scheduler"):
        return [optimizer], [scheduler_factory(optimizer)]


def trial_step(optimizer: Optimizer, where: str) -> None:
    """Steps ``optimizer`` (on copies, zero gradients) once; a refusal is answered as ``where``."""
    with answered_as(f"{where} ({type(optimizer).__name__}, lr {optimizer.param_groups[0]['lr']:g}) at its first step"):
        optimizer.step(lambda: torch.zeros(()))  # a closure, as Lightning passes one (LBFGS needs it)


def check_param_groups(groups: list[dict[str, Any]], where: str, keys: Iterable[str] = OPTIMIZER) -> None:
    """Refuses an optimizer setting outside its rule in ``constraints.OPTIMIZER`` (an lr of 0, a momentum of 1)."""
    for i, group in enumerate(groups):
        name = where if len(groups) == 1 else f"{where} (parameter group {i})"
        for key in keys:
            value = group.get(key)
            value = value.item() if isinstance(value, torch.Tensor) else value
            if key == "lr":  # every optimizer has one
                OPTIMIZER["lr"].check(f"{name}: the learning rate", value)
            elif isinstance(value, (int, float)):
                OPTIMIZER[key].check(f"{name}: {key}", value)
            elif isinstance(value, tuple) and key == "betas":
                for j, beta in enumerate(value):
                    OPTIMIZER[key].check(f"{name}: betas[{j}]", beta)
