"""What the command line prints when it stops: one short line and an exit status, no traceback.

jsonargparse reports a bad value with the full usage (a hundred lines) and, for union types, one error
per alternative type: ``ShortErrorParser`` prints it as one line. A class named by the config that refuses
a value it was given is reported under that config key (``linreg.instantiation``). Errors raised later are
answered the same way when they are about the user's input, which is decided by their type alone: a
``UserInputError`` (ours), a ``MisconfigurationException`` (Lightning's word for the same thing), a file that
cannot be opened, a full disk, or a lost connection between processes. Anything else is a bug and keeps its
traceback.
"""

from __future__ import annotations

import argparse
import errno
import re
import signal
import sys
from contextvars import ContextVar
from typing import Any, NoReturn

import torch.distributed
import yaml
from jsonargparse import Namespace, get_loader, set_loader
from lightning.fabric.utilities.exceptions import MisconfigurationException
from lightning.pytorch import Trainer
from lightning.pytorch.cli import LightningArgumentParser
from lightning.pytorch.utilities import rank_zero_only

from linreg.help import FullHelp
from linreg.instantiation import KeyedInstantiator
from linreg.validation import UserInputError, check_yaml_expansion


class NothingToDo(Exception):  # noqa: N818 (not an error: the command line exits 0)
    """The command has nothing to do (the run it would continue is finished); the message says why."""


class Interrupted(UserInputError):  # noqa: N818 (a state, not a fault)
    """Fit was stopped by SIGTERM or Ctrl-C; the message says where the training state was saved."""

    def __init__(self, message: str, exit_status: int) -> None:
        super().__init__(message)
        self.exit_status = exit_status  # 128 + the signal's number


@rank_zero_only
def say(line: str) -> None:
    """Prints once, from the first process, however many processes train."""
    print(line, flush=True)


# Lines of jsonargparse's union-type errors that say nothing about what the user got wrong.
_NOISE = (
    "Does not validate against any of the Union subtypes",
    "Subtypes:",
    "Errors:",
    "Given value type:",
    "- Expected a <class 'NoneType'>",
)


def condense(message: str) -> str:
    """jsonargparse's error message as one line, without the lines its union types add about each alternative.

    Example:
        >>> condense('Parser key "data":\\n  Does not validate against any of the Union subtypes\\n  - Got value: 0')
        'Parser key "data": Got value: 0'
    """
    lines = [line.strip() for line in message.splitlines()]
    return " ".join(line.removeprefix("- ") for line in lines if line and not line.startswith(_NOISE))


# A quoted or bracketed value longer than this is cut in messages: a 2 MB list makes no readable line.
_LONGEST_VALUE = 80
_VALUE = re.compile(rf"\[[^\[\]]{{{_LONGEST_VALUE},}}\]?|'[^'\"]{{{_LONGEST_VALUE},}}'|\"[^\"']{{{_LONGEST_VALUE},}}\"")


def shorten_values(message: str) -> str:
    """``message`` with each quoted or bracketed value longer than 80 characters cut, saying how long it was.

    Example:
        >>> shorten_values("got " + str([1] * 100))[:40]
        'got [1, 1, 1, 1, 1, 1, 1, 1, 1, 1, 1, 1,'
        >>> len(shorten_values("got " + str([1] * 10_000))) < 150
        True
    """

    def cut(match: re.Match[str]) -> str:
        value = match.group(0)
        return f"{value[: _LONGEST_VALUE - 20]}... ({len(value)} characters)"

    return _VALUE.sub(cut, message)


def fail(prog: str, message: str, hint: str = "", status: int = 2) -> NoReturn:
    """Prints ``prog: error: message`` (and a hint line) to stderr and exits with ``status``.

    The message is one line, its long values cut (``shorten_values``) and the whole held to 400 characters.
    """
    line = one_line(shorten_values(message), limit=399 - len(prog) - len(": error: "))
    print(f"{prog}: error: {line}" + (f"\n{hint}" if hint else ""), file=sys.stderr)
    raise SystemExit(status)


def one_line(message: str, limit: int = 300) -> str:
    """``message`` with its lines joined and cut to ``limit`` characters."""
    text = " ".join(line.strip() for line in message.splitlines() if line.strip())
    return text if len(text) <= limit else text[: limit - 3] + "..."


# A full disk or quota: not the program's fault, and every file written so far is whole; answered in one line.
_DISK_FULL = (errno.ENOSPC, errno.EDQUOT)


def causes(exc: BaseException) -> list[BaseException]:
    """``exc`` followed by its cause (or context), that one's, and so on."""
    chain: list[BaseException] = []
    current: BaseException | None = exc
    while current is not None and all(current is not seen for seen in chain):
        chain.append(current)
        current = current.__cause__ or current.__context__
    return chain


