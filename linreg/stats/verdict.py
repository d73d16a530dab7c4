"""The verdict on a fit: whether it reached the optimum of its objective and, if not, why and what to change.

From the report's facts, in the model's units (the gap ``F(θ) - F(θ*)`` by epoch, the Hessian's spectrum, the run's
settings), plain SGD on a quadratic objective is limited by one of: a learning rate over ``optimum.stable_lr``; the
``optimum.noise_floor`` (only averaging or smaller steps go further); or the slowest direction (more steps, or a larger
lr under the bound). Adam and the like move a coefficient by about lr per step, so the distance left says whether lr
is too small. Each remedy, added to the command that printed it, moves its run towards the optimum
(``tests/test_remedies.py``).
"""

from __future__ import annotations

import math
from dataclasses import dataclass, field
from typing import Any

import torch

from linreg.stats.optimum import stable_lr

# Reached: the objective within 0.5% of its optimum, and, where standard errors exist, every coefficient within
# 3 of them of the optimum's.
OBJECTIVE_LIMIT = 0.005
SE_LIMIT = 3.0
# At the noise floor: a gap within this many times the floor that constant-step SGD settles at.
AT_FLOOR = 3.0
# A learning rate below this fraction of the stability bound is raised to it (with the bound's margin below).
RAISE_BELOW = 0.25
MARGIN = 0.5  # a raised learning rate: half the stability bound
MAX_EPOCHS_ADVISED = 100_000
AVERAGING = "linreg.callbacks.AveragedSGD"
# With unit roundoff u, an excess over the optimum up to (10 u)² var(y) is rounding, not distance.
ROUNDING_UNITS = 10.0


@dataclass
class Remedy:
    """Settings to add, by config key (``trainer.max_epochs``), and why; ``append`` lists a callback to add."""

    settings: dict[str, Any]
    why: str
    append: list[str] = field(default_factory=list)

    def as_flags(self) -> str:
        flags = [f"--{key} {_value(v)}" for key, v in self.settings.items()]
        return " ".join(flags + [f"--trainer.callbacks+={name}" for name in self.append])

    def as_python(self) -> str:
        trainer = [f"{key.split('.')[1]}={_value(v)}" for key, v in self.settings.items() if key.startswith("trainer.")]
        parts = [f"Trainer({', '.join(trainer)})"] if trainer else []
        parts += [
            f"{key.split('.')[-1]}={_value(v)} in the model's {key.split('.')[1]}"
            for key, v in self.settings.items()
            if key.startswith("model.")
        ]
        parts += [f"{name.rsplit('.', 1)[-1]}() among the Trainer's callbacks" for name in self.append]
        return " and ".join(parts)


def _value(v: Any) -> str:
    return f"{v:.3g}" if isinstance(v, float) else str(v)


def nice(x: float, up: bool = False) -> float:
    """``x`` rounded to 1, 2 or 5 times a power of ten, down (or up).

    Example:
        >>> nice(0.37), nice(0.37, up=True), nice(7.1)
        (0.2, 0.5, 5.0)
    """
    power = 10.0 ** math.floor(math.log10(x))
    steps = [1, 2, 5, 10]
    if up:
        return next(s for s in steps if s * power >= x * (1 - 1e-12)) * power
    return max(s for s in steps if s * power <= x * (1 + 1e-12)) * power


