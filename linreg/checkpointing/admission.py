"""Admitting a checkpoint: everything Lightning and this run's callbacks restore from it, checked first.

Lightning restores a checkpoint piece by piece, and a piece out of range ends in a traceback (``KeyError:
'betas'``) or in no error at all (a momentum of 2). Each piece must have the form of this run's own fresh objects
(``_like``): the same keys, types and shapes, numbers in the ranges of ``constraints.CHECKPOINT``, never NaN,
finite where the fresh ones are. Special cases only where that would give a misleading line (another model).
"""

from __future__ import annotations

import copy
import math
from pathlib import Path
from typing import Any

import torch
from lightning.pytorch import LightningDataModule, LightningModule, Trainer
from lightning.pytorch.utilities.migration import migrate_checkpoint
from packaging.version import InvalidVersion, Version
from torch import Tensor
from torch.optim import Optimizer

from linreg.callbacks.averaging import AveragedSGD
from linreg.checkpointing.io import AtomicCheckpointIO
from linreg.checkpointing.runs import config_differences, progress
from linreg.constraints import CHECKPOINT, COUNT, LR
from linreg.trial import trial_optimizers, trial_step
from linreg.validation import UserInputError

# Optimizer settings that torch puts in every param group, or that a scheduler adds.
_COMMON_GROUP_KEYS = {"params", "initial_lr", "lr"}
_RESUME_ENTRIES = ["loops", "optimizer_states", "lr_schedulers", "epoch", "global_step"]


def admit(
    path: str,
    checkpoint: Any,
    subcommand: str,
    trainer: Trainer,
    model: LightningModule,
    datamodule: Any,
    identity: dict[str, Any] | None = None,
) -> dict[str, Any]:
    """Returns ``checkpoint``, migrated, if this run can restore it (handed to ``AtomicCheckpointIO``); else raises.

    Raises:
        UserInputError: ``ckpt_path <path>: <entry> must be ..., got ...``, for the first entry that does not fit.
    """
    try:
        _check(checkpoint, subcommand, trainer, model, datamodule, identity, Path(path))
    except UserInputError as error:
        raise UserInputError(f"ckpt_path {path}: {error}") from None
    if isinstance(trainer.strategy.checkpoint_io, AtomicCheckpointIO):
        trainer.strategy.checkpoint_io.admitted = (path, checkpoint)
    return checkpoint


def _check(
    checkpoint: Any, subcommand: str, trainer: Trainer, model: LightningModule, datamodule: Any,
    identity: dict[str, Any] | None, path: Path,
) -> None:  # fmt: skip
    resuming = subcommand == "fit"
    if not isinstance(checkpoint, dict) or not isinstance(checkpoint.get("state_dict"), dict):
        raise UserInputError("not a Lightning checkpoint (it holds no state_dict)")
    if resuming and "optimizer_states" not in checkpoint and "loops" not in checkpoint:
        raise UserInputError("holds the weights only (save_weights_only); fit cannot resume from it")
    needed = ["pytorch-lightning_version", *(_RESUME_ENTRIES if resuming else [])]
    missing = [key for key in needed if key not in checkpoint]
    if missing:
        consequence = "fit cannot resume from it" if resuming else "Lightning cannot restore it"
        raise UserInputError(f"lacks {', '.join(missing)}: {consequence}")
    version = checkpoint["pytorch-lightning_version"]
    try:
        Version(version)
    except (InvalidVersion, TypeError):
        raise UserInputError(f"pytorch-lightning_version must be a version such as '2.5.0', got {version!r}") from None
    try:  # upgraded in place to this Lightning's layout, as Lightning will
        migrate_checkpoint(checkpoint)
    except Exception:  # any failure of an upgrade step: the layout is not what that version wrote
        raise UserInputError(f"holds a layout that Lightning {version} does not write") from None
    for entry in ("state_dict", "current_model_state"):  # the latter: the SGD iterate beside AveragedSGD's average
        if entry in checkpoint:
            _check_weights(checkpoint[entry], entry, model, checkpoint)
    if resuming and identity is not None and (changed := config_differences(path, identity)):
        raise UserInputError(
            f"belongs to a run with other settings ({'; '.join(changed)}); resuming would mix two"
            " configurations: resume it with its own settings, or start afresh without --ckpt_path"
        )
    if isinstance(datamodule, LightningDataModule):
        _check_data_state(checkpoint, datamodule)
    if checkpoint.get("loops") is not None:
        name = f"{subcommand}_loop"  # Lightning files each subcommand's loop state so
        _like(checkpoint["loops"], {name: getattr(trainer, name).state_dict()}, "loops", "loops", partial=True)
    if resuming:
        progress(checkpoint)  # the counters, as the run lookup reads them
        positions = checkpoint["loops"]["fit_loop"]["state_dict"].get("combined_loader", [])
        entry = "loops.fit_loop.state_dict.combined_loader"
        if not isinstance(positions, list) or len(positions) > 1:
            raise UserInputError(f"{entry} must be a list of at most one loader's position, got {positions!r:.80}")
        for position in positions:  # where in its epoch the training loader was
            _like(position, {"epoch": None, "batches_done": 0, "batch_size": 1}, f"{entry}[0]", f"{entry}[]")
            if position["epoch"] is not None:
                _like(position["epoch"], 0, f"{entry}[0].epoch", "")
        _check_training_state(checkpoint, model)
    _check_callbacks(checkpoint, trainer, model)
    precision = type(trainer.precision_plugin).__qualname__
    if precision in checkpoint:
        _like(checkpoint[precision], trainer.precision_plugin.state_dict(), precision, "precision")


