"""Which run a command continues, and the run directory it writes, chosen once before anything is built.

A claimed ``version_N`` is removed again if the command fails before a checkpoint is saved there. Under DDP,
rank zero decides and the processes it starts inherit the decision through the environment, as Lightning's seed.
"""

from __future__ import annotations

import argparse
import contextlib
import json
import os
import shutil
from collections.abc import Callable, Sequence
from pathlib import Path
from typing import Any

from jsonargparse import Namespace
from jsonargparse.typing import import_object
from lightning.pytorch.loggers import CSVLogger, TensorBoardLogger
from lightning.pytorch.utilities import rank_zero_only

from linreg.checkpointing.runs import EarlierRun, claim_version, earlier_runs
from linreg.errors import NothingToDo, say
from linreg.validation import UserInputError

# Rank zero's choice of run directory and checkpoint, for the processes the DDP launcher starts.
RUN_ENV = "LINREG_RUN"


def run_config_of(argv: Sequence[str]) -> tuple[str, Path] | None:
    """``validate``/``test``/``predict --ckpt_path <run>/checkpoints/CKPT`` without ``--config``: the run's config.

    It becomes the default config (else the data would be the book's synthetic data), so given options override it.
    Read before jsonargparse parses: nothing hooks a default config chosen by another argument, and the classes it
    names decide which options the rest of the command line may give (``--data.predict_path``).
    """
    early = argparse.ArgumentParser(add_help=False, allow_abbrev=False, exit_on_error=False)
    early.add_argument("subcommand", nargs="?")
    early.add_argument("-c", "--config", action="append")
    early.add_argument("--ckpt_path")
    try:
        given, _ = early.parse_known_args([str(arg) for arg in argv])
    except argparse.ArgumentError:  # `--ckpt_path` without its value: the parser's to answer
        return None
    if given.subcommand not in ("validate", "test", "predict") or given.config or given.ckpt_path is None:
        return None
    checkpoint = Path(given.ckpt_path)
    run_config = checkpoint.parent.parent / "config.yaml"
    return (given.subcommand, run_config) if checkpoint.parent.name == "checkpoints" and run_config.is_file() else None


def logger_args(config: Namespace) -> Namespace | None:
    """The ``init_args`` of the configured logger when it writes under ``save_dir/name/version`` (TensorBoard, CSV)."""
    logger = config.trainer.get("logger")
    if not isinstance(logger, Namespace) or not isinstance(logger.get("class_path"), str):
        return None
    # Others may take the same three arguments in other senses: WandbLogger's version is a run id (a str).
    kind = import_object(logger.class_path)  # the parser has imported it already
    versioned = isinstance(kind, type) and issubclass(kind, (TensorBoardLogger, CSVLogger))
    return logger.get("init_args") if versioned else None


