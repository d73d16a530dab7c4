"""What the command line prints when it stops: one short line and an exit status, no traceback.

``ShortErrorParser`` answers a parse error in one line (an unknown key with the nearest valid ones); later errors
are answered by their type alone (``find_user_error``). Anything else is a bug and keeps its traceback.
"""

from __future__ import annotations

import argparse
import contextlib
import difflib
import errno
import os
import re
import signal
import stat
import sys
from collections.abc import Iterable
from contextvars import ContextVar
from typing import Any, NoReturn

import torch.distributed
import yaml
from jsonargparse import ArgumentParser, Namespace, get_loader, set_loader
from jsonargparse.typing import import_object
from lightning.fabric.utilities.exceptions import MisconfigurationException
from lightning.pytorch import Callback, Trainer
from lightning.pytorch.cli import LightningArgumentParser
from lightning.pytorch.utilities import rank_zero_only

from linreg.constraints import CONFIG, described, rule_key
from linreg.help import ShortHelp
from linreg.instantiation import KeyedInstantiator
from linreg.validation import UserInputError, check_regular_file, check_yaml_expansion


class NothingToDo(Exception):  # noqa: N818 (not an error: the command line exits 0)
    """The command has nothing to do (the run it would continue is finished); the message says why."""


class RunStopped(Exception):  # noqa: N818 (an outcome, not a fault of the input)
    """A run that ended without a result to stand behind (diverged, or stopped by a signal): not refused input.

    A signal's ``exit_status`` is 128 + its number, as a shell reports it.
    """

    exit_status = 1  # the input was accepted; the run failed

    def __init__(self, message: str, exit_status: int | None = None) -> None:
        super().__init__(message)
        self.exit_status = exit_status or self.exit_status


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
    """jsonargparse's error message as one line, without its union types' lines about each alternative.

    Example:
        >>> condense('Parser key "data":\\n  Does not validate against any of the Union subtypes\\n  - Got value: 0')
        'Parser key "data": Got value: 0'
    """
    lines = [line.strip() for line in message.splitlines()]
    return " ".join(line.removeprefix("- ") for line in lines if line and not line.startswith(_NOISE))


# A quoted or bracketed value longer than this is cut in messages: a 2 MB list makes no readable line.
_LONGEST_VALUE = 80
_VALUE = re.compile(rf"\[[^\[\]]{{{_LONGEST_VALUE},}}\]?|'[^'\"]{{{_LONGEST_VALUE},}}'|\"[^\"']{{{_LONGEST_VALUE},}}\"")


def fail(prog: str, message: str, hint: str = "", status: int = 2) -> NoReturn:
    """Prints ``prog: error: message`` (one line, long values cut) and a hint line to stderr; exits with ``status``."""
    cut = lambda match: f"{match.group(0)[: _LONGEST_VALUE - 20]}... ({len(match.group(0))} characters)"  # noqa: E731
    line = one_line(_VALUE.sub(cut, message), limit=399 - len(prog) - len(": error: "))
    print(f"{prog}: error: {line}" + (f"\n{hint}" if hint else ""), file=sys.stderr)
    raise SystemExit(status)


def one_line(message: str, limit: int = 300) -> str:
    """``message`` with its lines joined and cut to ``limit`` characters."""
    text = " ".join(line.strip() for line in message.splitlines() if line.strip())
    return text if len(text) <= limit else text[: limit - 3] + "..."


def causes(exc: BaseException) -> list[BaseException]:
    """``exc`` followed by its cause (or context), that one's, and so on."""
    chain: list[BaseException] = []
    current: BaseException | None = exc
    while current is not None and all(current is not seen for seen in chain):
        chain.append(current)
        current = current.__cause__ or current.__context__
    return chain


