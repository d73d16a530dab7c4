"""The command line: ``LightningCLI`` joining the data module and the model.

``python -m linreg fit --config configs/d2l.yaml``; subcommands fit, validate, test and predict.

Beyond Lightning's defaults: checkpoints are written atomically and loaded weights-only
(``AtomicCheckpointIO``, added unless ``trainer.plugins`` names another CheckpointIO), ``last.ckpt`` is
kept current every ``last.every_n_train_steps`` steps, ``--ckpt_path last`` finds the newest one among
earlier runs of the config, and a checkpoint is checked against the model before anything is written.
"""

from __future__ import annotations

import sys
from pathlib import Path
from typing import Any

from jsonargparse import Namespace
from lightning.fabric.plugins import CheckpointIO
from lightning.fabric.utilities.exceptions import MisconfigurationException
from lightning.pytorch import Callback, Trainer
from lightning.pytorch.callbacks import ModelCheckpoint
from lightning.pytorch.cli import ArgsType, LightningArgumentParser, LightningCLI
from lightning.pytorch.utilities import rank_zero_only

from linreg.callbacks.dashboard import Dashboard
from linreg.callbacks.divergence import DivergenceGuard
from linreg.callbacks.hparams import SaveConfigAndHparams
from linreg.callbacks.plots import FitPlots
from linreg.callbacks.predictions import PredictionWriter
from linreg.callbacks.progress import ConsoleProgress, quiet_lightning
from linreg.callbacks.recovery import ParameterRecovery
from linreg.callbacks.report import FitReport
from linreg.checkpointing.io import AtomicCheckpointIO, load_safely
from linreg.checkpointing.resume import (
    LastCheckpoint,
    check_checkpoint_fits,
    check_lightning_checkpoint,
    find_last_checkpoint,
)
from linreg.data import RegressionData
from linreg.errors import ShortErrorParser, check_config_files, fail, find_user_error, one_line
from linreg.model import LinearRegression
from linreg.validation import UserInputError