def _check_weights(weights: Any, entry: str, model: LightningModule, checkpoint: dict[str, Any]) -> None:
    """Weights with the model's names, shapes and dtypes, dense, real and finite."""
    ours = model.state_dict()
    if not isinstance(weights, dict) or weights.keys() != ours.keys():
        theirs = set(weights) if isinstance(weights, dict) else set()
        raise UserInputError(
            f"was written by another kind of model ({entry} lacks {sorted(ours.keys() - theirs)}, has"
            f" {sorted(map(str, theirs - ours.keys()))} besides)"
        )
    for key, tensor in ours.items():
        value = weights[key]
        if isinstance(value, Tensor) and value.shape != tensor.shape:  # the hyper-parameters that explain it
            saved = checkpoint.get("hyper_parameters")
            saved = saved if isinstance(saved, dict) else {}
            why = [f"{k} {saved[k]!r} there, {v!r} here" for k, v in model.hparams.items() if saved.get(k, v) != v]
            raise UserInputError(
                f"does not fit this model: {key} has shape {list(value.shape)} there, {list(tensor.shape)} here"
                + (f" ({'; '.join(why)})" if why else "")
            )
        _like(value, tensor, _at(entry, key), f"{entry}.{key}")


def _check_data_state(checkpoint: dict[str, Any], datamodule: LightningDataModule) -> None:
    """The state of a data module of this run's kind, told by the state it keeps (re-filed under our class name)."""
    from linreg.data.base import RegressionData

    ours, kinds, pending = type(datamodule), {}, [RegressionData]
    while pending:  # every data module class, by the name Lightning files its state under
        cls = pending.pop()
        kinds[cls.__qualname__] = cls
        pending.extend(cls.__subclasses__())
    saved = [key for key in kinds if key in checkpoint]
    other = [key for key in saved if kinds[key].state_dict is not ours.state_dict]
    if other:
        raise UserInputError(
            f"was trained on {other[0]} data (its transform is saved with it), and this run's data module is"
            f" {ours.__qualname__}: the model would see inputs in other units; use data of the same kind"
        )
    if ours.state_dict is LightningDataModule.state_dict:
        return
    if not saved:
        raise UserInputError(
            f"holds no {ours.__qualname__} state (the standardisation its model was trained with): it was"
            f" trained on other data; use a checkpoint of a {ours.__qualname__} fit"
        )
    state = checkpoint[ours.__qualname__] = checkpoint.pop(saved[0])
    names = (datamodule.target_name, datamodule.feature_names)  # type: ignore[attr-defined]
    theirs = (state.get("target"), state.get("features")) if isinstance(state, dict) else (None, None)
    if theirs != names:
        raise UserInputError(
            f"was trained to predict {theirs[0]!r} from {theirs[1]}; this run asks for {names[0]!r} from {names[1]}"
        )
    d, seed = len(names[1]), datamodule.seed  # type: ignore[attr-defined]
    example = {"target": "", "features": [""] * d, "y_mean": 0.0, "y_std": 1.0}
    example |= {"x_mean": torch.zeros(d, dtype=torch.float64), "x_std": torch.ones(d, dtype=torch.float64)}
    example |= {"seed": 0} if "seed" in state else {}  # a table's split seed (checkpoints since it was saved)
    _like(state, example, ours.__qualname__, "datamodule")
    if state.get("seed", seed) != seed:
        raise UserInputError(
            f"was trained with data.seed {state['seed']}, which drew its training, validation and test rows; this"
            f" run gives data.seed {seed}, whose held-out rows include training rows: give --data.seed {state['seed']}"
        )