def find_user_error(exc: BaseException) -> UserInputError | RunStopped | None:
    """The one-line answer to ``exc``, found in its chain of causes (jsonargparse and Lightning wrap errors)."""
    chain = causes(exc)
    found = next((error for error in chain if isinstance(error, (UserInputError, RunStopped))), None)
    if found is not None:
        return found
    for error in chain:
        if isinstance(error, MisconfigurationException):
            return UserInputError(one_line(str(error)))
        if isinstance(error, OSError) and error.errno in (errno.ENOSPC, errno.EDQUOT):  # files written are whole
            return UserInputError(f"{error.filename or 'writing the run'}: {error.strerror}; free some space and rerun")
        if isinstance(error, OSError) and error.filename is not None:
            return UserInputError(f"{error.filename}: {error.strerror or one_line(str(error))}")
        if isinstance(error, torch.distributed.DistError):
            return UserInputError(f"trainer: the processes of the run could not work together: {one_line(str(error))}")
    return None


class StopStartedProcesses(Callback):
    """On an error in a Trainer's command, the first process stops those it started (DDP): the run is over, and
    each would report it, or only that it lost its peers. Lightning does so itself only for KeyboardInterrupt."""

    def on_exception(self, trainer: Trainer, pl_module: Any, exception: BaseException) -> None:
        launcher = trainer.strategy.launcher
        # An Exception, not a signal's stop (a BaseException), which every process answers together.
        if isinstance(exception, Exception) and launcher is not None and rank_zero_only.rank == 0:
            launcher.kill(getattr(signal, "SIGKILL", signal.SIGTERM))


def exit_for(exc: BaseException) -> NoReturn:
    """Exits in one line for an error about the input (from the first process only); re-raises a bug."""
    user_error = find_user_error(exc)
    if user_error is None:
        raise exc
    if rank_zero_only.rank != 0:
        raise SystemExit(user_error.exit_status) from None
    fail("linreg", str(user_error), status=user_error.exit_status)


class UnknownOptionError(KeyError):
    """A key that no argument of a parser takes, with the parser's nearest keys (``nearest_keys``)."""

    def __init__(self, key: str, near: list[str], of: str | None = None) -> None:
        super().__init__(f"Option '{key}' is not accepted")
        self.key, self.near, self.of = key, near, of  # `of`: the class whose arguments these are

    def __str__(self) -> str:  # as jsonargparse's own key errors: without KeyError's quotes
        return str(self.args[0])


def nearest_keys(key: str, valid: Iterable[str]) -> list[str]:
    """The valid keys ``key`` may be a misspelling or abbreviation of: within its group, then whole, then by last part.

    Example:
        >>> nearest_keys("learning_rate", ["lr", "momentum", "dampening"])
        ['lr']
        >>> nearest_keys("trainer.max_epoch", ["trainer.max_epochs", "trainer.min_epochs", "max_epoch_x"])
        ['trainer.max_epochs', 'trainer.min_epochs']
        >>> nearest_keys("optimizer", ["seed_everything", "model.optimizer", "model.scheduler"])
        ['model.optimizer']
    """
    valid = sorted(set(valid))
    group, _, leaf = key.rpartition(".")
    siblings = [k for k in valid if k.rpartition(".")[0] == group]
    return near_by_leaf(leaf, siblings) or difflib.get_close_matches(key, valid, n=3) or near_by_leaf(leaf, valid)


def near_by_leaf(leaf: str, keys: list[str]) -> list[str]:
    """The ``keys`` whose last part is close to ``leaf``, or made of its words' initials, or it of theirs."""
    leaves = sorted({k.rpartition(".")[2] for k in keys})
    initials = lambda name: "".join(word[0] for word in name.split("_") if word)  # noqa: E731 (learning_rate: lr)
    near = difflib.get_close_matches(leaf, leaves, n=3)
    near += [
        n for n in leaves if n == leaf or ("_" in n and leaf == initials(n)) or ("_" in leaf and n == initials(leaf))
    ]
    return [k for name in dict.fromkeys(near) for k in keys if k.rpartition(".")[2] == name]


# Whether a ShortErrorParser is building the config's classes: nested classes' parsers build theirs inside that
# call, through the outermost parser's instantiator, which knows the whole config's keys.
_BUILDING: ContextVar[bool] = ContextVar("linreg_building", default=False)