def find_user_error(exc: BaseException) -> UserInputError | None:
    """The error about the user's input that caused ``exc``, as a ``UserInputError``, if there is one.

    Looks through the chain of causes (jsonargparse and Lightning wrap errors) for a ``UserInputError``,
    then for a ``MisconfigurationException``, a full disk, an ``OSError`` naming a file, or a failure of
    ``torch.distributed`` (processes that cannot reach each other, or lost a peer).
    """
    chain = causes(exc)
    for error in chain:
        if isinstance(error, UserInputError):
            return error
    for error in chain:
        if isinstance(error, MisconfigurationException):
            return UserInputError(one_line(str(error)))
        if isinstance(error, OSError) and error.errno in _DISK_FULL:  # the files written so far are whole (atomic)
            return UserInputError(f"{error.filename or 'writing the run'}: {error.strerror}; free some space and rerun")
        if isinstance(error, OSError) and error.filename is not None:
            return UserInputError(f"{error.filename}: {error.strerror or one_line(str(error))}")
        if isinstance(error, torch.distributed.DistError):
            return UserInputError(f"trainer: the processes of the run could not work together: {one_line(str(error))}")
    return None


def stop_started_processes(trainer: Any) -> None:
    """Stops the processes this one started (DDP): with it failed the run is over, and each would report it."""
    launcher = trainer.strategy.launcher if isinstance(trainer, Trainer) else None
    if launcher is not None and rank_zero_only.rank == 0:
        launcher.kill(getattr(signal, "SIGKILL", signal.SIGTERM))


def exit_for(exc: BaseException) -> NoReturn:
    """Exits in one line for an error about the input; re-raises ``exc`` (a bug, with its traceback) otherwise.

    Under DDP only the first process prints: it stops the processes it started, which would each report the
    same error, or only that they lost it.
    """
    user_error = find_user_error(exc)
    if user_error is None:
        raise exc
    if rank_zero_only.rank != 0:
        raise SystemExit(user_error.exit_status) from None
    fail("linreg", str(user_error), status=user_error.exit_status)


# Whether a ShortErrorParser is building the config's classes: the parsers of nested classes build theirs
# inside that call, through the outermost parser's instantiator, which knows the whole config's keys.
_BUILDING: ContextVar[bool] = ContextVar("linreg_building", default=False)


# jsonargparse's YAML loader, for config files and values alike, after the check on alias expansion.
_YAML_LOAD = get_loader("yaml")
set_loader("yaml_bounded", lambda s: (check_yaml_expansion(s), _YAML_LOAD(s))[1], exceptions=(yaml.YAMLError,))


class ShortErrorParser(LightningArgumentParser):
    """A LightningArgumentParser whose errors are one line instead of the usage and a nested report.

    Errors about the input raised while the config's classes are built are one line too, naming the config
    key (``linreg.instantiation``).
    """

    def __init__(self, *args: Any, **kwargs: Any) -> None:
        # jsonargparse makes the parsers of `--data.help CLASS` without a prog: argparse would name the script.
        kwargs.setdefault("prog", "linreg")
        kwargs.setdefault("parser_mode", "yaml_bounded")
        add_help = kwargs.pop("add_help", True)
        super().__init__(*args, add_help=False, **kwargs)
        if add_help:
            self.add_argument("-h", "--help", action=FullHelp, default=argparse.SUPPRESS, help=FullHelp.help)
        self.class_groups: dict[str, type] = {}  # the class groups (`last`, `checkpoint`) and what each builds

    def add_lightning_class_args(self, lightning_class: Any, nested_key: str, *args: Any, **kwargs: Any) -> list[str]:
        if isinstance(lightning_class, type):
            self.class_groups[nested_key] = lightning_class
        return super().add_lightning_class_args(lightning_class, nested_key, *args, **kwargs)

    def instantiate(self, cfg: Namespace, instantiate_groups: bool = True, **kwargs: Any) -> Namespace:
        # With subcommands, the subcommand's parser builds the classes (its config has the keys the user gives).
        if _BUILDING.get() or cfg.get("subcommand"):
            return super().instantiate(cfg, instantiate_groups, **kwargs)
        ours = (KeyedInstantiator(cfg, self.class_groups), object, True)
        token = _BUILDING.set(True)
        try:
            return super().instantiate(
                cfg, instantiate_groups, instantiators=[ours, *(kwargs.pop("instantiators", None) or [])]
            )
        finally:
            _BUILDING.reset(token)

    def error(self, message: str, ex: Exception | None = None) -> NoReturn:
        if not self.exit_on_error:  # jsonargparse is trying alternatives and wants the exception back
            super().error(message, ex)
        prog = self.prog.replace(" [options]", "")
        # `python -m`: the form that works without the environment's scripts on the PATH, as in the README.
        fail(prog, condense(message), f"(`python -m {prog} --help` lists the accepted options)")
