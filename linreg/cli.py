"""The command line: ``LightningCLI`` joining the data module and the model.

``python -m linreg fit --config configs/d2l.yaml``; subcommands fit, validate, test and predict.

Beyond Lightning's defaults: checkpoints are written atomically and loaded weights-only
(``AtomicCheckpointIO``, added unless ``trainer.plugins`` names another CheckpointIO), ``last.ckpt`` is
kept current every ``last.every_n_train_steps`` steps, ``--ckpt_path last`` finds the newest one among
earlier runs of the config, and a checkpoint is checked against the model before anything is written.
"""

from __future__ import annotations

import contextlib
import json
import os
import shutil
import signal
import sys
from pathlib import Path
from typing import Any

import torch.distributed
import yaml
from jsonargparse import Namespace, get_loader, set_loader
from lightning.fabric.plugins import CheckpointIO
from lightning.fabric.utilities.exceptions import MisconfigurationException
from lightning.pytorch import Callback, Trainer
from lightning.pytorch.callbacks import ModelCheckpoint
from lightning.pytorch.cli import ArgsType, LightningArgumentParser, LightningCLI
from lightning.pytorch.utilities import rank_zero_only
from lightning.pytorch.utilities.exceptions import SIGTERMException

from linreg.callbacks import default_callbacks
from linreg.callbacks.hparams import SaveConfigAndHparams
from linreg.callbacks.progress import quiet_lightning
from linreg.checkpointing.compat import check_resumable, checkpoint_config_differences
from linreg.checkpointing.interrupt import SIGINT_STATUS, SaveOnInterrupt
from linreg.checkpointing.io import AtomicCheckpointIO, load_safely
from linreg.checkpointing.resume import (
    LastCheckpoint,
    check_checkpoint_fits,
    check_lightning_checkpoint,
)
from linreg.checkpointing.runs import EarlierRun, claim_version, earlier_runs, run_identity
from linreg.data import RegressionData
from linreg.errors import ShortErrorParser, causes, check_yaml_syntax, fail, find_user_error, one_line
from linreg.instantiation import ConfigKeyError, run_error_key
from linreg.limits import check_config_file, check_regular_file, check_yaml_expansion, usable_cores
from linreg.model import LinearRegression
from linreg.validation import UserInputError


def _bounded_yaml(stream: str) -> Any:
    """jsonargparse's YAML loader, for config files and values alike, after the check on alias expansion."""
    check_yaml_expansion(stream)
    return _YAML_LOAD(stream)


_YAML_LOAD = get_loader("yaml")
set_loader("yaml_bounded", _bounded_yaml, exceptions=(yaml.YAMLError,))

_FLOAT32_MAX = 3.4028234663852886e38

# The callbacks configured as groups of their own: ModelCheckpoint's best files, and last.ckpt.
_CALLBACK_GROUPS = {"checkpoint": ModelCheckpoint, "last": LastCheckpoint}

# Rank zero's choice of run directory and checkpoint, for the processes the DDP launcher starts.
_RUN_ENV = "LINREG_RUN"


class NothingToDo(Exception):  # noqa: N818 (not an error: the command line exits 0)
    """The command has nothing to do (the run it would continue is finished); the message says why."""


class Interrupted(UserInputError):  # noqa: N818 (a state, not a fault)
    """Fit was stopped by SIGTERM or Ctrl-C; the message says where the training state was saved."""

    def __init__(self, message: str, exit_status: int) -> None:
        super().__init__(message)
        self.exit_status = exit_status  # 128 + the signal's number


