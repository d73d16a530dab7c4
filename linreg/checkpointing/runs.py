"""Run directories: which earlier run a command continues, a new ``version_N`` claimed atomically, and the
``last.ckpt`` kept current during fit (weights, optimizer, loop counters, the loader's position) to resume from.

A run's *identity* is its resolved ``config.yaml`` less what only names or paces the output (``OUTPUT_KEYS``) and
how long it trains (``LENGTH_KEYS``): runs of one identity may continue each other, and no other. Whether a run is
finished is judged against this command's length, as Lightning's fit loop does.
"""

from __future__ import annotations

import contextlib
import urllib.parse
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import yaml
from lightning.pytorch import LightningModule, Trainer
from lightning.pytorch.callbacks import Checkpoint

from linreg.checkpointing.io import load_safely
from linreg.constraints import COUNT, check
from linreg.data.sources import is_remote
from linreg.validation import UserInputError, bounded_yaml_load, check_regular_file

# Config keys that name, pace or display the output, or choose the checkpoint: not part of a run's identity.
OUTPUT_KEYS = (
    "ckpt_path", "weights_only", "verbose", "return_predictions", "checkpoint", "last",
    "trainer.logger", "trainer.default_root_dir", "trainer.enable_progress_bar", "trainer.enable_model_summary",
    "trainer.enable_checkpointing", "trainer.log_every_n_steps", "trainer.num_sanity_val_steps", "trainer.profiler",
    "trainer.plugins", "trainer.limit_test_batches", "trainer.limit_predict_batches",
    "data.init_args.eval_batch_size", "data.init_args.predict_path",
)  # fmt: skip
# How long to train: a run continues under a longer budget.
LENGTH_KEYS = ("trainer.max_epochs", "trainer.max_steps", "trainer.max_time", "trainer.min_epochs", "trainer.min_steps")


def _flatten(value: Any, prefix: str = "") -> dict[str, Any]:
    """``{"a.b": value}`` for nested mappings."""
    if isinstance(value, dict):
        return {k: v for key, item in value.items() for k, v in _flatten(item, f"{prefix}{key}.").items()}
    return {prefix.removesuffix("."): _unset_left_out(value)}


def _unset_left_out(value: Any) -> Any:
    """``value`` without the ``None`` entries of the mappings in it (a list of callbacks' arguments, say)."""
    if isinstance(value, dict):
        return {key: _unset_left_out(item) for key, item in value.items() if item is not None}
    return [_unset_left_out(item) for item in value] if isinstance(value, list) else value


def run_identity(config: dict[str, Any]) -> dict[str, Any]:
    """The flat config values that make a run what it is (see the module docstring); unset (None) values left out.

    Example:
        >>> run_identity({"ckpt_path": "x", "trainer": {"max_epochs": 3, "devices": 1}, "data": {"seed": 0}})
        {'trainer.devices': 1, 'data.seed': 0}
    """
    ignored = (*OUTPUT_KEYS, *LENGTH_KEYS)
    return {
        key: value
        for key, value in _flatten(config).items()
        if value is not None and not any(key == k or key.startswith(k + ".") for k in ignored)
    }


def run_identity_of(dumped: str, subcommand: str | None) -> dict[str, Any]:
    """The run identity of a command from its parser's dump of the config (as ``config.yaml`` is written)."""
    config = yaml.safe_load(dumped)
    config = config.get(subcommand, config) if subcommand else config
    return run_identity({k: v for k, v in config.items() if k != "config"})


def differences(theirs: dict[str, Any], ours: dict[str, Any], limit: int = 3) -> list[str]:
    """``["data.init_args.batch_size 10 there, 20 here", ...]``: the identity keys that differ, at most ``limit``."""
    keys = sorted(k for k in theirs.keys() | ours.keys() if theirs.get(k) != ours.get(k))
    short = lambda value: repr(value) if len(repr(value)) <= 40 else repr(value)[:37] + "..."  # noqa: E731
    shown = [f"{k.replace('.init_args', '')} {short(theirs.get(k))} there, {short(ours.get(k))} here" for k in keys]
    return shown[:limit] + ([f"{len(keys) - limit} more"] if len(keys) > limit else [])