def diagnose(report: dict[str, Any]) -> tuple[str, list[Remedy]]:
    """Why a fit that did not reach its optimum stopped where it did, and the remedies, best first."""
    est, ref, run = report["estimator"], report["reference"], report["training"]
    gap, optimum = run["gap_by_epoch"][-1], ref["value"]
    lr, momentum = est.get("lr"), est.get("momentum") or 0.0
    epochs, steps = max(run["epochs"], 1), max(run["steps"], 1)
    per_epoch = steps / epochs
    tolerance = OBJECTIVE_LIMIT * optimum if optimum > 0 else 0.0
    curvature = ref.get("curvature")
    if lr is None or lr <= 0:
        return "the optimizer has no learning rate to judge", [Remedy(_epochs(run, epochs * 2), "more steps")]
    if est["optimizer"] != "SGD" or curvature is None:
        return _other_optimizer(report, lr, epochs, steps)
    bound = stable_lr(curvature["largest"], momentum)
    raised = nice(MARGIN * bound)
    if lr >= bound:
        return (
            f"its learning rate {lr:g} is above the stability bound 2(1 + momentum)/λmax = {bound:.3g}",
            [Remedy({"model.optimizer.lr": raised}, f"a learning rate under the bound ({raised:g})")],
        )
    floor = ref["noise_floor"]
    rate = min(1.0, lr / (1 - momentum) * curvature["smallest"])  # the slowest direction's shrink per step
    if floor > 0 and gap <= AT_FLOOR * floor:
        why = (
            f"its gap to the optimum ({gap:.3g}) is at the noise floor of constant-step SGD (lr·σ²·tr(H)/(2·batch)"
            f" = {floor:.3g}): each step's noisy gradient keeps it jittering there"
        )
        smaller = "a learning rate {k:.3g} times smaller lowers the floor as much"
        return why, _settle(report, lr, epochs, "averaging the iterates removes the floor", smaller, rate * per_epoch)
    target = max(tolerance, AT_FLOOR * floor, 1e-300)
    efolds = max(math.log(max(gap, target) / target), 1.0)
    why = (
        f"it was still converging (gap to the optimum {gap:.3g}; κ = λmax/λmin = {curvature['condition']:.3g}, so the"
        f" slowest direction shrinks by about lr/(1 - momentum)·λmin = {rate:.2g} per step)"
    )
    remedies = []
    if lr < RAISE_BELOW * bound:
        faster = min(1.0, raised / (1 - momentum) * curvature["smallest"])
        needed = epochs + math.ceil(efolds / faster / per_epoch)
        settings = {"model.optimizer.lr": raised}
        if needed > epochs and faster * steps < efolds:
            settings.update(_epochs(run, min(needed, MAX_EPOCHS_ADVISED)))
        remedies.append(Remedy(settings, f"the stability bound is {bound:.3g}; steps {raised / lr:.3g} times as large"))
    needed = epochs + math.ceil(efolds / rate / per_epoch)
    more = f"about {math.ceil(efolds / rate):,} more steps"  # whole steps: 14.2 of them is no count
    remedies.append(Remedy(_epochs(run, min(needed, MAX_EPOCHS_ADVISED)), more))
    if curvature["condition"] > 1e3:
        why += f"; the condition number {curvature['condition']:.3g} is what makes plain gradient steps slow here"
    return why, remedies


def _other_optimizer(report: dict[str, Any], lr: float, epochs: int, steps: int) -> tuple[str, list[Remedy]]:
    """Adam and the like: a coefficient moves by about lr per step, whatever the gradient's size."""
    est, run = report["estimator"], report["training"]
    distance = report["distance"]  # max |θ - θ*|, the model's units
    gaps = run["gap_by_epoch"]
    converging = len(gaps) < 2 or gaps[-1] < 0.75 * gaps[-2]
    if distance > lr * steps / 4:  # a slow approach looks like a stall: the distance tells them apart
        new = nice(4 * distance / steps, up=True)
        why = f"steps of about {new:g} cover that distance in a quarter of the run"
        return (
            f"its learning rate {lr:g} is too small: {est['optimizer']} moves a coefficient by about lr per step, and"
            f" the fit is still {distance:.3g} from the optimum after {steps} steps",
            [Remedy({"model.optimizer.lr": new}, why)],
        )
    if converging:
        return "it was still converging", [Remedy(_epochs(run, epochs * 2), "twice the epochs")]
    remedies = _settle(report, lr, epochs, "averaging the iterates cancels their jitter", "smaller steps settle closer")
    return "it had stalled: the gap stopped shrinking in the last epoch", remedies


def _settle(
    report: dict[str, Any], lr: float, epochs: int, averaging: str, smaller: str, efolds_per_epoch: float = 0.0
) -> list[Remedy]:
    """For iterates that jitter around the optimum: averaging them (unless set up), then a quarter of the lr
    (``smaller`` says why, with ``{k}`` for how many times smaller).

    Steps ``k`` times smaller approach ``k`` times slower, and their floor, ``k`` times lower, lies ``ln k`` e-folds
    further (``efolds_per_epoch``: the slowest direction's at this lr, where known): ``k·(epochs + ln k / e-folds)``.
    """
    new = nice(lr / 4)
    k = lr / new
    further = math.log(k) / efolds_per_epoch if efolds_per_epoch > 0 else 0.0
    needed = min(math.ceil(k * (epochs + further)), MAX_EPOCHS_ADVISED)
    settings = {"model.optimizer.lr": new, **_epochs(report["training"], needed)}
    remedies = [] if report["estimator"]["averaging_configured"] else [Remedy({}, averaging, [AVERAGING])]
    return [*remedies, Remedy(settings, f"{smaller.format(k=k)}; {needed} epochs make up the slower approach")]


