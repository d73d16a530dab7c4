"""Whether a checkpoint can serve this run, checked before anything trains or is written.

Lightning restores a checkpoint piece by piece once fit has started, and a piece that does not fit ends
in a ``KeyError`` deep inside it (an SGD checkpoint resumed with Adam: ``KeyError: 'betas'``), or,
worse, in no error at all (NaN weights give NaN metrics; a model trained on standardised CSV columns
scores synthetic data in the wrong units). Each piece is checked here against this run, and a misfit
is refused in one line naming the checkpoint and what differs.
"""

from __future__ import annotations

import copy
from pathlib import Path
from typing import Any

import torch
from lightning.pytorch import LightningDataModule, LightningModule
from lightning.pytorch.utilities.migration.utils import migrate_checkpoint
from torch import Tensor

from linreg.checkpointing.runs import differences, progress, read_run_config, run_identity
from linreg.validation import UserInputError

# Optimizer settings that torch adds to param_groups whatever the optimizer, or that a scheduler adds.
_COMMON_GROUP_KEYS = {"params", "initial_lr", "lr"}


def check_resumable(
    checkpoint: dict[str, Any], path: str, model: LightningModule, datamodule: Any, resuming: bool
) -> None:
    """Raises ``UserInputError`` unless ``checkpoint`` can serve this run (``resuming``: fit continues from it).

    Checked: finite weights; the data module's saved state (the standardisation a model was trained
    with) belongs to this run's data module; and, for fit, Lightning's version and loop state, and an
    optimizer state of the optimizer this run configures.
    """
    for name, tensor in checkpoint["state_dict"].items():
        if isinstance(tensor, Tensor) and tensor.is_floating_point() and not bool(torch.isfinite(tensor).all()):
            raise UserInputError(
                f"checkpoint {path} holds NaN or infinite weights ({name}): it cannot be trained or scored from"
            )
    if isinstance(datamodule, LightningDataModule):
        _check_data_state(checkpoint, path, datamodule)
    if resuming:
        _check_training_state(checkpoint, path, model)


def _data_module_classes() -> dict[str, type]:
    """Every data module class of this project by the name Lightning files its state under."""
    from linreg.data.base import RegressionData

    found, pending = {}, [RegressionData]
    while pending:
        cls = pending.pop()
        found[cls.__qualname__] = cls
        pending.extend(cls.__subclasses__())
    return found


def _check_data_state(checkpoint: dict[str, Any], path: str, datamodule: LightningDataModule) -> None:
    ours = type(datamodule).__qualname__
    theirs = [key for key in _data_module_classes() if key in checkpoint and key != ours]
    if theirs:
        raise UserInputError(
            f"checkpoint {path} was trained on {theirs[0]} data (its transform is saved with it), and this run's"
            f" data module is {ours}: the model would see inputs in other units; use data of the same kind"
        )
    keeps_state = type(datamodule).state_dict is not LightningDataModule.state_dict
    if keeps_state and ours not in checkpoint:
        raise UserInputError(
            f"checkpoint {path} holds no {ours} state (the standardisation its model was trained with): it was"
            f" trained on other data; use a checkpoint of a {ours} fit"
        )


def _check_training_state(checkpoint: dict[str, Any], path: str, model: LightningModule) -> None:
    missing = [key for key in ("pytorch-lightning_version", "loops", "optimizer_states") if key not in checkpoint]
    if missing:
        raise UserInputError(f"checkpoint {path} lacks {', '.join(missing)}: fit cannot resume from it")
    version = checkpoint["pytorch-lightning_version"]
    try:
        # What Lightning does to it first, on a copy: upgrade a checkpoint of an older version to this one's layout.
        migrate_checkpoint(copy.deepcopy(checkpoint))
        progress(checkpoint)
    except Exception:  # any failure of that upgrade: the version or the loop state is not what it says
        raise UserInputError(
            f"checkpoint {path} holds a loop state that Lightning {version!r} does not write: fit cannot resume from it"
        ) from None
    states = checkpoint["optimizer_states"]
    factory = getattr(model, "optimizer", None)
    if not isinstance(states, list) or not all(_optimizer_state_layout(s) for s in states):
        raise UserInputError(f"checkpoint {path} holds a damaged optimizer state: fit cannot resume from it")
    if not callable(factory) or len(states) != 1:
        return
    fresh = factory(model.parameters())
    theirs = set().union(*(group.keys() for group in states[0]["param_groups"])) - _COMMON_GROUP_KEYS
    ours = set().union(*(group.keys() for group in fresh.param_groups)) - _COMMON_GROUP_KEYS
    if theirs != ours:
        raise UserInputError(
            f"checkpoint {path} was trained with another optimizer (it has {', '.join(sorted(theirs - ours))}; this"
            f" run's {type(fresh).__name__} has {', '.join(sorted(ours - theirs)) or 'fewer settings'}): resume with"
            " the optimizer it was trained with, or start afresh without --ckpt_path"
        )
    try:  # into a throwaway optimizer, as Lightning will into the run's: torch checks the state's layout
        fresh.load_state_dict(copy.deepcopy(states[0]))
    except Exception:  # whatever torch raises for a layout that is not its own
        raise UserInputError(f"checkpoint {path} holds a damaged optimizer state: fit cannot resume from it") from None


def _optimizer_state_layout(state: Any) -> bool:
    """Whether ``state`` is laid out as torch's ``Optimizer.state_dict()``: a ``state`` and a list of param groups."""
    if not isinstance(state, dict) or not isinstance(state.get("state"), dict):
        return False
    groups = state.get("param_groups")
    return isinstance(groups, list) and all(isinstance(group, dict) for group in groups)


def checkpoint_config_differences(path: Path, identity: dict[str, Any]) -> list[str]:
    """What differs between this run's identity and that of the run ``path`` belongs to, where it saved one."""
    if path.parent.name != "checkpoints":
        return []
    config = read_run_config(path.parent.parent)
    return [] if config is None else differences(run_identity(config), identity)