class LinearRegressionCLI(LightningCLI):
    """LightningCLI with the data module's ``input_dim`` linked to the model's, and this project's defaults."""

    def __init__(self, *args: Any, **kwargs: Any) -> None:
        argv = kwargs.get("args")
        argv = sys.argv[1:] if argv is None else argv
        completed = _with_run_config(argv) if isinstance(argv, list) else argv
        if completed is not argv:  # passed on only when changed: LightningCLI warns of args beside sys.argv
            argv = kwargs["args"] = completed
        # The subcommand being run, if the command line names one: only its parser is built.
        self._requested = (
            next((a for a in argv if a in LightningCLI.subcommands()), None) if isinstance(argv, list) else None
        )
        self._argv = argv if isinstance(argv, list) else []
        if isinstance(argv, list):
            _check_config_files(argv)
        self._claimed: Path | None = None  # the run directory this command created, removed if it fails early
        self._created: list[Path] = []  # the directories above it that it created
        self._interrupt = SaveOnInterrupt()
        try:
            super().__init__(*args, **kwargs)
        except SIGTERMException:
            self._remove_unused_run_dir()
            raise Interrupted(self._interrupt.message(), self._interrupt.exit_status) from None
        except SystemExit:
            if not self._interrupt.at_once:
                raise
            # Lightning's answer to a KeyboardInterrupt in training (exit status 1), with this project's line.
            self._remove_unused_run_dir()
            raise Interrupted(self._interrupt.message(), SIGINT_STATUS) from None
        except NothingToDo:
            raise
        except BaseException as error:
            self._stop_other_processes()
            self._remove_unused_run_dir()
            key = self._key_of_run_error(error)
            if key is not None:
                raise ConfigKeyError(f"{key}: {one_line(str(error))}") from error
            raise
        finally:
            os.environ.pop(_RUN_ENV, None)

    def subcommands(self) -> dict[str, set[str]]:  # type: ignore[override]
        # LightningCLI builds a full parser (Trainer, model, data, checkpoint) per subcommand, ~0.1 s each;
        # one is enough to run. `linreg --help` still lists them all.
        every = LightningCLI.subcommands()
        return {self._requested: every[self._requested]} if self._requested in every else every

    def add_arguments_to_parser(self, parser: LightningArgumentParser) -> None:
        # The model never has to be told the number of features: it is read off the data module.
        parser.link_arguments("data.input_dim", "model.init_args.input_dim", apply_on="instantiate")
        for key, callback in _CALLBACK_GROUPS.items():
            parser.add_lightning_class_args(callback, key)
        parser.set_defaults(
            {
                # The book's SGD as a class, not the model's default function: `--model.optimizer.lr` then works
                # without a config, and `fit --help` lists it.
                "model": {
                    "class_path": "linreg.model.LinearRegression",
                    "init_args": {"optimizer": {"class_path": "torch.optim.SGD", "init_args": {"lr": 0.03}}},
                },
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
        _check_optimizer_has_lr(self._argv)  # after the parser's own checks: an unknown class is named as such
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
        _check_config_values(self.config[subcommand])
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
            check_regular_file("ckpt_path", ckpt_path)
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
        # The optimizer's numbers scale float32 parameters: beyond float32's range torch fails mid-step.
        for key, value in vars(getattr(optimizer, "init_args", None) or Namespace()).items():
            if isinstance(value, float) and not abs(value) <= _FLOAT32_MAX:
                raise UserInputError(f"model.optimizer.{key} must be finite and within float32's range, got {value!r}")
        if self.subcommand in ("validate", "test", "predict"):
            config.trainer.logger = _without_event_files(config.trainer.logger)
        if config.checkpoint.save_last:
            raise UserInputError(
                f"checkpoint.save_last must stay false, got {config.checkpoint.save_last!r}:"
                " last.ckpt is written by the `last` group (every last.every_n_train_steps steps and each epoch)"
            )
        if self.subcommand:
            self._choose_run(config)

    def instantiate_trainer(self, **kwargs: Any) -> Trainer:
        config = self.config_init[self.subcommand] if self.subcommand else self.config_init
        configured = config.get("trainer", {}).get("plugins")
        plugins = [] if configured is None else list(configured) if isinstance(configured, list) else [configured]
        if not any(isinstance(plugin, CheckpointIO) for plugin in plugins):
            plugins.append(AtomicCheckpointIO())
        self.trainer_defaults["callbacks"] = default_callbacks(self.subcommand)
        if self._checkpointing_off():
            # LightningCLI adds the `checkpoint` and `last` groups' callbacks to every trainer, and Lightning refuses
            # checkpoint callbacks with enable_checkpointing false: they give way to inert ones.
            config = self.config_init[self.subcommand] if self.subcommand else self.config_init
            config.checkpoint, config.last = Callback(), Callback()
        elif self.subcommand in (None, "fit"):
            self.trainer_defaults["callbacks"].append(self._interrupt)
        try:
            trainer = super().instantiate_trainer(plugins=plugins, **kwargs)
        # The Trainer's own checks; an ImportError: the accelerator, strategy or precision needs a missing package.
        except (MisconfigurationException, ValueError, TypeError, RuntimeError, ImportError) as error:
            if isinstance(error, UserInputError):
                raise
            raise UserInputError(f"trainer: {one_line(str(error))}") from error
        _check_processes(trainer)
        return trainer

    def after_instantiate_classes(self) -> None:
        if not self.subcommand:
            return
        config = self.config_init[self.subcommand]
        if self.subcommand == "fit" and self._claimed is None and rank_zero_only.rank == 0:
            _refuse_used_log_dir(self.trainer)
        _check_optimizer(self.model)
        if config.get("ckpt_path") == "last":  # left unresolved by _choose_run: no logger to find runs through
            raise UserInputError(
                "--ckpt_path last looks through the runs a logger writes (runs/<name>/version_N/), and"
                " trainer.logger is off: give the checkpoint file itself (<dir>/checkpoints/last.ckpt)"
            )
        if self._checkpoint is not None:
            path, checkpoint = self._checkpoint
            check_checkpoint_fits(checkpoint, path, self.model, resuming=self.subcommand == "fit")
            if self.subcommand == "fit":
                self._refuse_other_configuration(path)
            check_resumable(checkpoint, path, self.model, self.datamodule, resuming=self.subcommand == "fit")
            self._checkpoint = None  # the trainer loads it again; no need to hold it

    def _checkpointing_off(self) -> bool:
        """Whether ``trainer.enable_checkpointing`` is false: no checkpoint files at all."""
        config = self.config_init[self.subcommand] if self.subcommand else self.config_init
        return config.get("trainer", Namespace()).get("enable_checkpointing") is False

    # --- which run this command continues, and the directory it writes (see checkpointing/runs.py) ---

    def _choose_run(self, config: Namespace) -> None:
        """Resolves ``--ckpt_path last`` (fit) or a missing ``--ckpt_path`` (validate/test/predict) to a run of
        this configuration, then claims the new run's ``version_N``. Under DDP, rank zero decides and the
        processes it starts inherit the decision (through the environment, as Lightning passes its seed)."""
        logger = _logger_args(config)
        inherited = os.environ.get(_RUN_ENV)
        if inherited and rank_zero_only.rank != 0:
            version, config.ckpt_path = json.loads(inherited)
            if logger is not None and version is not None:
                logger.version = version
            return
        evaluating = self.subcommand != "fit" and config.ckpt_path is None
        if logger is None:
            if evaluating:
                raise UserInputError(
                    f"{self.subcommand} needs trained weights: give --ckpt_path (a checkpoint file); with"
                    " trainer.logger off there are no earlier runs to take them from"
                )
            return
        root = Path(logger.save_dir or ".") / str(logger.name or "")
        if config.ckpt_path == "last" and self.subcommand == "fit":
            config.ckpt_path = self._last_of_this_configuration(config, root)
        elif evaluating or config.ckpt_path == "last":
            config.ckpt_path = self._newest_fit(config, root, finished=evaluating)
        if config.ckpt_path is not None and self._checkpoint is None:
            self._checkpoint = _read_checkpoint(config.ckpt_path)
        if logger.version is None and rank_zero_only.rank == 0:
            self._created = [p for p in (root, *root.parents) if not p.exists()]  # removed again if empty
            logger.version = claim_version(root)
            self._claimed = root / f"version_{logger.version}"
        os.environ[_RUN_ENV] = json.dumps([logger.version, config.ckpt_path])

    def _identity(self) -> dict[str, Any]:
        """This command's run identity (``runs.run_identity``) from its resolved config, dumped as config.yaml is."""
        dumped = yaml.safe_load(self.parser.dump(self.config))
        config = dumped.get(self.subcommand, dumped)
        return run_identity({k: v for k, v in config.items() if k != "config"})

    def _earlier(self, config: Namespace, root: Path) -> tuple[list[EarlierRun], int]:
        max_epochs, max_steps = config.trainer.max_epochs, config.trainer.max_steps
        if max_epochs is None and max_steps in (None, -1):
            max_epochs = 1000  # Lightning's default
        return earlier_runs(root, self._identity(), max_epochs, -1 if max_steps is None else max_steps)

    def _last_of_this_configuration(self, config: Namespace, root: Path) -> str | None:
        runs, others = self._earlier(config, root)
        elsewhere = f" ({others} run{'s' if others != 1 else ''} of other settings left alone)" if others else ""
        if not runs:
            _say(f"--ckpt_path last: no earlier run of this configuration in {root}{elsewhere};"
                 " starting from the beginning")  # fmt: skip
            return None
        newest = runs[0]
        if newest.finished:
            raise NothingToDo(
                f"already finished: {newest.directory} (epoch {newest.epoch}, step {newest.steps}); nothing was"
                " trained or written. Raise trainer.max_epochs or max_steps to train it further"
            )
        _say(f"--ckpt_path last: resuming from {newest.checkpoint_path} (epoch {newest.epoch}, step {newest.steps})")
        return str(newest.checkpoint_path)

    def _newest_fit(self, config: Namespace, root: Path, finished: bool) -> str:
        """validate/test/predict: the newest (finished, when no --ckpt_path was given) fit of this configuration."""
        found = [run for run in self._earlier(config, root)[0] if run.finished or not finished]
        given = "no --ckpt_path was given" if finished else "--ckpt_path last"
        if not found:
            raise UserInputError(
                f"{self.subcommand} needs trained weights and {given}: {root} holds no"
                f"{' finished' if finished else ''} fit of this configuration; give --ckpt_path (a checkpoint file),"
                " or fit first"
            )
        _say(f"{self.subcommand}: {given}; using the newest{' finished' if finished else ''} fit of this"
             f" configuration, {found[0].checkpoint_path}")  # fmt: skip
        return str(found[0].checkpoint_path)

    def _refuse_other_configuration(self, path: str) -> None:
        """Refuses to resume a checkpoint whose run (its config.yaml beside it) was configured otherwise."""
        changed = checkpoint_config_differences(Path(path), self._identity())
        if changed:
            raise UserInputError(
                f"checkpoint {path} belongs to a run with other settings ({'; '.join(changed)}); resuming would"
                " mix two configurations: resume it with its own settings, or start afresh without --ckpt_path"
            )

    def _key_of_run_error(self, error: BaseException) -> str | None:
        """The config key of an object that refused a value once the command ran (``instantiation.run_error_key``)."""
        config, subcommand = getattr(self, "config", None), getattr(self, "subcommand", None)
        if not isinstance(config, Namespace) or not subcommand:
            return None
        return run_error_key(error, config[subcommand], _CALLBACK_GROUPS)

    def _stop_other_processes(self) -> None:
        """Stops the processes this one started (DDP): with it failed the run is over, and left alone each would
        report, with its own traceback, only that it lost its peer."""
        trainer = getattr(self, "trainer", None)
        launcher = trainer.strategy.launcher if isinstance(trainer, Trainer) else None
        if launcher is not None and rank_zero_only.rank == 0:
            launcher.kill(getattr(signal, "SIGKILL", signal.SIGTERM))

    def _remove_unused_run_dir(self) -> None:
        """Removes the run directory this command claimed, unless training saved a checkpoint there."""
        claimed, self._claimed = self._claimed, None
        os.environ.pop(_RUN_ENV, None)
        if claimed is None or not claimed.is_dir() or any(claimed.rglob("*.ckpt")):
            return
        shutil.rmtree(claimed, ignore_errors=True)
        for directory in self._created:  # deepest first; only those this command created, and only when empty
            with contextlib.suppress(OSError):
                directory.rmdir()


def _without_event_files(logger: Any) -> Any:
    """A TensorBoardLogger's config as a CSVLogger's in the same place (``<save_dir>/<name>/version_N``).

    For validate, test and predict: TensorBoard lists every directory with an event file as a run, and
    an evaluation of a checkpoint is not one. Its metrics are printed, and kept in ``metrics.csv``, in a
    ``version_N`` of its own.
    """
    if not (isinstance(logger, Namespace) and str(logger.get("class_path")).endswith("TensorBoardLogger")):
        return logger
    given = logger.get("init_args") or Namespace()
    kept = {key: given.get(key) for key in ("save_dir", "name", "prefix") if key in given}
    # A new version_N, also when the config is a fit's config.yaml, which names the fit's own version.
    return Namespace(class_path="lightning.pytorch.loggers.CSVLogger", init_args=Namespace(**kept, version=None))


def _with_run_config(argv: list[str]) -> list[str]:
    """``validate``/``test``/``predict --ckpt_path CKPT`` without ``--config`` or ``--data``: with its run's config.

    Without it the data module would be the book's synthetic data, whatever the checkpoint was trained on. The
    run's ``config.yaml`` (``<run>/config.yaml`` beside ``<run>/checkpoints/``) names the data module and its
    file; options given on the command line still override it.
    """
    subcommand = next((a for a in argv if a in LightningCLI.subcommands()), None)
    options = {arg.split("=", 1)[0] for arg in argv}
    if subcommand not in ("validate", "test", "predict") or options & {"--config", "-c", "--data"}:
        return argv
    given = [argv[i + 1] for i, arg in enumerate(argv[:-1]) if arg == "--ckpt_path"]
    given += [arg.split("=", 1)[1] for arg in argv if arg.startswith("--ckpt_path=")]
    checkpoint = Path(given[-1]) if given else None
    if checkpoint is None or checkpoint.parent.name != "checkpoints":
        return argv
    config = checkpoint.parent.parent / "config.yaml"
    if not config.is_file():
        return argv
    _say(f"{subcommand}: no --config was given; using that of the checkpoint's run, {config}")
    at = argv.index(subcommand) + 1  # first after the subcommand: what the command line gives overrides it
    return [*argv[:at], "--config", str(config), *argv[at:]]


def _check_config_files(argv: list[str]) -> None:
    """Refuses ``--config`` files that are not regular UTF-8 text files or not YAML, before the parser reads them."""
    for i, arg in enumerate(argv):
        path = argv[i + 1] if arg == "--config" and i + 1 < len(argv) else None
        path = arg.split("=", 1)[1] if arg.startswith("--config=") else path
        if path is not None:
            check_config_file(path)
            check_yaml_syntax(path)


_OPTIMIZER_KEYS = ("--model.optimizer", "--model.init_args.optimizer")


def _check_optimizer_has_lr(argv: list[str]) -> None:
    """Refuses an optimizer class named on the command line without its learning rate.

    jsonargparse keeps the arguments of the config's optimizer that the new class also takes: with
    ``configs/d2l.yaml``, ``--model.optimizer Adam`` alone would train Adam with SGD's learning rate, 0.03. A
    learning rate suits one optimizer, so the command line gives both (or a mapping with ``init_args``).
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


# Trainer arguments Lightning checks only once fit runs (some with a ZeroDivisionError): what each must be.
_TRAINER_LIMITS = {
    "check_val_every_n_epoch": ("an integer >= 1 or null", lambda v: v is None or (isinstance(v, int) and v >= 1)),
    "val_check_interval": ("a number > 0 or null", lambda v: v is None or v > 0),
    "log_every_n_steps": ("an integer >= 1 or null", lambda v: v is None or v >= 1),
    "accumulate_grad_batches": ("an integer >= 1", lambda v: v >= 1),
    "max_steps": ("an integer >= -1 (-1: no limit)", lambda v: v is None or v >= -1),
    "reload_dataloaders_every_n_epochs": ("an integer >= 0", lambda v: v >= 0),
}


def _check_config_values(config: Namespace) -> None:
    """Checks what the parser accepts but the code cannot use: the groups' shapes, the seed, trainer limits."""
    for group in ("model", "data", "trainer"):
        value = config.get(group)
        if value is not None and not isinstance(value, Namespace):
            raise UserInputError(f"{group}: expected a mapping of its arguments, got {type(value).__name__} {value!r}")
    seed = config.get("seed_everything")
    if isinstance(seed, int) and not isinstance(seed, bool) and not 0 <= seed < 2**32:
        raise UserInputError(f"seed_everything must be an integer from 0 to 2**32 - 1 (or true), got {seed}")
    trainer = config.get("trainer") or Namespace()
    for key, (requirement, ok) in _TRAINER_LIMITS.items():
        value = trainer.get(key)
        if isinstance(value, (int, float)) and not ok(value):
            raise UserInputError(f"trainer.{key} must be {requirement}, got {value!r}")
    data = config.get("data")
    arguments = data.get("init_args") if isinstance(data, Namespace) else None
    for key, value in vars(arguments or Namespace()).items():
        if key.endswith("path") and isinstance(value, (str, os.PathLike)):
            check_regular_file(f"data.{key}", value)


def _logger_args(config: Namespace) -> Namespace | None:
    """The ``init_args`` of the configured logger when it writes under ``save_dir/name/version`` (TensorBoard, CSV)."""
    logger = config.trainer.get("logger")
    arguments = logger.get("init_args") if isinstance(logger, Namespace) else None
    if arguments is None or not {"save_dir", "name", "version"} <= set(vars(arguments)):
        return None
    return arguments


def _check_processes(trainer: Trainer) -> None:
    """Refuses more CPU processes than the machine has cores: each is a full copy of the run, competing for them."""
    if trainer.strategy.root_device.type != "cpu" or trainer.num_devices <= 1:
        return
    cores = usable_cores()
    if trainer.num_devices > cores:
        raise UserInputError(
            f"trainer.devices: {trainer.num_devices} processes on the CPU, and this machine can run {cores} at once;"
            f" give at most {cores}"
        )


def _check_optimizer(model: Any) -> None:
    """Builds the configured optimizer once, so that its own argument checks answer as ``model.optimizer``."""
    factory = getattr(model, "optimizer", None)
    if not callable(factory):
        return
    try:
        factory(model.parameters())
    except (ValueError, TypeError, RuntimeError, OverflowError) as error:
        if isinstance(error, UserInputError):
            raise
        raise UserInputError(f"model.optimizer: {one_line(str(error))}") from error


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
        # Without a config, the book's seed (LightningCLI's default, true, would warn "No seed found" and use 0).
        seed_everything_default=0,
        # No `_instantiator` in the checkpoints' hyper-parameters: load_from_checkpoint would import and call
        # the function it names. LinearRegression.load_from_checkpoint(path) works without it.
        load_from_checkpoint_support=False,
        parser_class=ShortErrorParser,
        parser_kwargs={
            "prog": "linreg",
            "description": "Linear regression fitted by SGD with PyTorch Lightning.",
            "parser_mode": "yaml_bounded",
        },
        args=args,
        run=run,
    )


def main(args: ArgsType = None) -> None:
    """Runs the CLI; ``args`` (a list or dict) replaces ``sys.argv[1:]``, so tests can call it in-process."""
    quiet_lightning()
    try:
        build_cli(args)
    except NothingToDo as done:
        _say(str(done))
    except KeyboardInterrupt:  # outside training, where Ctrl-C stops at the end of a step (SaveOnInterrupt)
        fail("linreg", "stopped by Ctrl-C (SIGINT) before training began; nothing was saved", status=SIGINT_STATUS)
    except Exception as exc:
        user_error = find_user_error(exc)
        if rank_zero_only.rank != 0 and (user_error is not None or _lost_peers(exc)):
            # The first process reports the run's error, once; it stops the processes it started. These are the
            # others: those that found the same error, or lost their connection to a process that stopped.
            if user_error is None and os.environ.get("LOCAL_RANK", "0") == "0":  # another machine's first process
                print(
                    f"linreg: process {rank_zero_only.rank} lost its peers: the first process says why", file=sys.stderr
                )
            raise SystemExit(user_error.exit_status if user_error is not None else 1) from None
        if user_error is None:
            raise
        fail("linreg", str(user_error), status=user_error.exit_status)


def _lost_peers(exc: BaseException) -> bool:
    """Whether ``exc`` was raised by torch.distributed: a collective or barrier whose peers stopped."""
    package = Path(torch.distributed.__file__).parent
    for error in causes(exc):
        frame = error.__traceback__
        while frame is not None and frame.tb_next is not None:
            frame = frame.tb_next
        innermost = Path(frame.tb_frame.f_code.co_filename) if frame is not None else None
        if isinstance(error, torch.distributed.DistError) or (innermost and innermost.is_relative_to(package)):
            return True
    return False