def _epochs(run: dict[str, Any], epochs: int) -> dict[str, Any]:
    """The settings that make a run last ``epochs`` epochs, whatever else would end it sooner."""
    settings: dict[str, Any] = {"trainer.max_epochs": epochs}
    if run.get("early_stopping"):  # EarlyStopping would end it before: min_epochs overrides it
        settings["trainer.min_epochs"] = epochs
    if run.get("max_steps", -1) not in (None, -1):
        settings["trainer.max_steps"] = -1
    return settings


def largest_z(rows: list[dict[str, Any]]) -> tuple[float, str] | None:
    """The largest ``|model - optimum| / SE`` over the parameter rows and its parameter; None without any."""
    z = [(abs(r["sgd_minus_ols_in_se"]), r["name"]) for r in rows if r.get("sgd_minus_ols_in_se") is not None]
    return max(z, key=lambda pair: pair[0], default=None)


def resolution(precision: str) -> float:
    """``(10 u)²``: the least excess MSE over the optimum, in units of var(y), resolved at ``precision``."""
    kind = precision.split("-")[0]  # "16-mixed" -> "16"
    dtype = {"64": torch.float64, "16": torch.float16, "bf16": torch.bfloat16}.get(kind, torch.float32)
    return (ROUNDING_UNITS * torch.finfo(dtype).eps / 2) ** 2


def verdict(report: dict[str, Any], python: bool = False) -> str:
    """Whether the model reached the optimum of its objective and, if not, why and what to change.

    Where the precision cannot resolve the verdict's margin (nearly noise-free labels, 16-bit arithmetic) the gap is
    judged against var(y) and what that precision resolves; otherwise in the objective's ratio and standard errors.
    """
    name = report["estimator"]["name"]
    if not report["trained"]:
        flags = "--trainer.max_epochs 0 or --trainer.limit_train_batches 0"
        how = "Trainer(max_epochs=0) or limit_train_batches=0" if python else flags
        return (
            f"verdict: the model was not trained (0 {name} steps, as with {how}): its weights are no estimate;"
            " the optimum is shown alone."
        )
    ref, precision = report["reference"], report["estimator"]["precision"]
    variance, finest = ref["target_variance"], resolution(precision)
    excess = report["training"]["gap_by_epoch"][-1] / variance
    # The precision resolves the noise's scale, or the gap is beyond what it resolves: judged as usual.
    if finest * variance <= OBJECTIVE_LIMIT * ref["value"] or excess > finest:
        return _verdict_in_se(report, python)
    scale = f"gap to the optimum {excess:.2g} of var(y), within the {finest:.2g} that {precision} resolves"
    if finest > resolution("32-true"):  # 16-bit arithmetic
        return (
            f"verdict: at precision {precision} the comparison with the optimum cannot resolve the difference"
            f" ({scale}); train at 32-true to judge {name}."
        )
    return (
        f"verdict: the optimum fits the training labels almost exactly (its objective is {ref['value'] / variance:.2g}"
        " of var(y): labels nearly free of noise, or no more rows than coefficients), so the objective's ratio and"
        f" standard errors say nothing; judged against var(y), {name} reached the optimum of its objective ({scale})."
    )


def _verdict_in_se(report: dict[str, Any], python: bool = False) -> str:
    """One line (or a few): reached, or why not and each remedy, as flags (or, with ``python``, arguments)."""
    name, ref, tag = report["estimator"]["name"], report["reference"], report["estimator"]["tag"]
    gap, optimum = report["training"]["gap_by_epoch"][-1], ref["value"]
    z = (largest_z(report["parameters"]) or (None,))[0]
    facts = f"objective {(optimum + gap) / optimum:.4f}x its optimum's" if optimum > 0 else f"objective gap {gap:.3g}"
    if z is not None:
        facts += f", largest |{tag}-{ref['tag']}|/SE {z:.2f}"
    # Least squares' standard errors are the scale of what the data can tell; a penalty's objective is mostly the
    # penalty, so its optimum is reached by the objective alone, and the distance in SE is told beside it.
    within = z is None or ref["kind"] != "least squares" or z <= SE_LIMIT
    target = f"the optimum of its objective, {ref['objective']} ({ref['kind']})"
    if gap <= OBJECTIVE_LIMIT * optimum and within:
        line = f"verdict: {name} reached {target}, within the noise ({facts})."
        if z is not None and z > SE_LIMIT:
            line += (
                f" Its coefficients still jitter {z:.3g} standard errors around the optimum's; averaging the"
                " iterates would settle them."
            )
        return line
    why, remedies = diagnose(report)
    lines = [f"verdict: {name} stopped short of {target} ({facts}): {why}."]
    for remedy in remedies:
        lines.append(f"  try {remedy.as_python() if python else remedy.as_flags()}  ({remedy.why})")
    return "\n".join(lines)
