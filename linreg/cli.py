"""The command line: ``LightningCLI`` joining the data module and the model.

``python -m linreg fit --config configs/d2l.yaml``; subcommands fit, validate, test and predict.
"""

from __future__ import annotations

import sys
from typing import Any

from lightning.pytorch.callbacks import ModelCheckpoint
from lightning.pytorch.cli import ArgsType, LightningArgumentParser, LightningCLI

from linreg.console import ConsoleProgress, quiet_lightning
from linreg.data import RegressionData
from linreg.errors import ShortErrorParser, fail, find_user_error
from linreg.hparams import SaveConfigAndHparams
from linreg.model import LinearRegression
from linreg.plots import FitPlots
from linreg.predictions import PredictionWriter
from linreg.recovery import ParameterRecovery
from linreg.report import FitReport
from linreg.validation import UserInputError


class LinearRegressionCLI(LightningCLI):
    """LightningCLI with the data module's ``input_dim`` linked to the model's, and this project's defaults."""

    def __init__(self, *args: Any, args_: ArgsType = None, **kwargs: Any) -> None:
        argv = sys.argv[1:] if args_ is None else args_
        # The subcommand being run, if the command line names one: only its parser is built.
        self._requested = (
            next((a for a in argv if a in LightningCLI.subcommands()), None) if isinstance(argv, list) else None
        )
        super().__init__(*args, args=args_, **kwargs)

    def subcommands(self) -> dict[str, set[str]]:  # type: ignore[override]
        # LightningCLI builds a full parser (Trainer, model, data, checkpoint) per subcommand, ~0.1 s each;
        # one is enough to run. `linreg --help` still lists them all.
        every = LightningCLI.subcommands()
        requested = getattr(self, "_requested", None)
        return {requested: every[requested]} if requested in every else every

    def add_arguments_to_parser(self, parser: LightningArgumentParser) -> None:
        # The model never has to be told the number of features: it is read off the data module.
        parser.link_arguments("data.input_dim", "model.input_dim", apply_on="instantiate")
        parser.add_lightning_class_args(ModelCheckpoint, "checkpoint")
        parser.set_defaults(
            {
                "data": {"class_path": "linreg.data.SyntheticRegressionData"},
                "checkpoint.monitor": "val/loss",
                "checkpoint.filename": "best-{epoch}-{step}",
                "checkpoint.save_last": True,
                "trainer.logger": {
                    "class_path": "lightning.pytorch.loggers.TensorBoardLogger",
                    "init_args": {"save_dir": "runs", "name": "linreg", "default_hp_metric": False},
                },
            }
        )

    def before_instantiate_classes(self) -> None:
        config = self.config[self.subcommand] if self.subcommand else self.config
        # torch rejects a bad learning rate only when fit builds the optimizer, and without naming the key.
        # With no config the optimizer is the default function, which has no init_args.
        optimizer = config.model.optimizer
        lr = optimizer.init_args.get("lr") if hasattr(optimizer, "init_args") else None
        if isinstance(lr, (int, float)) and not lr > 0:
            raise UserInputError(f"model.optimizer.lr must be > 0, got {lr!r}")


def build_cli(args: ArgsType = None, run: bool = True) -> LinearRegressionCLI:
    """This project's LightningCLI; ``run=False`` builds the model, data and trainer without running them."""
    return LinearRegressionCLI(
        LinearRegression,
        RegressionData,
        subclass_mode_data=True,
        save_config_callback=SaveConfigAndHparams,
        trainer_defaults={
            "callbacks": [ConsoleProgress(), ParameterRecovery(), FitReport(), FitPlots(), PredictionWriter()]
        },
        parser_class=ShortErrorParser,
        parser_kwargs={"prog": "linreg", "description": "Linear regression fitted by SGD with PyTorch Lightning."},
        args_=args,
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
        fail("linreg", str(user_error))
