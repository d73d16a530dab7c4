"""The run's hyper-parameters beside its final ``val/loss``, for TensorBoard's hparams tab.

LightningCLI saves the whole config as ``config.yaml``; ``SaveConfigAndHparams`` does that too and,
at the end of ``fit``, logs the values a user tunes (the model, data and optimizer arguments, the
number of epochs, the seed) under the names of their command-line flags, with the final ``val/loss``
as the hparams tab's metric. It is logged at the step of the last validation, where the curve already
has that very value: the hparams tab finds it, and the curve gains no new point.
"""

from __future__ import annotations

from pathlib import Path

import yaml
from jsonargparse import Namespace
from lightning.pytorch import LightningModule, Trainer
from lightning.pytorch.cli import SaveConfigCallback
from lightning.pytorch.loggers import TensorBoardLogger

from linreg.checkpointing.atomic import save_atomically

# Config keys (and their subkeys) shown in the hparams tab; the rest (logger, paths) is in config.yaml.
TUNED = ("seed_everything", "trainer.max_epochs", "model", "data")


def tuned_hparams(config: Namespace) -> dict[str, bool | int | float | str]:
    """The tuned values of a fit config, flat and keyed like their flags (``data.batch_size``).

    ``init_args`` levels are dropped from the keys and a ``class_path`` becomes its class name, so
    ``model.optimizer.class_path`` gives ``model.optimizer: SGD``. Unset (None) values are left out;
    lists become strings.

    Example:
        >>> tuned_hparams(Namespace({"data.class_path": "a.B", "data.init_args.batch_size": 10, "ckpt_path": None}))
        {'data': 'B', 'data.batch_size': 10}
    """
    hparams: dict[str, bool | int | float | str] = {}
    for key, value in vars(config.clone().as_flat()).items():
        name = key.replace(".init_args", "").removesuffix(".class_path")
        tuned = any(name == k or name.startswith(k + ".") for k in TUNED)
        if value is None or not tuned or "._" in name:  # ._: LightningCLI's own bookkeeping
            continue
        if key.endswith(".class_path"):
            value = str(value).rsplit(".", 1)[-1]
        # Plain types: TensorBoard files a number of a subclass (jsonargparse's PositiveInt, ...) as text.
        plain = next((t for t in (bool, int, float, str) if isinstance(value, t)), None)
        hparams[name] = plain(value) if plain is not None else str(value)
    return hparams


class SaveConfigAndHparams(SaveConfigCallback):
    """LightningCLI's ``SaveConfigCallback`` that also logs the tuned hyper-parameters with the final ``val/loss``."""

    _val_step: int | None = None  # where the last val/loss point of the curve is

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

    def on_validation_end(self, trainer: Trainer, pl_module: LightningModule) -> None:
        if not trainer.sanity_checking:
            self._val_step = trainer.global_step

    def on_fit_end(self, trainer: Trainer, pl_module: LightningModule) -> None:
        val_loss = trainer.callback_metrics.get("val/loss")
        if trainer.logger is None or val_loss is None or self._val_step is None:
            return
        # The model's own arguments include those linked from the data module (input_dim).
        linked = {f"model.{k}": v for k, v in pl_module.hparams.items() if not k.startswith("_")}
        hparams = {**linked, **tuned_hparams(self.config)}
        # At the step of the last validation: the hparams tab reads the value, the curve gains no new point.
        trainer.logger.log_hyperparams(hparams, metrics={"val/loss": float(val_loss)}, step=self._val_step)