def _check_training_state(checkpoint: dict[str, Any], model: LightningModule) -> None:
    """Optimizer and scheduler states of the optimizer and schedulers this run configures, in range."""
    configured = trial_optimizers(model)
    if configured is None:
        return
    optimizers, schedulers = configured
    for key, fresh in (("optimizer_states", optimizers), ("lr_schedulers", schedulers)):
        states = checkpoint[key]
        if not isinstance(states, list) or len(states) != len(fresh):
            kinds = ", ".join(type(o).__name__ for o in fresh) or "none"
            raise UserInputError(f"{key} must hold {len(fresh)} states (this run's: {kinds}), got {states!r:.80}")
    for i, (state, optimizer) in enumerate(zip(checkpoint["optimizer_states"], optimizers, strict=True)):
        _check_optimizer_state(state, optimizer, f"optimizer_states[{i}]")
        # Its settings stepped as the config's are (on copies of the weights): both refuse the same values.
        optimizer.load_state_dict(copy.deepcopy(state))
        trial_step(optimizer, f"optimizer_states[{i}]")
    for i, (state, scheduler) in enumerate(zip(checkpoint["lr_schedulers"], schedulers, strict=True)):
        _like(state, scheduler.state_dict(), f"lr_schedulers[{i}]", "lr_schedulers[]")


def _check_optimizer_state(state: Any, optimizer: Optimizer, entry: str) -> None:
    fresh = optimizer.state_dict()
    groups = state.get("param_groups") if isinstance(state, dict) else None
    if (
        not isinstance(groups, list)
        or len(groups) != len(fresh["param_groups"])
        or not all(isinstance(group, dict) for group in groups)
        or not isinstance(state.get("state"), dict)
    ):
        raise UserInputError(
            f"{entry} must be the state_dict of an optimizer of {len(fresh['param_groups'])} param groups, got"
            f" {state!r:.80}"
        )
    for i, (group, ours) in enumerate(zip(groups, fresh["param_groups"], strict=True)):
        theirs_keys, our_keys = set(group) - _COMMON_GROUP_KEYS, set(ours) - _COMMON_GROUP_KEYS
        if theirs_keys != our_keys:
            raise UserInputError(
                f"was trained with another optimizer (it has {', '.join(sorted(map(str, theirs_keys - our_keys)))};"
                f" this run's {type(optimizer).__name__} has {', '.join(sorted(our_keys - theirs_keys)) or 'fewer'}):"
                " resume with the optimizer it was trained with, or start afresh without --ckpt_path"
            )
        example = {**ours, "initial_lr": ours["lr"]} if "initial_lr" in group else ours
        _like(group, example, f"{entry}.param_groups[{i}]", "optimizer_states[].param_groups[]")
        if "initial_lr" not in group:  # no scheduler sets it: 0 would train nothing
            LR.check(f"{entry}.param_groups[{i}].lr", group["lr"])
    ids = [p for group in groups for p in group["params"]]
    if len(set(ids)) != len(ids):
        raise UserInputError(f"{entry}.param_groups list a parameter twice: {ids}")
    # The per-parameter state of this run's optimizer after a step, where it took one: same keys, shapes, ranges.
    examples = dict(zip(ids, fresh["state"].values(), strict=True)) if len(fresh["state"]) == len(ids) else {}
    for key, values in state["state"].items():
        if key not in ids:
            raise UserInputError(f"{entry}.state[{key!r}] belongs to no parameter of its param_groups ({ids})")
        _like(values, examples.get(key), f"{entry}.state[{key!r}]", "optimizer_states[].state[]")


def _check_callbacks(checkpoint: dict[str, Any], trainer: Trainer, model: LightningModule) -> None:
    """The saved states of this run's callbacks, each of the form of the callback's own fresh state."""
    states = checkpoint.get("callbacks")
    if states is None:
        return
    if not isinstance(states, dict) or not all(isinstance(s, dict) for s in states.values()):
        raise UserInputError(f"callbacks must be a dict of dicts (one state per callback), got {states!r:.80}")
    for callback in trainer.callbacks:  # type: ignore[attr-defined]
        state = states.get(callback.state_key)
        if not state:  # Lightning restores non-empty states only
            continue
        entry = _at("callbacks", callback.state_key)
        _like(state, callback.state_dict(), entry, "callbacks[]")
        if isinstance(callback, AveragedSGD) and state["averaged"]:
            if "current_model_state" not in checkpoint:
                raise UserInputError(f"{entry}.averaged is {state['averaged']}, and there is no current_model_state")
            shapes = [list(p.shape) for p in model.parameters()]
            if [list(t.shape) for t in state["total"]] != shapes:  # the sum of the iterates: one per parameter
                raise UserInputError(f"{entry}.total must hold tensors of shapes {shapes}, got {state['total']!r:.80}")