class LinearRegressionCLI(LightningCLI):
    """LightningCLI with the data module's ``input_dim`` linked to the model's, and this project's defaults."""

    def __init__(self, *args: Any, **kwargs: Any) -> None:
        argv = kwargs.get("args")
        argv = sys.argv[1:] if argv is None else argv
        # The subcommand being run, if the command line names one: only its parser is built.
        self._requested = (
            next((a for a in argv if a in LightningCLI.subcommands()), None) if isinstance(argv, list) else None
        )
        if isinstance(argv, list):
            check_config_files(argv)
        super().__init__(*args, **kwargs)

    def subcommands(self) -> dict[str, set[str]]:  # type: ignore[override]
        # LightningCLI builds a full parser (Trainer, model, data, checkpoint) per subcommand, ~0.1 s each;
        # one is enough to run. `linreg --help` still lists them all.
        every = LightningCLI.subcommands()
        return {self._requested: every[self._requested]} if self._requested in every else every

    def add_arguments_to_parser(self, parser: LightningArgumentParser) -> None:
        # The model never has to be told the number of features: it is read off the data module.
        parser.link_arguments("data.input_dim", "model.init_args.input_dim", apply_on="instantiate")
        parser.add_lightning_class_args(ModelCheckpoint, "checkpoint")
        parser.add_lightning_class_args(LastCheckpoint, "last")
        parser.set_defaults(
            {
                "model": {"class_path": "linreg.model.LinearRegression"},
                "data": {"class_path": "linreg.data.SyntheticRegressionData"},
                "checkpoint.monitor": "val/loss",
                "checkpoint.filename": "best-{epoch}-{step}",
                "checkpoint.save_last": False,  # last.ckpt is LastCheckpoint's (the `last` group)
                # Lightning's table of submodules says little about one linear layer (the report shows its
                # parameters), and each callback costs time at every SGD step: off unless asked for.
                "trainer.enable_model_summary": False,
                # Without a config, the book's run: its data, model and optimizer are the defaults, and 3 epochs
                # (Lightning's own default is 1000).
                "trainer.max_epochs": 3,
                "trainer.logger": {
                    "class_path": "lightning.pytorch.loggers.TensorBoardLogger",
                    "init_args": {"save_dir": "runs", "name": "linreg", "default_hp_metric": False},
                },
            }
        )

    def parse_arguments(self, parser: LightningArgumentParser, args: ArgsType) -> None:
        super().parse_arguments(parser, args)
        self._checkpoint: tuple[str, Any] | None = None
        self._ckpt_path: str | None = None
        subcommand = self.config.get("subcommand")
        if not subcommand:
            return
        # A checkpoint never chooses the config. LightningCLI would next merge the checkpoint's
        # hyper_parameters into the config, and jsonargparse imports and calls any class_path they name
        # (`os.system`, ...), or silently replaces values of the command line. Hidden from that step, the
        # path comes back in before_instantiate_classes: the config is the command line's and the config
        # file's alone. The model needs nothing from the checkpoint's hyper-parameters: its input_dim comes
        # from the data, and a checkpoint of another width is refused before anything is written.
        self._ckpt_path = self.config[subcommand].get("ckpt_path")
        self.config[subcommand].ckpt_path = None
        if self.config[subcommand].get("weights_only") is False:
            raise UserInputError(
                "weights_only must stay true or unset, got False: checkpoints are loaded with weights_only=True,"
                " so that loading one never runs code from it"
            )
        ckpt_path = self._ckpt_path
        if ckpt_path == "best":
            raise UserInputError(
                "ckpt_path 'best' names the best checkpoint of a fit in the same process, and this one has none;"
                " give the file (runs/<name>/version_N/checkpoints/best-*.ckpt) or 'last'"
            )
        if ckpt_path not in (None, "last", "hpc", "registry") and not str(ckpt_path).startswith("registry:"):
            self._checkpoint = _read_checkpoint(ckpt_path)

    def before_instantiate_classes(self) -> None:
        config = self.config[self.subcommand] if self.subcommand else self.config
        if self.subcommand:
            config.ckpt_path = self._ckpt_path
        # torch rejects a bad learning rate only when fit builds the optimizer, and without naming the key.
        # With no config the optimizer is the default function, which has no init_args.
        optimizer = config.model.init_args.optimizer
        lr = optimizer.init_args.get("lr") if hasattr(optimizer, "init_args") else None
        if isinstance(lr, (int, float)) and not lr > 0:
            raise UserInputError(f"model.optimizer.lr must be > 0, got {lr!r}")
        if self.subcommand in ("validate", "test", "predict"):
            config.trainer.logger = _without_event_files(config.trainer.logger)
        if config.checkpoint.save_last:
            raise UserInputError(
                f"checkpoint.save_last must stay false, got {config.checkpoint.save_last!r}:"
                " last.ckpt is written by the `last` group (every last.every_n_train_steps steps and each epoch)"
            )

    def instantiate_trainer(self, **kwargs: Any) -> Trainer:
        config = self.config_init[self.subcommand] if self.subcommand else self.config_init
        configured = config.get("trainer", {}).get("plugins")
        plugins = [] if configured is None else list(configured) if isinstance(configured, list) else [configured]
        if not any(isinstance(plugin, CheckpointIO) for plugin in plugins):
            plugins.append(AtomicCheckpointIO())
        self.trainer_defaults["callbacks"] = default_callbacks(self.subcommand)
        try:
            return super().instantiate_trainer(plugins=plugins, **kwargs)
        except (MisconfigurationException, ValueError) as error:  # the Trainer's checks of its own arguments
            if isinstance(error, UserInputError):
                raise
            raise UserInputError(f"trainer: {one_line(str(error))}") from error

    def after_instantiate_classes(self) -> None:
        if not self.subcommand:
            return
        config = self.config_init[self.subcommand]
        if self.subcommand == "fit":
            _refuse_used_log_dir(self.trainer)
        if config.get("ckpt_path") == "last":
            if not self.trainer.loggers:
                raise UserInputError(
                    "--ckpt_path last looks through the runs a logger writes (runs/<name>/version_N/), and"
                    " trainer.logger is off: give the checkpoint file itself (<dir>/checkpoints/last.ckpt)"
                )
            path, searched = find_last_checkpoint(self.trainer)
            config.ckpt_path = None if path is None else str(path)
            if path is None:
                _say(f"--ckpt_path last: no checkpoint matches {searched}; starting from the beginning")
            else:
                self._checkpoint = _read_checkpoint(path)
                epoch, step = self._checkpoint[1].get("epoch"), self._checkpoint[1].get("global_step")
                _say(f"--ckpt_path last: resuming from {path} (epoch {epoch}, step {step})")
        if self._checkpoint is not None:
            path, checkpoint = self._checkpoint
            check_checkpoint_fits(checkpoint, path, self.model, resuming=self.subcommand == "fit")
            self._checkpoint = None  # the trainer loads it again; no need to hold it


