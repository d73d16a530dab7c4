"""Checks of the command line and config that no single class can make, each before anything is written.

Only what needs the whole config or the built objects together (the optimizer with the model's parameters, the
scheduler with the optimizer, the precision with the device); the rest is checked by types and constructors.
"""

from __future__ import annotations

import os
import sys
from argparse import ArgumentError
from collections.abc import Callable
from typing import Any

import torch
import yaml
from jsonargparse import ActionConfigFile, Namespace
from lightning.fabric.plugins.environments import LightningEnvironment
from lightning.pytorch import Callback, LightningModule, Trainer
from lightning.pytorch.callbacks import EarlyStopping, LearningRateFinder, ModelCheckpoint
from lightning.pytorch.utilities.parsing import lightning_hasattr

from linreg.callbacks.recovery import FULL_LOSS, OBJECTIVE_GAP
from linreg.checkpointing.io import refuse_unsafe_loading
from linreg.checkpointing.runs import refuse_remote_run_dir
from linreg.constraints import CONFIG
from linreg.errors import causes
from linreg.trial import answered_as, check_param_groups, trial_optimizers
from linreg.validation import UserInputError, check_regular_file, usable_cores

# A config is a few kilobytes; a larger file is no config, and jsonargparse would read it whole.
MAX_CONFIG_BYTES = 1 << 24


class CheckedConfigFile(ActionConfigFile):
    """``--config``: a regular file of at most ``MAX_CONFIG_BYTES``; a YAML error names the file, line and column."""

    def __call__(self, parser: Any, cfg: Any, values: Any, option_string: str | None = None) -> None:
        status = check_regular_file(values, "--config", missing_ok=True) if isinstance(values, str) else None
        if status is not None and status.st_size > MAX_CONFIG_BYTES:
            raise UserInputError(f"--config: {values}: {status.st_size} bytes, more than a config's {MAX_CONFIG_BYTES}")
        exits, parser.exit_on_error = parser.exit_on_error, False  # its errors come back here, to be named
        try:
            super().__call__(parser, cfg, values, option_string)
        except (ArgumentError, TypeError, ValueError) as error:
            cause = next((e for e in causes(error) if isinstance(e, (yaml.YAMLError, UnicodeDecodeError))), None)
            if isinstance(cause, UnicodeDecodeError):
                raise UserInputError(
                    f"--config: {values} is not a text file (byte {cause.start} is not UTF-8)"
                ) from None
            if cause is None:
                raise
            mark = getattr(cause, "problem_mark", None)
            where = f"line {mark.line + 1}, column {mark.column + 1}: " if mark is not None else ""
            problem = getattr(cause, "problem", None) or " ".join(str(cause).split())
            raise UserInputError(f"{values}: not valid YAML: {where}{problem}") from None
        finally:
            parser.exit_on_error = exits


_OPTIMIZER_KEYS = ("--model.optimizer", "--model.init_args.optimizer")


def check_optimizer_has_lr(argv: list[str]) -> None:
    """Refuses an optimizer class named on the command line without its learning rate.

    jsonargparse keeps the config optimizer's arguments that the new class takes: ``--model.optimizer Adam`` alone
    would train Adam with SGD's 0.03. Reads the arguments as given: the parsed config does not say which values
    carried over, and jsonargparse has no public hook on a class_path change.
    """
    named, has_lr = None, False
    for i, arg in enumerate(argv):
        key, equals, value = arg.partition("=")
        if key in _OPTIMIZER_KEYS:
            value = value if equals else (argv[i + 1] if i + 1 < len(argv) else "")
            named = None if value.lstrip().startswith(("{", "class_path")) else value  # a mapping states its own
        has_lr |= key in {f"{prefix}{sub}.lr" for prefix in _OPTIMIZER_KEYS for sub in ("", ".init_args")}
    if named and not has_lr:
        raise UserInputError(
            f"model.optimizer {named} was given without its learning rate; give --model.optimizer.lr too"
            " (a learning rate suits one optimizer, and the config's was chosen for its own)"
        )


