"""The command line: ``LightningCLI`` joining the data module and the model.

``python -m linreg fit --config configs/d2l.yaml``; subcommands fit, validate, test and predict.

Beyond Lightning's defaults: checkpoints are written atomically and loaded weights-only
(``AtomicCheckpointIO``, added unless ``trainer.plugins`` names another CheckpointIO), ``last.ckpt`` is
kept current every ``last.every_n_train_steps`` steps, ``--ckpt_path last`` finds the newest one among
earlier runs of the config (``checkpointing.choice``), and a checkpoint is admitted (checked against the
model and the data) before anything is written.
"""

from __future__ import annotations

import glob
import sys
from typing import Any

import lightning
from lightning.fabric.utilities.exceptions import MisconfigurationException
from lightning.pytorch import Callback, Trainer
from lightning.pytorch.callbacks import ModelCheckpoint, ProgressBar
from lightning.pytorch.cli import ArgsType, LightningArgumentParser, LightningCLI
from lightning.pytorch.utilities import rank_zero_only
from lightning.pytorch.utilities.exceptions import SIGTERMException

from linreg import config_checks
from linreg.callbacks import default_callbacks
from linreg.callbacks.hparams import SaveConfigAndHparams
from linreg.callbacks.progress import quiet_lightning
from linreg.checkpointing.admission import admit
from linreg.checkpointing.choice import RunChoice, refuse_used_log_dir, run_config_of
from linreg.checkpointing.interrupt import SIGINT_STATUS, SaveOnInterrupt, Stopped
from linreg.checkpointing.io import AtomicCheckpointIO, load_safely
from linreg.checkpointing.runs import LastCheckpoint, run_identity_of
from linreg.data import RegressionData
from linreg.errors import NothingToDo, ShortErrorParser, StopStartedProcesses, exit_for, fail, one_line, say
from linreg.instantiation import config_key
from linreg.model import LinearRegression
from linreg.validation import UserInputError

# The callbacks configured as groups of their own: ModelCheckpoint's best files, and last.ckpt.
_CALLBACK_GROUPS = {"checkpoint": ModelCheckpoint, "last": LastCheckpoint}


class LinearRegressionCLI(LightningCLI):
    """LightningCLI with the data module's ``input_dim`` linked to the model's, and this project's defaults."""

    def __init__(
        self, *args: Any, run_choice: RunChoice | None = None, interrupt: SaveOnInterrupt | None = None, **kwargs: Any
    ) -> None:
        # Owned by the caller (main), who ends them with the command: the run directory claimed, released if the
        # command fails, and the signal handling that words how a signal stopped it.
        self._run = run_choice or RunChoice()
        self._interrupt = interrupt or SaveOnInterrupt()
        super().__init__(*args, **kwargs)

    def init_parser(self, **kwargs: Any) -> LightningArgumentParser:
        # LightningCLI's, with a --config that judges the file before it is opened (a FIFO would block).
        kwargs.setdefault("dump_header", [f"lightning.pytorch=={lightning.__version__}"])
        parser = self.parser_class(**kwargs)
        parser.add_argument("-c", "--config", action=config_checks.CheckedConfigFile, help="A YAML config file.")
        return parser

    def add_arguments_to_parser(self, parser: LightningArgumentParser) -> None:
        # The model never has to be told the number of features: it is read off the data module.
        parser.link_arguments("data.input_dim", "model.init_args.input_dim", apply_on="instantiate")
        for key, callback in _CALLBACK_GROUPS.items():
            parser.add_lightning_class_args(callback, key)
        sgd = {"class_path": "torch.optim.SGD", "init_args": {"lr": 0.03}}  # a class: --model.optimizer.lr works
        board = {"save_dir": "runs", "name": "linreg", "default_hp_metric": False}  # runs/linreg/version_N
        parser.set_defaults(
            {
                "model": {"class_path": "linreg.model.LinearRegression", "init_args": {"optimizer": sgd}},
                "data": {"class_path": "linreg.data.SyntheticRegressionData"},
                "checkpoint.monitor": "val/loss",
                "checkpoint.filename": "best-{epoch}-{step}",
                "checkpoint.save_last": False,  # last.ckpt is LastCheckpoint's (the `last` group)
                # A table of one linear layer's submodules says nothing the report does not; off unless asked for.
                "trainer.enable_model_summary": False,
                "trainer.max_epochs": 3,  # the book's run without a config (Lightning's own default is 1000)
                "trainer.logger": {"class_path": "lightning.pytorch.loggers.TensorBoardLogger", "init_args": board},
            }
        )

    def parse_arguments(self, parser: LightningArgumentParser, args: ArgsType) -> None:
        argv = sys.argv[1:] if args is None else args
        run = run_config_of(argv) if isinstance(argv, (list, tuple)) else None  # not for a dict or Namespace
        if run is not None:  # the run's config.yaml as the subcommand's defaults, under what the command line gives
            subcommand, run_config = run
            say(f"{subcommand}: no --config was given; using that of the checkpoint's run, {run_config}")
            parser.owner_of(f"{subcommand}.ckpt_path")[0].default_config_files = [glob.escape(str(run_config))]
        super().parse_arguments(parser, args)
        subcommand = self.config.get("subcommand")
        if not subcommand:
            return
        # After the parser's: an unknown class is named as such. jsonargparse records the arguments it parsed.
        config_checks.check_optimizer_has_lr(getattr(parser, "args", None) or [])
        config = self.config[subcommand]
        config_checks.check_config_values(config)
        # A checkpoint never chooses the config. LightningCLI's next step, which no argument switches off, merges its
        # hyper_parameters into the config (jsonargparse imports and calls any class_path they name): the path is
        # hidden from that step and comes back in the first hook after it, before_instantiate_classes.
        self._ckpt_path, config.ckpt_path = config.ckpt_path, None

    def before_instantiate_classes(self) -> None:
        self._checkpoint: tuple[str, Any] | None = None
        if not self.subcommand:
            return
        config = self.config[self.subcommand]
        config.ckpt_path = self._ckpt_path
        if config.ckpt_path not in (None, "last", "hpc") and not str(config.ckpt_path).startswith("registry"):
            self._checkpoint = str(config.ckpt_path), load_safely(config.ckpt_path)
        if self.subcommand != "fit":
            config.trainer.logger = config_checks.without_event_files(config.trainer.logger)
        identity = lambda: run_identity_of(self.parser.dump(self.config), self.subcommand)  # noqa: E731
        self._run.choose(config, self.subcommand, identity)
        if config.ckpt_path is not None and self._checkpoint is None:  # an earlier run's, found for `last`
            self._checkpoint = self._run.loaded or (str(config.ckpt_path), load_safely(config.ckpt_path))

    def instantiate_trainer(self, **kwargs: Any) -> Trainer:
        config = self.config_init[self.subcommand] if self.subcommand else self.config_init
        plugins = AtomicCheckpointIO.unless_given(config.trainer.get("plugins"))
        self.trainer_defaults["callbacks"] = default_callbacks(self.subcommand, command_line=True)
        if config.trainer.get("enable_progress_bar") is False:  # Lightning refuses a progress bar beside it
            self.trainer_defaults["callbacks"] = [
                c for c in self.trainer_defaults["callbacks"] if not isinstance(c, ProgressBar)
            ]
        if config.trainer.get("enable_checkpointing") is False:  # LightningCLI adds the groups' callbacks regardless
            config.checkpoint, config.last = Callback(), Callback()  # and the Trainer refuses checkpoint callbacks
        self.trainer_defaults["callbacks"] += [self._interrupt, StopStartedProcesses()]
        if self.subcommand in (None, "fit"):
            parsed = self.config[self.subcommand] if self.subcommand else self.config
            key_of = lambda callback: config_key(parsed, type(callback), _CALLBACK_GROUPS)  # noqa: E731
            self.trainer_defaults["callbacks"].append(config_checks.CheckBeforeTraining(key_of))
        try:
            trainer = super().instantiate_trainer(plugins=plugins, **kwargs)
        # The Trainer's refusals (Lightning's class; an ImportError: the accelerator needs a missing package).
        except (MisconfigurationException, ValueError, TypeError, RuntimeError, ImportError) as error:
            if isinstance(error, UserInputError):
                raise
            raise UserInputError(f"trainer: {one_line(str(error))}") from error
        config_checks.check_trainer(trainer, config.trainer.get("precision"))
        return trainer

    def after_instantiate_classes(self) -> None:
        if not self.subcommand:
            return
        if self.subcommand == "fit" and self._run.claimed is None:
            refuse_used_log_dir(self.trainer.log_dir if rank_zero_only.rank == 0 else None)
        trainer_config = self.config[self.subcommand].trainer
        config_checks.check_training_setup(self.model, trainer_config.get("max_epochs"))
        if self._checkpoint is not None:
            identity = self._run.identity() if self.subcommand == "fit" else None
            admit(*self._checkpoint, self.subcommand, self.trainer, self.model, self.datamodule, identity)
            self._checkpoint = None  # the trainer's AtomicCheckpointIO holds it now