class RunChoice:
    """Resolves the checkpoint a command starts from and claims its run directory (released if the command fails)."""

    def __init__(self) -> None:
        self.subcommand = "fit"
        self.identity: Callable[[], dict[str, Any]] = dict  # the config's run identity, given to `choose`
        self.claimed: Path | None = None  # the run directory this command created
        self.created: list[Path] = []  # the directories above it that it created
        self.loaded: tuple[str, dict[str, Any]] | None = None  # the earlier run's checkpoint chosen, as read

    def __enter__(self) -> RunChoice:
        return self

    def __exit__(self, error_type: type[BaseException] | None, *_: object) -> None:
        if error_type is not None:
            self.release()

    def choose(self, config: Namespace, subcommand: str, identity: Callable[[], dict[str, Any]]) -> None:
        """Sets ``config.ckpt_path`` (for ``last`` or none) and the logger's new ``version``; ``identity`` is lazy."""
        self.subcommand, self.identity = subcommand, identity
        logger = logger_args(config)
        inherited = os.environ.get(RUN_ENV)
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
            if config.ckpt_path == "last":
                raise UserInputError(
                    "--ckpt_path last looks through the runs a logger writes (runs/<name>/version_N/), and"
                    " trainer.logger is off: give the checkpoint file itself (<dir>/checkpoints/last.ckpt)"
                )
            return
        root = Path(logger.save_dir or ".") / str(logger.name or "")
        if config.ckpt_path == "last" and self.subcommand == "fit":
            config.ckpt_path = self._last_of_this_configuration(config, root)
        elif evaluating or config.ckpt_path == "last":
            config.ckpt_path = self._newest_fit(config, root, finished=evaluating)
        if logger.version is None and rank_zero_only.rank == 0:
            self.created = [p for p in (root, *root.parents) if not p.exists()]  # removed again if empty
            logger.version = claim_version(root)
            self.claimed = root / f"version_{logger.version}"
        os.environ[RUN_ENV] = json.dumps([logger.version, config.ckpt_path])

    def _earlier(self, config: Namespace, root: Path) -> tuple[list[EarlierRun], int]:
        max_epochs, max_steps = config.trainer.max_epochs, config.trainer.max_steps
        if max_epochs is None and max_steps in (None, -1):
            max_epochs = 1000  # Lightning's default
        return earlier_runs(root, self.identity(), max_epochs, -1 if max_steps is None else max_steps)

    def _last_of_this_configuration(self, config: Namespace, root: Path) -> str | None:
        runs, others = self._earlier(config, root)
        elsewhere = f" ({others} run{'s' if others != 1 else ''} of other settings left alone)" if others else ""
        if not runs:
            say(f"--ckpt_path last: no earlier run of this configuration in {root}{elsewhere}; starting afresh")
            return None
        newest = runs[0]
        if newest.finished:
            further = (
                ": its early stopping ended it"
                if newest.stopped_early
                else ". Raise trainer.max_epochs or max_steps to train it further"
            )
            raise NothingToDo(
                f"already finished: {newest.directory} (epoch {newest.epoch}, step {newest.steps}); nothing was"
                f" trained or written{further}"
            )
        say(f"--ckpt_path last: resuming from {newest.checkpoint_path} (epoch {newest.epoch}, step {newest.steps})")
        self.loaded = str(newest.checkpoint_path), newest.checkpoint
        return str(newest.checkpoint_path)

    def _newest_fit(self, config: Namespace, root: Path, finished: bool) -> str:
        """validate/test/predict: the newest (finished, when no --ckpt_path was given) fit of this configuration."""
        found = [run for run in self._earlier(config, root)[0] if run.finished or not finished]
        given = "no --ckpt_path was given" if finished else "--ckpt_path last"
        which = " finished" if finished else ""
        if not found:
            raise UserInputError(
                f"{self.subcommand} needs trained weights and {given}: {root} holds no{which} fit of this"
                " configuration; give --ckpt_path (a checkpoint file), or fit first"
            )
        say(
            f"{self.subcommand}: {given}; using the newest{which} fit of this configuration, {found[0].checkpoint_path}"
        )
        self.loaded = str(found[0].checkpoint_path), found[0].checkpoint
        return str(found[0].checkpoint_path)

    def release(self) -> None:
        """Removes the run directory this command claimed, unless training saved a checkpoint there."""
        claimed, self.claimed = self.claimed, None
        os.environ.pop(RUN_ENV, None)
        if claimed is None or not claimed.is_dir() or any(claimed.rglob("*.ckpt")):
            return
        shutil.rmtree(claimed, ignore_errors=True)
        for directory in self.created:  # deepest first; only those this command created, and only when empty
            with contextlib.suppress(OSError):
                directory.rmdir()


def refuse_used_log_dir(log_dir: str | None) -> None:
    """Refuses a fit that would write into the directory of an earlier run (where its config.yaml would go)."""
    if log_dir is not None and (Path(log_dir) / "config.yaml").exists():
        raise UserInputError(
            f"{log_dir} already holds a run (its config.yaml); give this one a directory of its own:"
            " leave trainer.logger.init_args.version unset for a new version_N, or, without a logger, set"
            " another trainer.default_root_dir"
        )