def refuse_special_files(value: Any) -> Any:
    """``value`` unchanged, unless it, or a string in it, names a FIFO, a device or a socket.

    jsonargparse opens a value naming a file as a config of its own, and a FIFO waits for a writer forever.
    """
    if isinstance(value, dict):
        value = {key: refuse_special_files(item) for key, item in value.items()}
    elif isinstance(value, list):
        value = [refuse_special_files(item) for item in value]
    elif isinstance(value, str) and value:
        mode = 0
        with contextlib.suppress(OSError, ValueError):  # no such file (most values), or no path at all
            mode = os.stat(value).st_mode
        if mode and not stat.S_ISREG(mode) and not stat.S_ISDIR(mode):
            check_regular_file(value)  # raises, naming what it is
    return value


# jsonargparse's YAML loader, for config files and values alike, after the check on alias expansion.
_YAML_LOAD = get_loader("yaml")
set_loader(
    "yaml_bounded",
    lambda s: refuse_special_files((check_yaml_expansion(s), _YAML_LOAD(s))[1]),
    exceptions=(yaml.YAMLError,),
)


class ShortErrorParser(LightningArgumentParser):
    """A LightningArgumentParser whose errors, also while it builds the config's classes, are one line."""

    def __init__(self, *args: Any, **kwargs: Any) -> None:
        # jsonargparse makes the parsers of `--data.help CLASS` without a prog: argparse would name the script.
        kwargs.setdefault("prog", "linreg")
        kwargs.setdefault("parser_mode", "yaml_bounded")
        # No prefix completion: `--trainer.max_epoch` must be refused as a typo, as `--data.batch` is, not run.
        kwargs.setdefault("allow_abbrev", False)
        add_help = kwargs.pop("add_help", True)
        super().__init__(*args, add_help=False, **kwargs)
        if add_help:
            self.add_argument("-h", "--help", action=ShortHelp, default=argparse.SUPPRESS, help=ShortHelp.help)
            self.add_argument("--help-all", action="help", help="Show every option and exit.")
        self.class_groups: dict[str, type] = {}  # the class groups (`last`, `checkpoint`) and what each builds

    def format_help(self) -> str:
        # --help-all and --data.help CLASS: each constrained argument's help ends with its rule, from the one table.
        for action in self._actions:
            if action.help != argparse.SUPPRESS:
                action.help = described(rule_key(action.dest), action.help or "")
        return super().format_help()

    def _get_value(self, action: argparse.Action, arg_string: str) -> Any:
        # argparse's step for each value of the command line, before jsonargparse's action may open it as a config.
        # (Its type registry is no hook: every jsonargparse argument group registers its own type afresh.)
        try:
            if action.nargs != argparse.PARSER:  # a subcommand's arguments: its own parser's, named there
                refuse_special_files(arg_string)
        except UserInputError as error:
            raise argparse.ArgumentError(action, str(error)) from None
        return super()._get_value(action, arg_string)

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

    def validate(self, namespace: Namespace, *args: Any, **kwargs: Any) -> None:
        try:
            super().validate(namespace, *args, **kwargs)
        except KeyError as error:
            # Namespace.keys(): the nested leaf keys (`trainer.max_epochs`), which iterating it does not give.
            given = namespace.keys()
            key = next((k for k in given if "__" not in k and not self.accepts(k)), None)
            if key is None or isinstance(error, UnknownOptionError):
                raise
            parser, key = self.owner_of(key)
            # A configured class's parser (jsonargparse's, not exiting on errors) has one group: the class's.
            of = None if self.exit_on_error else next(iter(self.groups), None)
            raise UnknownOptionError(key, nearest_keys(key, parser.option_keys()), of) from error

    def owner_of(self, key: str) -> tuple[ShortErrorParser, str]:
        """The (sub)command parser a config key is for, and the key there: ``fit.trainer.x`` -> fit's, ``trainer.x``."""
        head, _, rest = key.partition(".")
        sub = self._subcommands_action.choices.get(head) if self._subcommands_action else None
        return sub.owner_of(rest) if isinstance(sub, ShortErrorParser) and rest else (self, key)

    def option_keys(self) -> list[str]:
        """The config keys this parser's arguments take (``trainer.max_epochs``, ``data``), not ``--data.help``'s."""
        return [a.dest for a in self._actions if a.dest != argparse.SUPPRESS and a.dest.rpartition(".")[2] != "help"]

    def accepts(self, key: str) -> bool:
        """Whether some argument of this parser, or of its subcommand's, takes the config key ``key``."""
        parser, key = self.owner_of(key)
        if parser is not self:
            return parser.accepts(key)
        keys = self.option_keys()
        # `data.x` is for the class `data` names when no argument of this parser has its own `data.` keys.
        own = lambda d: any(k.startswith(f"{d}.") for k in keys)  # noqa: E731
        return key in keys or any(key.startswith(f"{d}.") and not own(d) for d in keys)

    def unknown_option(self, ex: Exception | None) -> str | None:
        """``unknown option --x; did you mean --y?`` for the first option given that no argument takes, if any."""
        given = [arg.split("=", 1)[0] for arg in getattr(self, "args", None) or [] if arg.startswith("--")]
        known = next((e for e in causes(ex) if isinstance(e, UnknownOptionError)), None) if ex is not None else None
        if known is not None:
            option = next((o for o in given if o.endswith((f".{known.key}", f"--{known.key}"))), None)
            if option is None:  # from a config file: its key as written there
                of = f" of {known.of}" if known.of else ""
                return f"unknown option '{known.key}'{of} in the config" + did_you_mean(known.near)
            prefix = option[: -len(known.key)]
            return f"unknown option {option}" + did_you_mean([prefix + key for key in known.near])
        if self._subcommands_action is not None:
            return None
        options = {o.rstrip("+") for o in given}
        unknown = next((o for o in options if not self.accepts(o[2:].rstrip("+"))), None)
        if unknown is None:
            return None
        near = nearest_keys(unknown[2:], self.keys_one_class_deep())
        return f"unknown option {unknown}" + did_you_mean(["--" + k for k in near])

    def keys_one_class_deep(self) -> list[str]:
        """This parser's keys, and those of the classes its class arguments default to (``model.optimizer``)."""
        keys = self.option_keys()
        for key, value in self.get_defaults().items(branches=True):
            if isinstance(value, Namespace) and isinstance(value.get("class_path"), str):
                sub = ArgumentParser(add_help=False)
                sub.add_class_arguments(import_object(value.class_path), key)
                keys += [k for k in sub.get_defaults().keys() if k.count(".") == key.count(".") + 1]  # noqa: SIM118
        return keys

    def error(self, message: str, ex: Exception | None = None) -> NoReturn:
        if not self.exit_on_error:  # jsonargparse is trying alternatives and wants the exception back
            super().error(message, ex)
        prog = self.prog.replace(" [options]", "")
        unknown = self.unknown_option(ex)
        if unknown is not None:
            fail(prog, unknown)
        refused = refused_value(ex) if ex is not None else None
        # `python -m`: the form that works without the environment's scripts on the PATH, as in the README.
        fail(prog, refused or condense(message), f"(`python -m {prog} --help` lists the accepted options)")


def refused_value(ex: BaseException) -> str | None:
    """``model.init_std must be a finite number >= 0, got 'nan'``: a value the parser's type refused, by its config
    key (jsonargparse nests one ``Parser key "x"`` per class on the way), with the rule ``constraints.CONFIG`` states
    for it, or else what the type expected."""
    keys: list[str] = []
    chain = causes(ex)
    for error in chain:
        found = re.match(r'Parser key "([^"]+)"', str(error))
        if found and (not keys or keys[-1] != found.group(1)):
            keys.append(found.group(1))
    innermost = str(chain[-1])
    got = re.fullmatch(r"Expected a <class '(\w+)'>\. Got value: (.*)", innermost, re.DOTALL)
    if not keys or got is None:
        return None
    key = ".".join(keys)
    rule = CONFIG.get(rule_key(key) or "")
    kinds = {"int": "an integer", "float": "a number", "bool": "true or false"}
    expected = f"must be {rule or kinds.get(got.group(1), f'a {got.group(1)}')}"
    return f"{key} {expected}, got {got.group(2)!r}"


def did_you_mean(options: list[str]) -> str:
    """``; did you mean --a or --b?``, or nothing without options."""
    return f"; did you mean {' or '.join(options)}?" if options else ""