def check_config_values(config: Namespace) -> None:
    """Checks what the parser accepts but the code cannot use: the groups' shapes, the seed, trainer limits."""
    for group in ("model", "data", "trainer"):
        value = config.get(group)
        if value is not None and not isinstance(value, Namespace):
            raise UserInputError(f"{group}: expected a mapping of its arguments, got {type(value).__name__} {value!r}")
    # The table's rules for what goes to Lightning, not to a constructor of ours. Null takes Lightning's default;
    # a seed of true or false is drawn at random or not set.
    for key, rule in CONFIG.items():
        value = config.get(key) if key.startswith(("trainer.", "seed_everything")) else None
        if isinstance(value, (int, float)) and not (key == "seed_everything" and isinstance(value, bool)):
            rule.check(key, value)
    refuse_remote_run_dir(config.get("trainer") or Namespace())
    refuse_unsafe_loading(config.get("weights_only"))
    if config.get("ckpt_path") == "best":
        raise UserInputError(
            "ckpt_path 'best' names the best checkpoint of a fit in the same process, and this one has none;"
            " give the file (runs/<name>/version_N/checkpoints/best-*.ckpt) or 'last'"
        )
    if config.get("checkpoint") is not None and config.checkpoint.get("save_last"):
        raise UserInputError(
            f"checkpoint.save_last must stay false, got {config.checkpoint.save_last!r}:"
            " last.ckpt is written by the `last` group (every last.every_n_train_steps steps and each epoch)"
        )


def without_event_files(logger: Any) -> Any:
    """A TensorBoardLogger's config as a CSVLogger's in its place: TensorBoard would list an evaluation as a run."""
    if not (isinstance(logger, Namespace) and str(logger.get("class_path")).endswith("TensorBoardLogger")):
        return logger
    given = logger.get("init_args") or Namespace()
    kept = {key: given.get(key) for key in ("save_dir", "name", "prefix") if key in given}
    # A new version_N, also when the config is a fit's config.yaml, which names the fit's own version.
    return Namespace(class_path="lightning.pytorch.loggers.CSVLogger", init_args=Namespace(**kept, version=None))


# The metrics the model and the default callbacks log besides the validation metrics: what a monitor may name.
LOGGED = ("train/loss", FULL_LOSS, OBJECTIVE_GAP, "convergence/log10_loss_val")


def check_trainer(trainer: Trainer, precision: Any) -> None:
    """Refuses what the device cannot honour: too many CPU processes, unfindable machines, a missing backend, a
    precision Lightning would silently replace (``16-mixed`` on the CPU becomes ``bf16-mixed``)."""
    device = trainer.strategy.root_device.type
    cores = usable_cores()
    if device == "cpu" and trainer.num_devices > cores:
        raise UserInputError(
            f"trainer.devices: {trainer.num_devices} processes on the CPU, and this machine can run {cores} at once;"
            f" give at most {cores}"
        )
    environment = getattr(trainer.strategy, "cluster_environment", None)
    if (
        trainer.num_nodes > 1
        and isinstance(environment, LightningEnvironment)
        and not {"MASTER_ADDR", "NODE_RANK"} & set(os.environ)
    ):
        raise UserInputError(
            f"trainer.num_nodes {trainer.num_nodes}: neither MASTER_ADDR nor NODE_RANK is set, so this process would"
            " wait for the other machines forever; set MASTER_ADDR, MASTER_PORT and NODE_RANK on each machine, or"
            " launch through torchrun or SLURM"
        )
    backend = getattr(trainer.strategy, "process_group_backend", None)
    if isinstance(backend, str) and (
        not torch.distributed.is_available()
        or not torch.distributed.is_backend_available(backend)
        or (backend == "nccl" and device != "cuda")
    ):
        raise UserInputError(f"trainer.strategy: process_group_backend {backend!r} cannot run on this {device}")
    # Lightning resolves a short name by a suffix (16 -> 16-mixed); a replacement changes the name's start.
    if precision is not None and not trainer.precision.startswith(str(precision)):
        raise UserInputError(
            f"trainer.precision {precision!r} is not supported on the {device} (Lightning would train in"
            f" {trainer.precision}); give {trainer.precision} if that is what you want"
        )


