"""What each value a user sets must be: one table, read by the constructors, the config checks and checkpoint admission.

As scikit-learn's ``_parameter_constraints``: a rule (``Interval``, ``Options``, ``ListOf``, ``AnyOf``) checks a
value, says itself in a message (``batch_size must be an integer >= 1, got 0``) or help text, and holds wherever
the value enters.
"""

from __future__ import annotations

import math
from dataclasses import dataclass
from numbers import Integral, Real
from typing import Any, Literal

from lightning.pytorch.callbacks.early_stopping import EarlyStoppingReason

from linreg.validation import UserInputError


@dataclass(frozen=True)
class Interval:
    """Integers (``Integral``) or finite numbers (``Real``) between ``left`` and ``right`` (``None``: unbounded).

    Example:
        >>> str(Interval(Real, 0, 1, closed="left"))
        'in [0, 1)'
    """

    kind: type
    left: float | None = None
    right: float | None = None
    closed: Literal["left", "right", "both", "neither"] = "both"
    hint: str = ""  # what to do instead, after the message

    def holds(self, value: Any) -> Any:
        """Whether ``value`` (a number, or each element of a tensor) is of this kind and in the interval."""
        ok: Any = True
        if hasattr(value, "isfinite"):  # a tensor: each element
            ok = value.isfinite()
        elif isinstance(value, bool) or not isinstance(value, self.kind) or not math.isfinite(value):
            return False
        if self.left is not None:
            ok = ok & ((value >= self.left) if self.closed in ("left", "both") else (value > self.left))
        if self.right is not None:
            ok = ok & ((value <= self.right) if self.closed in ("right", "both") else (value < self.right))
        return ok

    def check(self, name: str, value: Any) -> Any:
        """Returns ``value`` as a plain int or float if the rule holds; raises ``name must be <rule>, got <value>``."""
        if not self.holds(value):
            raise UserInputError(f"{name} must be {self}, got {value!r}{self.hint}")
        return self.convert(value)

    def convert(self, value: Any) -> Any:
        """``value``, which the rule holds for, as a plain int or float (numpy's scalars too)."""
        return int(value) if self.kind is Integral else float(value) if self.kind is Real else value

    def __str__(self) -> str:
        if self.left is not None and self.left == self.right:
            return f"exactly {self.left:g}"
        if self.left is None:  # no bounds (a right bound alone is not used)
            return "an integer" if self.kind is Integral else "a finite number"
        if self.kind is Integral:
            return (
                f"an integer from {self.left} to {self.right}"
                if self.right is not None
                else f"an integer >= {self.left}"
            )
        if self.right is None:
            return f"a finite number {'>=' if self.closed in ('left', 'both') else '>'} {self.left:g}"
        brackets = {"both": "[]", "left": "[)", "right": "(]", "neither": "()"}[self.closed]
        return f"in {brackets[0]}{self.left:g}, {self.right:g}{brackets[1]}"


@dataclass(frozen=True)
class Options(Interval):
    """One of a fixed set of values."""

    values: tuple[Any, ...] = ()

    def holds(self, value: Any) -> bool:
        return value in self.values

    def __str__(self) -> str:
        return f"one of {list(self.values)}"


@dataclass(frozen=True)
class ListOf(Interval):
    """A non-empty list (or tuple) of values that ``item`` holds for."""

    item: Interval = Interval(Real)

    def holds(self, value: Any) -> bool:
        return isinstance(value, (list, tuple)) and len(value) > 0 and all(bool(self.item.holds(v)) for v in value)

    def convert(self, value: Any) -> list[Any]:
        return [self.item.convert(v) for v in value]

    def __str__(self) -> str:
        return f"a non-empty list, each {self.item}"


@dataclass(frozen=True)
class AnyOf(Interval):
    """Values that one of ``rules`` holds for, converted by the first that does; ``labels`` say what each means."""

    rules: tuple[Interval, ...] = ()
    labels: tuple[str, ...] = ()

    def holds(self, value: Any) -> bool:
        return any(bool(rule.holds(value)) for rule in self.rules)

    def convert(self, value: Any) -> Any:
        return next(rule.convert(value) for rule in self.rules if rule.holds(value))

    def __str__(self) -> str:
        labels = self.labels or ("",) * len(self.rules)
        return " or ".join(
            f"{rule} ({label})" if label else str(rule) for rule, label in zip(self.rules, labels, strict=True)
        )


FINITE = Interval(Real)
POSITIVE = Interval(Real, 0, None, closed="neither")
NON_NEGATIVE = Interval(Real, 0, None, closed="left")
COUNT = Interval(Integral, 0)  # a counter in a checkpoint: any integer there that no rule names
FRACTION = Interval(Real, 0, 1, closed="both")
BELOW_ONE = Interval(Real, 0, 1, closed="left")  # a momentum or an Adam beta of 1 never forgets: SGD never settles
AT_LEAST_ONE = Interval(Integral, 1)

# lr > 0; 0 only in a checkpoint's param group that a scheduler sets (it holds initial_lr): annealed to eta_min=0.
LR = POSITIVE
SCHEDULED_LR = NON_NEGATIVE