def read_run_config(run_dir: Path) -> dict[str, Any] | None:
    """The ``config.yaml`` a run saved, or ``None`` where there is none, or it is no regular file or unreadable."""
    path = run_dir / "config.yaml"
    try:
        check_regular_file(path)  # before opening: opening a FIFO waits for a writer
        config = bounded_yaml_load(path.read_text())
    except Exception:  # a damaged or foreign file: not a run this project can continue
        return None
    return config if isinstance(config, dict) else None


def config_differences(checkpoint: Path, identity: dict[str, Any]) -> list[str]:
    """What differs between ``identity`` and that of the run ``checkpoint`` belongs to, where it saved one."""
    if checkpoint.parent.name != "checkpoints":
        return []
    config = read_run_config(checkpoint.parent.parent)
    return [] if config is None else differences(run_identity(config), identity)


def progress(checkpoint: Any) -> tuple[int, int, int]:
    """``(epochs completed, steps taken, epoch)`` of a full checkpoint, each an integer >= 0, as Lightning counts."""
    entries = ("loops.fit_loop.epoch_progress.current.processed", "global_step", "epoch")
    counts = []
    for entry in entries:
        value = checkpoint
        for key in entry.split("."):
            value = value.get(key) if isinstance(value, dict) else None
        counts.append(COUNT.check(entry, value))
    return counts[0], counts[1], counts[2]


@dataclass
class EarlierRun:
    """A run of the same identity found under the runs root, with its ``last.ckpt`` and whether it is finished."""

    directory: Path
    checkpoint_path: Path
    epoch: int  # the epoch the checkpoint was taken in, counted from 1 as the console's epoch lines count
    steps: int
    finished: bool
    stopped_early: bool  # a callback (EarlyStopping) ended it: it is finished whatever the limits
    checkpoint: dict[str, Any]  # as read (weights-only): the command that continues it need not read it again


def earlier_runs(
    root: Path, identity: dict[str, Any], max_epochs: int | None, max_steps: int
) -> tuple[list[EarlierRun], int]:
    """The readable runs under ``root`` with this ``identity``, newest ``last.ckpt`` first, and how many others."""
    same, others = [], 0
    for last in root.glob("*/checkpoints/last.ckpt"):
        run_dir = last.parent.parent
        config = read_run_config(run_dir)
        if config is None or run_identity(config) != identity:
            others += 1
            continue
        try:
            checkpoint = load_safely(last)
            epochs, steps, epoch = progress(checkpoint)
        except UserInputError as error:
            raise UserInputError(
                f"{last}, the last checkpoint of an earlier run of this configuration: {error}; move it away to"
                " start afresh"
            ) from None
        # Whether fit under these limits would train no further from it (Lightning's FitLoop.done), or an
        # EarlyStopping stopped it: its saved state would stop a resumed fit again, before it validates.
        stopped = any(
            isinstance(state, dict) and state.get("stopping_reason", 0) != 0
            for state in (checkpoint.get("callbacks") or {}).values()
        )
        limit = (max_steps >= 0 and steps >= max_steps) or (max_epochs is not None and 0 <= max_epochs <= epochs)
        finished = stopped or limit
        run = EarlierRun(run_dir, last, epoch + 1, steps, finished, stopped, checkpoint)
        with contextlib.suppress(OSError):  # Lightning counts epochs from 0, the console's epoch lines from 1
            same.append((last.stat().st_mtime_ns, run))
    same.sort(key=lambda pair: (pair[0], str(pair[1].directory)), reverse=True)
    return [run for _, run in same], others


def claim_version(root: Path) -> int:
    """Creates ``root/version_N`` for the next free N and returns N; ``mkdir`` makes the claim atomic."""
    root.mkdir(parents=True, exist_ok=True)
    while True:
        taken = [int(p.name[8:]) for p in root.iterdir() if p.name.startswith("version_") and p.name[8:].isdigit()]
        version = max(taken, default=-1) + 1
        try:
            (root / f"version_{version}").mkdir()
        except FileExistsError:  # another process claimed it between the listing and now
            continue
        return version


