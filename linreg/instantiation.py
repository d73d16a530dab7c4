"""Building the objects a config names, each error about the input reported as that config key's.

jsonargparse builds every class the config names (the model, the data module, the callbacks of
``trainer.callbacks``, the ``last`` and ``checkpoint`` groups, the logger, and the optimizer when the model
calls its factory) through one instantiator. ``KeyedInstantiator`` is that instantiator: it calls the class
as jsonargparse would and, when the class refuses a value it was given, raises a ``UserInputError`` that
names the config key (``data.batch_size must be ...``, ``model.optimizer: Invalid momentum value ...``).
The classes name only their own arguments; the key is added here, in one place.

Which exceptions are about the input is decided by type (``is_input_error``); any other exception is a
bug in the program and keeps its traceback. Some classes check their arguments only once the command runs
(a scheduler's ``step_size`` 0 at its first step, EarlyStopping's metric at the first validation, the fit
loop's ``val_check_interval``): ``run_error_key`` answers those as the key of the object that raised them.
"""

from __future__ import annotations

import inspect
import re
from collections.abc import Mapping
from pathlib import Path
from typing import Any

import lightning.pytorch
from jsonargparse import Namespace
from lightning.fabric.utilities.exceptions import MisconfigurationException

from linreg.validation import UserInputError

_PACKAGE = Path(__file__).resolve().parent


class ConfigKeyError(UserInputError):
    """A class named by the config refused a value it was given; the message starts with the config key."""


def is_input_error(error: BaseException) -> bool:
    """Whether ``error``, caught where a class named by the config was called, is about the values it was given.

    Our classes check their arguments and raise ``UserInputError``; Lightning raises
    ``MisconfigurationException``; torch and Lightning follow Python's convention of ``ValueError`` or
    ``TypeError`` (``OverflowError`` for a number out of range) for a bad argument. Those count when no code
    of this package ran between the call and the raise: our signatures are typed, so the parser has checked
    every value's type, and our checks raise ``UserInputError``; a ``ValueError`` passing through our code is a
    check we lack, a bug. A file that cannot be opened (an ``OSError`` naming it) is input too. Anything else
    (``AttributeError``, ``KeyError``, ``RuntimeError``, ...) is a bug and keeps its traceback.
    """
    if isinstance(error, (UserInputError, MisconfigurationException)):
        return True
    if isinstance(error, OSError):
        return error.filename is not None
    return isinstance(error, (ValueError, TypeError, OverflowError)) and not _through_package(error)


def _through_package(error: BaseException) -> bool:
    """Whether code of this package ran between the frame that caught ``error`` and the raise."""
    frame = error.__traceback__.tb_next if error.__traceback__ is not None else None
    while frame is not None:
        if Path(frame.tb_frame.f_code.co_filename).resolve().is_relative_to(_PACKAGE):
            return True
        frame = frame.tb_next
    return False


class KeyedInstantiator:
    """A jsonargparse instantiator that reports a class's refusal of its arguments as the config key's error.

    Args:
        config: the parsed config the classes are built from (the subcommand's).
        groups: the keys of the parser's class groups (``last``, ``checkpoint``) and the class each builds.
    """

    def __init__(self, config: Namespace, groups: Mapping[str, type]) -> None:
        self.config = config
        self.groups = dict(groups)

    def __call__(self, class_type: type, *args: Any, **kwargs: Any) -> Any:
        try:
            return class_type(*args, **kwargs)
        except Exception as error:
            if isinstance(error, ConfigKeyError) or not is_input_error(error):
                raise
            key = config_key(self.config, class_type, self.groups)
            raise ConfigKeyError(keyed_message(key, str(error), class_type)) from error


def config_key(config: Namespace, class_type: type, groups: Mapping[str, type] | None = None) -> str:
    """The key of ``config`` that names ``class_type``: ``data``, ``model.optimizer``, ``trainer.callbacks[1]``.

    The first match is taken; the class's name when no key names it.
    """
    for key, group_class in (groups or {}).items():
        if group_class is class_type:
            return key
    return _find(config, class_type, "") or class_type.__name__


def _find(value: Any, class_type: type, key: str) -> str | None:
    """Depth-first search of ``value`` for a ``class_path`` naming ``class_type``; its key without ``init_args``."""
    if isinstance(value, list):
        return next((k for i, v in enumerate(value) if (k := _find(v, class_type, f"{key}[{i}]"))), None)
    if not isinstance(value, Namespace):
        return None
    path = value.get("class_path")
    if isinstance(path, str) and _names(path, class_type):
        return key
    for name, item in vars(value).items():
        found = _find(item, class_type, key if name == "init_args" else f"{key}.{name}".lstrip("."))
        if found:
            return found
    return None


def _names(class_path: str, class_type: type) -> bool:
    """Whether ``class_path`` names ``class_type`` (jsonargparse may shorten the module to a package above it)."""
    module, _, name = class_path.rpartition(".")
    return name == class_type.__name__ and (class_type.__module__ + ".").startswith(module + ".")


def keyed_message(key: str, message: str, class_type: type) -> str:
    """``message`` of ``class_type`` about one of its arguments, as the config key's.

    Example:
        >>> class Loader:
        ...     def __init__(self, batch_size: int, mode: str) -> None: ...
        >>> keyed_message("data", "batch_size must be >= 1, got 0", Loader)
        'data.batch_size must be >= 1, got 0'
        >>> keyed_message("data", "`mode` can be min, max, got 'x'", Loader)
        "data.mode can be min, max, got 'x'"
        >>> keyed_message("data", "Invalid value: -1", Loader)
        'data: Invalid value: -1'
    """
    try:
        arguments = set(inspect.signature(class_type).parameters)
    except (TypeError, ValueError):  # a class without a signature inspect can read
        arguments = set()
    match = re.match(r"`?(\w+)`?(?=[\s=(])", message)
    if match and match.group(1) in arguments:
        return f"{key}.{match.group(1)}{message[match.end() :]}"
    return f"{key}: {message}"


# Lightning's own machinery (the trainer and its loops), where its checks of trainer arguments run.
_TRAINER_CODE = tuple(Path(lightning.pytorch.__file__).parent / name for name in ("trainer", "loops"))


def run_error_key(error: BaseException, config: Namespace, groups: Mapping[str, type] | None = None) -> str | None:
    """The config key whose object refused, while the command ran, a value it was given; None if not input.

    ``error`` must have been raised by the library code of an object the config names (a method of the
    optimizer, the scheduler, a callback, the logger: the key that names its class) or of Lightning's trainer
    and loops (``trainer``), as a ``ValueError``, ``RuntimeError``, ``ArithmeticError`` or
    ``MisconfigurationException``. Raised in this package's code, or by a plain function, it is a bug.
    """
    if isinstance(error, UserInputError) or not isinstance(
        error, (ValueError, RuntimeError, ArithmeticError, MisconfigurationException)
    ):
        return None
    frame = error.__traceback__
    while frame is not None and frame.tb_next is not None:
        frame = frame.tb_next
    if frame is None:
        return None
    code = Path(frame.tb_frame.f_code.co_filename).resolve()
    if code.is_relative_to(_PACKAGE):
        return None
    owner = frame.tb_frame.f_locals.get("self")
    if owner is not None:
        named = [key for key, cls in (groups or {}).items() if type(owner) is cls]
        key = named[0] if named else _find(config, type(owner), "")
        if key:
            return key
    return "trainer" if any(code.is_relative_to(root) for root in _TRAINER_CODE) else None
