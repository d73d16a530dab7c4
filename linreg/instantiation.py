"""Building the objects a config names, each refusal of a value reported under the config key that gave it.

A refusal is told by its type and whose class raised it: ``UserInputError`` (ours), ``MisconfigurationException``
(Lightning), ``ValueError``/``TypeError``/``OverflowError`` from other libraries' classes, and ``ImportError``
(a class whose package is not installed, such as ``MLFlowLogger`` without mlflow). Anything else, and a
``ValueError`` from one of our classes, is a bug and keeps its traceback.
"""

from __future__ import annotations

from collections.abc import Mapping
from typing import Any

from jsonargparse import Namespace
from lightning.fabric.utilities.exceptions import MisconfigurationException

from linreg.validation import UserInputError


class ConfigKeyError(UserInputError):
    """A class named by the config refused a value it was given; the message starts with the config key."""


def is_refusal(error: Exception, class_type: type) -> bool:
    """Whether ``error``, raised by calling ``class_type``, is its refusal of the values it was given."""
    if isinstance(error, (UserInputError, MisconfigurationException, ImportError)):
        return True
    if isinstance(error, OSError):  # a file that cannot be opened, named
        return error.filename is not None
    ours = class_type.__module__.split(".")[0] == __name__.split(".")[0]
    return isinstance(error, (ValueError, TypeError, OverflowError)) and not ours


class KeyedInstantiator:
    """A jsonargparse instantiator reporting a class's refusal under its key in ``config`` or ``groups`` (``last``)."""

    def __init__(self, config: Namespace, groups: Mapping[str, type]) -> None:
        self.config = config
        self.groups = dict(groups)

    def __call__(self, class_type: type, *args: Any, **kwargs: Any) -> Any:
        try:
            return class_type(*args, **kwargs)
        except Exception as error:
            if isinstance(error, ConfigKeyError) or not is_refusal(error, class_type):
                raise
            key = config_key(self.config, class_type, self.groups)
            missing = (
                f"{class_type.__name__} needs a package that is not installed: "
                if isinstance(error, ImportError)
                else ""
            )
            raise ConfigKeyError(f"{key}: {missing}{' '.join(str(error).split())}") from error


def config_key(config: Namespace, class_type: type, groups: Mapping[str, type] | None = None) -> str:
    """The first key of ``config`` naming ``class_type`` (``model.optimizer``), else the class's name."""
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