def refuse_remote_run_dir(trainer: Any) -> None:
    """Refuses a URI (``s3://``) as run directory: claiming and finding runs need a file system (``file://`` is one)."""
    logger = trainer.get("logger")
    arguments = logger.get("init_args") if hasattr(logger, "get") else None
    places = {"trainer.default_root_dir": (trainer, "default_root_dir")}
    if hasattr(arguments, "get"):
        places["trainer.logger.init_args.save_dir"] = (arguments, "save_dir")
    for key, (holder, name) in places.items():
        value = holder.get(name)
        if isinstance(value, str) and value.startswith("file://"):  # a local directory, written as a URI
            holder[name] = value = urllib.parse.unquote(urllib.parse.urlparse(value).path)
        if isinstance(value, str) and is_remote(value):
            raise UserInputError(
                f"{key}: {value}: runs (checkpoints, config.yaml, the report) are written to a directory; give a"
                " local one, or a bucket mounted as one (s3fs, gcsfuse): a URI is not accepted here"
            )


def checkpoint_dir(trainer: Trainer) -> Path:
    """This run's checkpoint directory, ``<save_dir>/<name>/<version>/checkpoints``, as ``ModelCheckpoint`` has it."""
    if not trainer.loggers:
        return Path(trainer.default_root_dir) / "checkpoints"
    logger = trainer.loggers[0]
    version = logger.version if isinstance(logger.version, str) else f"version_{logger.version}"
    return Path(logger.save_dir or trainer.default_root_dir) / str(logger.name) / version / "checkpoints"


class LastCheckpoint(Checkpoint):
    """Keeps ``last.ckpt`` current: every ``every_n_train_steps`` steps, at the end of every epoch and of fit.

    Never over an earlier file (``last-v1.ckpt``). Not ``ModelCheckpoint(save_last=True)``: it may save before an
    epoch's validation (a resume skips it), defers step saves until a monitored metric exists, and rewrites
    ``last.ckpt`` at an epoch end only with a new top-k file.

    Args:
        every_n_train_steps: training steps between two writes.
    """

    def __init__(self, every_n_train_steps: int = 500) -> None:
        self.every_n_train_steps = check("last.every_n_train_steps", every_n_train_steps)
        self.path: Path | None = None
        self._saved_step = 0  # nothing to save before the first step
        self._step_before_batch = 0

    def setup(self, trainer: Trainer, pl_module: LightningModule, stage: str) -> None:
        if stage != "fit":
            return
        directory = checkpoint_dir(trainer)
        path, version = directory / "last.ckpt", 0
        while path.exists():
            version += 1
            path = directory / f"last-v{version}.ckpt"
        self.path = Path(trainer.strategy.broadcast(str(path)))  # rank zero's view of the file system

    def on_train_batch_start(self, trainer: Trainer, pl_module: LightningModule, batch: Any, batch_idx: int) -> None:
        self._step_before_batch = trainer.global_step

    def on_train_batch_end(
        self, trainer: Trainer, pl_module: LightningModule, outputs: Any, batch: Any, batch_idx: int
    ) -> None:
        # "Passes a multiple of N" rather than "is one": a batch can hold several steps (a model with manual
        # optimization) or none (gradient accumulation).
        n = self.every_n_train_steps
        passed_multiple = trainer.global_step // n > self._step_before_batch // n
        end_of_epoch = batch_idx + 1 >= trainer.num_training_batches
        # At max_steps, fit ends here: saved now, before any end-of-fit callback changes the weights.
        if (passed_multiple and not end_of_epoch) or trainer.global_step == trainer.max_steps:
            self._save(trainer)

    def on_train_epoch_end(self, trainer: Trainer, pl_module: LightningModule) -> None:
        # With max_steps set, Lightning takes a checkpoint from this hook for one interrupted inside it and
        # runs the epoch-end hooks again on resume; there the steps (and the end of fit) are what is saved.
        if trainer.max_steps == -1:
            self._save(trainer)

    def on_train_end(self, trainer: Trainer, pl_module: LightningModule) -> None:
        self._save(trainer)

    def _save(self, trainer: Trainer) -> None:
        if (
            self.path is None
            or trainer.sanity_checking
            or trainer.fast_dev_run
            or trainer.global_step == self._saved_step
        ):
            return
        # The full state (weights_only=False: not the weights alone); every rank takes part, rank zero writes.
        trainer.save_checkpoint(self.path, weights_only=False)
        self._saved_step = trainer.global_step