def build_cli(args: ArgsType = None, run: bool = True, **owned: Any) -> LinearRegressionCLI:
    """This project's LightningCLI; ``run=False`` builds the model, data and trainer without running them.

    ``owned``: the ``run_choice`` and ``interrupt`` that the caller ends with the command (``main``).
    """
    return LinearRegressionCLI(
        LinearRegression,
        RegressionData,
        subclass_mode_model=True,  # LinearRegression, or a subclass by class_path (configs/large.yaml)
        subclass_mode_data=True,
        save_config_callback=SaveConfigAndHparams,
        seed_everything_default=0,  # the book's seed without a config (LightningCLI's `true` warns and uses 0)
        # No `_instantiator` in the checkpoints' hyper-parameters: load_from_checkpoint would call what it names.
        load_from_checkpoint_support=False,
        # The model takes its optimizer and scheduler (--model.optimizer, --model.scheduler); LightningCLI's own
        # --optimizer and --lr_scheduler groups would silently replace them.
        auto_configure_optimizers=False,
        parser_class=ShortErrorParser,  # one-line errors, in the bounded YAML mode (linreg.errors)
        parser_kwargs={"prog": "linreg", "description": "Linear regression fitted by SGD with PyTorch Lightning."},
        args=args,
        run=run,
        **owned,
    )


def main(args: ArgsType = None) -> None:
    """Runs the CLI; ``args`` (a list or dict) replaces ``sys.argv[1:]``, so tests can call it in-process."""
    quiet_lightning()
    run, interrupt = RunChoice(), SaveOnInterrupt()
    try:
        with interrupt.stopping_signals(), run:  # the run directory claimed is released if the command fails
            build_cli(args, run_choice=run, interrupt=interrupt)
    except NothingToDo as done:
        say(str(done))
    except KeyboardInterrupt:  # outside training, where Ctrl-C stops at the end of a step (SaveOnInterrupt)
        fail("linreg", "stopped by Ctrl-C (SIGINT) before training began; nothing was saved", status=SIGINT_STATUS)
    except (Stopped, SIGTERMException) as stop:  # a signal stopped the command: SaveOnInterrupt words how
        exit_for(interrupt.stopped(stop) or stop)
    except Exception as exc:
        exit_for(exc)
