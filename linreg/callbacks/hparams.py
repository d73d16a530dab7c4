"""The run's hyper-parameters beside its final ``val/loss``, for TensorBoard's hparams tab.

LightningCLI saves the whole config as ``config.yaml``; ``SaveConfigAndHparams`` does that too and,
at the end of ``fit``, logs the training choices a user tunes, under the names of their command-line
flags, with the final ``val/loss`` as the hparams tab's metric (``val/final_loss``): the optimizer, its
learning rate, the batch size and the number of epochs always, and every other argument of the model
and the optimizer that differs from its default (``torch.optim.SGD``'s ``dampening`` or ``nesterov`` only when set).
What the data are (their size, the true weights, the file) is in ``config.yaml``, not here.

The tab shows the first five names in alphabetical order until more are ticked, which the four that
are always there leave room for; it writes every number with five significant digits (a batch size
of 10 reads ``10.000``), so whole numbers are logged as the text they were given as. Other numbers stay
numbers, for the tab's plots.
"""

from __future__ import annotations

import importlib
import inspect
from pathlib import Path
from typing import Any

import yaml
from jsonargparse import Namespace
from lightning.pytorch import LightningModule, Trainer
from lightning.pytorch.cli import SaveConfigCallback
from lightning.pytorch.loggers import TensorBoardLogger

from linreg.checkpointing.atomic import save_atomically

HParam = bool | float | str
FINAL_LOSS = "val/final_loss"  # the hparams tab's metric: val/loss after the last epoch


def tuned_hparams(config: Namespace, model_class: type) -> dict[str, HParam]:
    """The training choices of a fit config, keyed like their flags (``data.batch_size``), whole numbers as text.

    Example:
        >>> config = Namespace({"trainer.max_epochs": 3, "data.init_args.batch_size": 10, "data.init_args.seed": 1,
        ...                     "model.optimizer.class_path": "torch.optim.SGD", "model.optimizer.init_args.lr": 0.1,
        ...                     "model.optimizer.init_args.momentum": 0.0, "model.optimizer.init_args.nesterov": True})
        >>> tuned_hparams(config, object)
        {'model.optimizer': 'SGD', 'model.optimizer.lr': 0.1, 'model.optimizer.nesterov': True, \
'data.batch_size': '10', 'trainer.max_epochs': '3'}
    """
    hparams: dict[str, HParam] = {}
    _add_arguments(config.get("model"), "model", model_class, hparams)
    hparams["data.batch_size"] = _typed(config.get("data.init_args.batch_size", config.get("data.batch_size")))
    hparams["trainer.max_epochs"] = _typed(config.get("trainer.max_epochs"))
    return {name: value for name, value in hparams.items() if value is not None}


def _add_arguments(node: Any, prefix: str, cls: type | None, hparams: dict[str, HParam]) -> None:
    """Adds to ``hparams`` the class under ``node`` (a config section) and its arguments that are not defaults."""
    if isinstance(node, Namespace) and isinstance(node.get("class_path"), str):
        module, name = node.class_path.rsplit(".", 1)
        cls = getattr(importlib.import_module(module), name)  # imported already, to build the run
        if "." in prefix:  # the optimizer's class is a choice; the model's (a faster variant) is in config.yaml
            hparams[prefix] = name
        node = node.get("init_args") or Namespace()
    if not isinstance(node, Namespace):
        if node is not None:  # a function as the value: the model's default optimizer, the book's SGD
            hparams[prefix] = getattr(node, "__name__", str(node))
        return
    defaults = _defaults(cls)
    for key, value in vars(node).items():
        name = f"{prefix}.{key}"
        if isinstance(value, Namespace):
            _add_arguments(value, name, None, hparams)
        elif value is not None and (key == "lr" or key not in defaults or defaults[key] != value):
            hparams[name] = _typed(value)


def _defaults(cls: type | None) -> dict[str, Any]:
    """The default values of ``cls``'s constructor arguments."""
    if cls is None:
        return {}
    parameters = inspect.signature(cls).parameters.values()
    return {p.name: p.default for p in parameters if p.default is not inspect.Parameter.empty}


def _typed(value: Any) -> HParam | None:
    """Whole numbers as text (``10``, not ``10.000``); lists as text; other plain values as they are."""
    if isinstance(value, int) and not isinstance(value, bool):
        return str(value)
    return value if value is None or isinstance(value, (bool, float, str)) else str(value)


class SaveConfigAndHparams(SaveConfigCallback):
    """LightningCLI's ``SaveConfigCallback`` that also logs the tuned hyper-parameters with the final validation loss.

    The metric is ``val/final_loss``, one point: the tab reads a metric off its curve, and a point of
    ``val/loss`` itself would have to sit exactly on the curve's last step, which depends on how the
    steps are counted.
    """

    def on_fit_start(self, trainer: Trainer, pl_module: LightningModule) -> None:
        # TensorBoardLogger writes hparams.yaml once, when it is missing, in place: a disk that fills would leave half
        # of it. Written here first (just before, with what it would write, as it does: yaml.dump), atomically, it is
        # whole or absent, and the logger leaves it be.
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
        val_loss = trainer.callback_metrics.get("val/loss")
        if trainer.logger is None or val_loss is None:
            return
        hparams = tuned_hparams(self.config, type(pl_module))
        trainer.logger.log_hyperparams(hparams, metrics={FINAL_LOSS: float(val_loss)}, step=trainer.global_step)