def default_callbacks(subcommand: str | None) -> list[Callback]:
    """The callbacks a run of ``subcommand`` always has (``None``: a fit built without running it).

    Only those a subcommand uses: Lightning calls every callback at every hook, several times per SGD step.
    """
    if subcommand in (None, "fit"):
        # ParameterRecovery before ConsoleProgress: the epoch line prints the loss it logs at the epoch's end.
        return [ParameterRecovery(), ConsoleProgress(), DivergenceGuard(), FitReport(), FitPlots(), Dashboard()]
    if subcommand == "predict":
        return [ConsoleProgress(), PredictionWriter()]
    return [ConsoleProgress()]


def _without_event_files(logger: Any) -> Any:
    """A TensorBoardLogger's config as a CSVLogger's in the same place (``<save_dir>/<name>/version_N``).

    For validate, test and predict: TensorBoard lists every directory with an event file as a run, and
    an evaluation of a checkpoint is not one. Its metrics are printed, and kept in ``metrics.csv``.
    """
    if not (isinstance(logger, Namespace) and str(logger.get("class_path")).endswith("TensorBoardLogger")):
        return logger
    given = logger.get("init_args") or Namespace()
    kept = {key: given.get(key) for key in ("save_dir", "name", "version", "prefix") if given.get(key) is not None}
    return Namespace(class_path="lightning.pytorch.loggers.CSVLogger", init_args=Namespace(**kept))


def _refuse_used_log_dir(trainer: Trainer) -> None:
    """Refuses a fit that would write into the directory of an earlier run (where its config.yaml would go)."""
    if trainer.log_dir is not None and (Path(trainer.log_dir) / "config.yaml").exists():
        raise UserInputError(
            f"{trainer.log_dir} already holds a run (its config.yaml); give this one a directory of its own:"
            " leave trainer.logger.init_args.version unset for a new version_N, or, without a logger, set"
            " another trainer.default_root_dir"
        )


def _read_checkpoint(path: str | Path) -> tuple[str, dict[str, Any]]:
    """The checkpoint at ``path``, loaded weights-only and checked to be Lightning's, with its path."""
    return str(path), check_lightning_checkpoint(load_safely(path), str(path))


@rank_zero_only
def _say(line: str) -> None:
    """Prints once, from the first process, however many processes train."""
    print(line, flush=True)


def build_cli(args: ArgsType = None, run: bool = True) -> LinearRegressionCLI:
    """This project's LightningCLI; ``run=False`` builds the model, data and trainer without running them."""
    return LinearRegressionCLI(
        LinearRegression,
        RegressionData,
        subclass_mode_model=True,  # LinearRegression, or a subclass by class_path (configs/large.yaml)
        subclass_mode_data=True,
        save_config_callback=SaveConfigAndHparams,
        # No `_instantiator` in the checkpoints' hyper-parameters: load_from_checkpoint would import and call
        # the function it names. LinearRegression.load_from_checkpoint(path) works without it.
        load_from_checkpoint_support=False,
        parser_class=ShortErrorParser,
        parser_kwargs={"prog": "linreg", "description": "Linear regression fitted by SGD with PyTorch Lightning."},
        args=args,
        run=run,
    )


def main(args: ArgsType = None) -> None:
    """Runs the CLI; ``args`` (a list or dict) replaces ``sys.argv[1:]``, so tests can call it in-process."""
    quiet_lightning()
    try:
        build_cli(args)
    except Exception as exc:
        user_error = find_user_error(exc)
        if user_error is None:
            raise
        if rank_zero_only.rank != 0:  # the first process says it; the others only exit
            raise SystemExit(user_error.exit_status) from None
        fail("linreg", str(user_error), status=user_error.exit_status)
