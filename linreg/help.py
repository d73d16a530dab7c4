"""``fit --help``: the options most runs set, with this command's values.

LightningCLI's help is the whole parser, about 800 lines with the trainer's 400 first: ``--help-all`` prints it.
"""

from __future__ import annotations

import argparse
import json
import re
from collections.abc import Sequence
from typing import Any

from jsonargparse import ArgumentParser, Namespace
from jsonargparse.typing import import_object

from linreg.constraints import described

# The options most runs set, in the order a user meets them. Which ones is a choice; their values and help are the
# parser's. One that does not apply to the chosen classes (data.path of synthetic data) is left out.
COMMON = (
    "data.path",
    "data.true_w",
    "data.target",
    "data.batch_size",
    "model.optimizer",
    "model.optimizer.lr",
    "model.scheduler",
    "model.weight_decay",
    "model.loss",
    "trainer.max_epochs",
    "trainer.accelerator",
    "trainer.devices",
    "ckpt_path",
)


class ShortHelp(argparse.Action):
    """``-h, --help``: the common options with this command's values; the parser's own help where it has none."""

    help = "Show the options most runs set, with this command's values, and exit (--help-all: every option)."

    def __init__(self, option_strings: Sequence[str], dest: str, **kwargs: Any) -> None:
        super().__init__(option_strings, dest, nargs=0, **kwargs)

    def __call__(
        self,
        parser: argparse.ArgumentParser,
        namespace: argparse.Namespace,
        values: str | Sequence[Any] | None,
        option_string: str | None = None,
    ) -> None:
        rows = common_options(parser, namespace) if isinstance(namespace, Namespace) else []
        if not rows:
            parser.print_help()
            parser.exit()
        print(f"usage: {parser.prog.replace(' [options]', '')} [--config FILE] [--KEY VALUE ...]\n")
        if parser.description:
            print(parser.description + "\n")
        print("Options most runs set (shown: the value this command would use):")
        width = max(len(option) for option, _ in rows) + 2
        for option, text in rows:
            print(f"  {option:<{width}}{text}")
        print(
            "\nEvery option: --help-all; every value: --print_config. A class's arguments: --data.help CLASS,"
            " --model.optimizer.help CLASS."
            "\nAny option can be set in a --config file under the same key (trainer.max_epochs: 10)."
        )
        parser.exit()


def config_value(config: Namespace, key: str) -> tuple[bool, Any]:
    """Whether ``config`` has the option ``key`` (``model.optimizer.lr``, through ``init_args``), and its value."""
    value: Any = config
    for part in key.split("."):
        if isinstance(value, Namespace) and part not in value and isinstance(value.get("init_args"), Namespace):
            value = value.init_args
        if not (isinstance(value, Namespace) and part in value):
            return False, None
        value = value[part]
    return True, value


def shown(value: Any) -> str:
    """A value as a config file would give it: a class by its class_path, ``null`` for None."""
    if isinstance(value, Namespace):
        return str(value.get("class_path", value))
    return value if isinstance(value, str) else json.dumps(value)


def help_text(parser: argparse.ArgumentParser, config: Namespace, key: str) -> str:
    """The first sentence of the parser's help for ``key``, from the class that takes it where a class does."""
    config_key, (owner, _, leaf) = key, key.rpartition(".")  # key becomes the class's own below
    found, spec = config_value(config, owner) if owner else (False, None)
    if found and isinstance(spec, Namespace) and isinstance(spec.get("class_path"), str):
        parser = ArgumentParser(add_help=False)
        # Arguments no command line gives (a scheduler's optimizer), unless it is the one asked about.
        parser.add_class_arguments(import_object(spec.class_path), skip={"params", "optimizer", "input_dim"} - {leaf})
        key = leaf
    action = next((a for a in parser._actions if a.dest == key), None)
    text = described(config_key, str(action.help or "")) if action else ""  # ends with its rule, as in --help-all
    text = " ".join(text.replace("``", "").replace("%%", "%").split())
    text = re.split(r"(?<=\.)\s", re.sub(r"\s*\(default: [^)]*\)", "", text), maxsplit=1)[0]
    return text if len(text) <= 70 else text[:67] + "..."


def common_options(parser: argparse.ArgumentParser, config: Namespace) -> list[tuple[str, str]]:
    """``(--key value, help)`` for each ``COMMON`` option that ``config`` has, its value from ``config``."""
    rows = []
    for key in COMMON:
        found, value = config_value(config, key)
        if found:
            rows.append((f"--{key} {shown(value)}", help_text(parser, config, key)))
    return rows