# Torch's optimizer settings, by their name in a param group (``model.optimizer.<name>`` in the config).
OPTIMIZER = {
    "lr": LR,
    **dict.fromkeys(("momentum", "betas"), BELOW_ONE),  # betas: each of Adam's two
    **dict.fromkeys(("dampening", "rho"), FRACTION),
    **dict.fromkeys(("eps", "lr_decay", "initial_accumulator_value"), NON_NEGATIVE),
    # The optimizer's own decays the bias too, and AdamW's is no penalty of the objective at all.
    "weight_decay": Interval(
        Real,
        0,
        0,
        hint=": it would decay the bias too; give --model.weight_decay, the L2"
        " penalty of the objective on the weights alone",
    ),
}

# Every value a user sets that a rule constrains, by its config key.
CONFIG: dict[str, Interval] = {
    **{f"model.optimizer.{name}": rule for name, rule in OPTIMIZER.items()},
    "model.input_dim": AT_LEAST_ONE,
    "model.init_std": NON_NEGATIVE,
    "model.weight_decay": NON_NEGATIVE,  # the L2 penalty on the weights, the objective's own
    "model.loss.delta": POSITIVE,  # Huber's: quadratic within it, linear beyond
    "model.mini_batch_size": AT_LEAST_ONE,  # GroupedStepsRegression's rows per SGD step
    **dict.fromkeys(("data.batch_size", "data.eval_batch_size"), AT_LEAST_ONE),
    "data.seed": Interval(Integral, 0, 2**63 - 1),  # a torch.Generator's seed
    # SyntheticRegressionData's: the weights, or how many to draw at random
    "data.true_w": AnyOf(object, rules=(AT_LEAST_ONE, ListOf(object))),
    "data.true_b": FINITE,
    "data.noise_std": NON_NEGATIVE,
    "data.num_train": AT_LEAST_ONE,
    **dict.fromkeys(("data.num_val", "data.num_test"), COUNT),  # 0: no validation, no test
    # The tables': streamed or held in memory (auto: streamed past half the memory free), and the rows shuffled
    # together when streamed.
    "data.in_memory": Options(object, values=(True, False, "auto")),
    "data.shuffle_buffer": AT_LEAST_ONE,
    "data.val_fraction": NON_NEGATIVE,  # 0: every row trains, validation is off
    "data.test_fraction": NON_NEGATIVE,
    "seed_everything": Interval(Integral, 0, 2**32 - 1),  # numpy's seed range, which Lightning seeds too
    # Trainer arguments Lightning takes and fails on only once fit runs (a ZeroDivisionError); null is allowed.
    **{
        f"trainer.{k}": AT_LEAST_ONE
        for k in ("check_val_every_n_epoch", "log_every_n_steps", "accumulate_grad_batches")
    },
    "trainer.val_check_interval": POSITIVE,
    "last.every_n_train_steps": AT_LEAST_ONE,  # LastCheckpoint's
    # AveragedSGD's, a callback of trainer.callbacks (no group of its own: keyed by its class).
    "AveragedSGD.start": AnyOf(
        object, rules=(COUNT, BELOW_ONE), labels=("optimizer steps left out", "a fraction of the run left out")
    ),
}

# A checkpoint's numbers by entry, indices as []. Others: integers >= 0; numbers not NaN (finite where fresh ones are).
CHECKPOINT: dict[str, Interval] = {
    **{f"optimizer_states[].param_groups[].{name}": rule for name, rule in OPTIMIZER.items() if name != "betas"},
    "optimizer_states[].param_groups[].betas[]": OPTIMIZER["betas"],
    "optimizer_states[].param_groups[].lr": SCHEDULED_LR,  # > 0 where no scheduler sets it: see LR
    "optimizer_states[].param_groups[].initial_lr": LR,
    "optimizer_states[].state[].step": NON_NEGATIVE,
    "lr_schedulers[].base_lrs[]": LR,
    "lr_schedulers[]._last_lr[]": SCHEDULED_LR,
    "lr_schedulers[].last_epoch": Interval(Integral, -1),
    "lr_schedulers[].step_size": AT_LEAST_ONE,
    **dict.fromkeys(("datamodule.x_std", "datamodule.y_std"), POSITIVE),  # divided by when standardising
    "precision.scale": POSITIVE,  # a GradScaler's loss scale
    "loops.fit_loop.state_dict.combined_loader[].batch_size": CONFIG["data.batch_size"],
    "callbacks[].stopping_reason": Options(str, values=tuple(reason.value for reason in EarlyStoppingReason)),
}


def check(key: str, value: Any) -> Any:
    """Checks ``value`` against ``CONFIG[key]``, named as the constructor names its argument (the last part)."""
    return CONFIG[key].check(key.rsplit(".", 1)[-1], value)


def rule_key(dest: str) -> str | None:
    """The ``CONFIG`` key of a parser argument: ``data.init_args.seed`` is ``data.seed``; ``optimizer.lr``, as
    ``--model.optimizer.help CLASS`` names it, is ``model.optimizer.lr``."""
    key = dest.replace(".init_args.", ".")
    if key in CONFIG:
        return key
    found = [k for k in CONFIG if "." in key and k.endswith(f".{key}")]
    return found[0] if len(found) == 1 else None


def described(key: str | None, text: str) -> str:
    """Help ``text`` of the config ``key``, ending with its rule in ``CONFIG`` (``... step (an integer >= 1).``)."""
    rule = CONFIG.get(key or "")
    said = f"({rule}{rule.hint})" if rule is not None else ""
    if rule is None or said in text:  # once: a parser's help may be formatted more than once
        return text
    text = text.rstrip()
    return f"{text[:-1]} {said}." if text.endswith(".") else f"{text} {said}".lstrip()