def check_training_setup(model: Any, epochs: int | None) -> None:
    """Steps the model's optimizer once and its scheduler through the run's epochs: a refusal, or a learning rate
    that turns negative or not finite, is answered now as ``model.optimizer`` or ``model.scheduler``."""
    trial = trial_optimizers(model)
    if trial is None or not trial[1]:
        return
    (optimizer,), (scheduler,) = trial
    with answered_as(f"model.scheduler ({type(scheduler).__name__}) when stepped"):
        for epoch in range(min(epochs if epochs is not None and epochs >= 0 else 1000, 10_000)):
            optimizer.step(lambda: torch.zeros(()))
            scheduler.step()
            check_param_groups(optimizer.param_groups, f"model.scheduler at epoch {epoch + 1}", ("lr",))


class CheckBeforeTraining(Callback):
    """Checks before the first batch what needs the data or all callbacks (Lightning would fail only mid-run).

    An integer ``val_check_interval`` beyond an epoch's batches, a ``monitor`` naming no logged metric. Without
    validation it says so, and EarlyStopping and ModelCheckpoint on a validation metric stay idle. ``key_of``: a
    callback's config key (``trainer.callbacks[0]``), for messages.
    """

    def __init__(self, key_of: Callable[[Callback], str]) -> None:
        self.key_of = key_of

    def setup(self, trainer: Trainer, pl_module: LightningModule, stage: str) -> None:
        # Before Lightning's tuner callbacks, which it runs first at on_fit_start: the learning-rate finder sets a
        # model attribute `lr` or `learning_rate`; this model's rate is its optimizer's (model.optimizer.lr).
        for callback in trainer.callbacks:
            if isinstance(callback, LearningRateFinder) and not any(
                lightning_hasattr(pl_module, name) for name in ("lr", "learning_rate")
            ):
                raise UserInputError(
                    f"{self.key_of(callback)}: LearningRateFinder sets a model attribute lr or learning_rate, which"
                    f" {type(pl_module).__name__} does not have: its learning rate is model.optimizer.lr"
                )

    def on_fit_start(self, trainer: Trainer, pl_module: LightningModule) -> None:
        interval = trainer.val_check_interval
        if isinstance(interval, int) and trainer.check_val_every_n_epoch is not None and trainer.datamodule:
            batches = len(trainer.datamodule.train_dataloader())
            if isinstance(trainer.limit_train_batches, int):
                batches = min(batches, trainer.limit_train_batches)
            if interval > batches:
                raise UserInputError(
                    f"trainer.val_check_interval must be at most the {batches} training batches of an epoch, got"
                    f" {interval} (or set trainer.check_val_every_n_epoch to null to count batches across epochs)"
                )
        data, off = trainer.datamodule, None  # off: why the fit will not validate
        if trainer.limit_val_batches == 0:
            off = "trainer.limit_val_batches is 0"
        elif hasattr(data, "split_chunks") and data.split_chunks("val") is None:
            off = "the data have no validation rows"
        validated = {*getattr(pl_module, "val_metrics", {}).keys(), "convergence/log10_loss_val"}
        logged, idle = {*validated, *LOGGED, "epoch", "step"}, []
        for callback in trainer.callbacks:
            monitor = getattr(callback, "monitor", None)
            if off and monitor in validated and isinstance(callback, (EarlyStopping, ModelCheckpoint)):
                # Nothing to monitor: it stays idle (Lightning's EarlyStopping would fail at the first epoch's end).
                if isinstance(callback, EarlyStopping):
                    callback.strict = callback.verbose = False
                else:
                    callback.save_top_k = 0
                idle.append(f"{self.key_of(callback)} ({type(callback).__name__} on {monitor})")
            elif isinstance(monitor, str) and monitor not in logged:
                raise UserInputError(
                    f"{self.key_of(callback)}.monitor: {monitor!r} is not a metric this run logs;"
                    f" it logs {', '.join(sorted(logged - {'epoch', 'step'}))}"
                )
        if off:
            trainer.limit_val_batches = 0  # Lightning's switch: no empty loader built, no warning that it is empty
        if off and trainer.is_global_zero:
            idle_ones = f": {', '.join(idle)} have nothing to monitor" if idle else ""
            print(f"validation is off ({off}){idle_ones}", file=sys.stderr, flush=True)
