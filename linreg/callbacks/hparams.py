"""The run's settings beside its final ``val/loss``, for TensorBoard's hparams tab.

The tab takes its columns from one run, so every run logs the same names (``none`` where unset), and it shows the
first five in alphabetical order, so those five hold what runs differ in. All values are text: the tab writes a
batch size of 10 as ``10.000``.
"""

from __future__ import annotations

import inspect
from enum import Enum
from pathlib import Path
from typing import Any

import yaml
from jsonargparse import Namespace, set_dumper
from lightning.pytorch import LightningModule, Trainer
from lightning.pytorch.cli import SaveConfigCallback
from lightning.pytorch.loggers import TensorBoardLogger
from torch.optim import Optimizer

from linreg.atomic_write import save_atomically


class _ConfigDumper(yaml.SafeDumper):
    """YAML's safe dumper that writes an enum as its value: Lightning's defaults hold some (``Timer``'s interval)."""


_ConfigDumper.add_multi_representer(Enum, lambda dumper, value: dumper.represent_data(value.value))
# The dumper of this project's parser mode (linreg.errors' "yaml_bounded"), for config.yaml and --print_config.
set_dumper(
    "yaml_bounded",
    lambda data: yaml.dump(data, Dumper=_ConfigDumper, default_flow_style=False, allow_unicode=True, sort_keys=False),
)

FINAL_LOSS = "val/final_loss"  # the hparams tab's metric: val/loss after the last epoch

# Optimizer arguments that choose an implementation, not the maths of a step.
_IMPLEMENTATION = {"foreach", "fused", "differentiable", "capturable"}
# One column each, after the first five (they sort after trainer.callbacks).
_TRAINER_KEYS = ("devices", "max_epochs", "max_steps", "num_nodes", "precision", "strategy")


def tuned_hparams(config: Namespace, optimizer: Optimizer) -> dict[str, str]:
    """The settings that tell runs apart, from the parsed config and the optimizer that ran (the config's: a factory).

    Example:
        >>> import torch
        >>> config = Namespace({"trainer.max_epochs": 3, "trainer.devices": 2, "trainer.accelerator": "cpu",
        ...                     "trainer.strategy": "ddp", "data.init_args.batch_size": 10,
        ...                     "trainer.callbacks": [Namespace(class_path="linreg.callbacks.AveragedSGD",
        ...                                                     init_args=Namespace(start=0.8))]})
        >>> sgd = torch.optim.SGD([torch.zeros(1, requires_grad=True)], lr=0.03, momentum=0.9)
        >>> list(tuned_hparams(config, sgd).items())[:5]  # doctest: +NORMALIZE_WHITESPACE
        [('data.batch_size', '10'), ('model.optimizer', 'SGD(lr=0.03, momentum=0.9)'), ('model.scheduler', 'none'),
         ('trainer', '3 epochs, 2 cpu, ddp'), ('trainer.callbacks', 'AveragedSGD(start=0.8)')]
    """
    model = config.get("model") or Namespace()
    arguments = model.get("init_args", model) if isinstance(model, Namespace) else Namespace()
    return {
        "data.batch_size": _described(config.get("data.init_args.batch_size", config.get("data.batch_size"))),
        "model.optimizer": _optimizer_cell(optimizer),
        "model.scheduler": _described(arguments.get("scheduler")),
        "trainer": _trainer_cell(config),
        "trainer.callbacks": ", ".join(_described(c) for c in config.get("trainer.callbacks") or []) or "none",
        **{f"trainer.{key}": _described(config.get(f"trainer.{key}")) for key in _TRAINER_KEYS},
    }


def _trainer_cell(config: Namespace) -> str:
    """``3 epochs, 2 cpu, ddp``: length of training, devices, and what differs from Lightning's defaults."""
    epochs, steps = config.get("trainer.max_epochs"), config.get("trainer.max_steps")
    parts = [f"{steps} steps" if steps not in (None, -1) else f"{epochs} epochs"]
    parts.append(f"{config.get('trainer.devices')} {config.get('trainer.accelerator')}")
    defaults = {"strategy": "auto", "num_nodes": 1, "precision": None, "accumulate_grad_batches": 1}
    for key, default in {**defaults, "gradient_clip_val": None}.items():
        value = config.get(f"trainer.{key}", default)
        if value != default:
            parts.append(_described(value) if key == "strategy" else f"{key} {value}")
    return ", ".join(parts)


def _optimizer_cell(optimizer: Optimizer) -> str:
    """``SGD(lr=0.03, momentum=0.9)``: the optimizer's class, learning rate and other non-default arguments."""
    parameters = inspect.signature(type(optimizer)).parameters.values()
    defaults = {p.name: p.default for p in parameters if p.default is not inspect.Parameter.empty}
    chosen = {
        key: value
        for key, value in optimizer.defaults.items()  # the constructor's values (a scheduler changes param_groups')
        if key == "lr" or (key not in _IMPLEMENTATION and key in defaults and defaults[key] != value)
    }
    shown = (f"{key}={value:g}" if isinstance(value, float) else f"{key}={value}" for key, value in chosen.items())
    return f"{type(optimizer).__name__}({', '.join(shown)})"


def _described(value: Any) -> str:
    """A config value as one cell: ``StepLR(step_size=1, gamma=0.5)`` for a class and its arguments, else as text."""
    if isinstance(value, Namespace) and isinstance(value.get("class_path"), str):
        arguments = vars(value.get("init_args") or Namespace())
        shown = ", ".join(f"{key}={arg}" for key, arg in arguments.items() if arg is not None)
        return f"{value.class_path.rsplit('.', 1)[-1]}({shown})"
    return "none" if value is None else str(value)


class SaveConfigAndHparams(SaveConfigCallback):
    """LightningCLI's ``SaveConfigCallback`` that also logs the run's settings with ``val/final_loss`` after fit."""

    def on_fit_start(self, trainer: Trainer, pl_module: LightningModule) -> None:
        # TensorBoardLogger writes hparams.yaml in place when it is missing; written here first, atomically, with
        # what it would write, it is whole or absent (a full disk), and the logger leaves it be.
        logger = trainer.logger
        if not isinstance(logger, TensorBoardLogger) or not trainer.is_global_zero or trainer.fast_dev_run:
            return
        hparams = {**pl_module.hparams_initial, **(trainer.datamodule.hparams_initial if trainer.datamodule else {})}
        hparams = {k: v for k, v in hparams.items() if not k.startswith("_")}  # LightningCLI's own bookkeeping
        save_atomically(
            hparams,
            Path(logger.log_dir) / logger.NAME_HPARAMS_FILE,
            lambda values, file: file.write(yaml.dump(dict(values), sort_keys=False).encode()),
        )

    def on_fit_end(self, trainer: Trainer, pl_module: LightningModule) -> None:
        val_loss = trainer.callback_metrics.get("val/loss")  # None unless the fit validated, so it had optimizers
        logger = trainer.logger
        if not isinstance(logger, TensorBoardLogger) or val_loss is None or not trainer.is_global_zero:
            return
        hparams = tuned_hparams(self.config, trainer.optimizers[0])
        logger.log_hyperparams(hparams, metrics={FINAL_LOSS: float(val_loss)}, step=trainer.global_step)