def _at(entry: str, key: Any) -> str:
    """``entry.key``, or ``entry['a.b']`` for a key that is not a name."""
    return f"{entry}.{key}" if isinstance(key, str) and key.isidentifier() else f"{entry}[{key!r}]"


def _like(value: Any, example: Any, entry: str, key: str, partial: bool = False) -> None:
    """Raises unless ``value`` has the form of ``example`` (None: any plain value), its entry in a fresh state.

    ``key``: the entry with indices as ``[]``, as ``constraints.CHECKPOINT`` names it; ``partial``: more keys allowed.
    """
    if example is None:
        if value is None or isinstance(value, (bool, str)):
            return
        if isinstance(value, (int, float)):
            return _number(value, entry, "", integral=False, finite=False)
        if isinstance(value, Tensor):
            return _tensor(value, entry, "", None)
        if not isinstance(value, (dict, list, tuple)):
            raise UserInputError(f"{entry} must be a plain value (number, string, tensor), got {type(value).__name__}")
        example, key = {} if isinstance(value, dict) else [], ""
    if isinstance(example, (bool, str)):
        if not isinstance(value, type(example)):
            kind = "true or false" if isinstance(example, bool) else "a string"
            raise UserInputError(f"{entry} must be {kind}, got {value!r:.80}")
    elif isinstance(example, (int, float)):
        _number(value, entry, key, integral=isinstance(example, int), finite=math.isfinite(example))
    elif isinstance(example, Tensor):
        _tensor(value, entry, key, example)
    elif isinstance(example, dict):
        if not isinstance(value, dict):
            raise UserInputError(f"{entry} must be a dict, got {value!r:.80}")
        if example and (example.keys() - value.keys() or (not partial and value.keys() - example.keys())):
            raise UserInputError(f"{entry} must hold {sorted(map(str, example))}, got {sorted(map(str, value))}")
        for k in example or value:
            sub = f"{key}.{k}" if isinstance(k, str) else f"{key}[]"
            _like(value[k], example.get(k), _at(entry, k), sub)
    elif isinstance(example, (list, tuple)):
        if not isinstance(value, (list, tuple)) or (example and len(value) != len(example)):
            raise UserInputError(f"{entry} must be a list of {len(example)} values, got {value!r:.80}")
        for i, item in enumerate(value):
            _like(item, example[i] if example else None, f"{entry}[{i}]", f"{key}[]")


def _number(value: Any, entry: str, key: str, integral: bool, finite: bool) -> None:
    if isinstance(value, bool) or not isinstance(value, int if integral else (int, float)):
        raise UserInputError(f"{entry} must be {'an integer' if integral else 'a number'}, got {value!r:.80}")
    if math.isnan(value) or (finite and math.isinf(value)):
        raise UserInputError(f"{entry} must be a finite number, got {value!r}")
    rule = CHECKPOINT.get(key) or (COUNT if integral else None)
    if rule is not None:
        rule.check(entry, value)


def _tensor(value: Any, entry: str, key: str, example: Tensor | None) -> None:
    """A dense real tensor, shaped and typed as ``example``; finite where ``example`` is, in ``key``'s range."""
    if not isinstance(value, Tensor):
        raise UserInputError(f"{entry} must be a tensor, got {value!r:.80}")
    if value.layout != torch.strided:
        raise UserInputError(f"{entry} must be a dense tensor, got a {value.layout} one")
    if value.is_complex():
        raise UserInputError(f"{entry} must hold real numbers, got {value.dtype}")
    if example is not None and value.is_floating_point() != example.is_floating_point():
        wanted = "floating-point" if example.is_floating_point() else "integer"
        raise UserInputError(f"{entry} must be a {wanted} tensor, got {value.dtype}")
    if example is not None and value.shape != example.shape:
        raise UserInputError(f"{entry} must have shape {list(example.shape)}, got {list(value.shape)}")
    if not value.is_floating_point():
        return
    finite = example is not None and bool(torch.isfinite(example).all())
    rule = CHECKPOINT.get(key)
    good = torch.isfinite(value) if finite else ~torch.isnan(value)
    if rule is not None:
        good &= rule.holds(value)
    if not bool(good.all()):
        where = torch.nonzero(~good)[0].tolist()
        rule = f"values, each {rule}" if rule is not None else "finite numbers" if finite else "numbers other than NaN"
        raise UserInputError(
            f"{entry} must hold {rule}, got {value[tuple(where)].item()}" + (f" at {where}" if where else "")
        )
