"""``fit --help``: the options most runs set, with this command's values; ``--help-all``: every option.

LightningCLI's help is the whole parser, about 800 lines, with the trainer's 400 first. ``--help`` prints the
options of ``COMMON`` that this command has, each with the value it would use (a ``--config`` before ``--help`` is
read first) and the parser's own help text. ``--help-all`` prints the parser's help and, for the classes chosen so
far, each of their arguments: in subclass mode LightningCLI lists a group as one option (``--data CONFIG |
CLASS_PATH_OR_NAME | .INIT_ARG_NAME VALUE``) and its arguments only under ``--data.help CLASS``.
"""

from __future__ import annotations

import argparse
import json
import re
from collections.abc import Sequence
from typing import Any

from jsonargparse import ArgumentParser, Namespace
from jsonargparse.typing import import_object

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

# Config key, what it holds, and the arguments the CLI fills in itself.
_SECTIONS = (
    ("data", "the data module", {"input_dim"}),
    ("model", "the model", {"input_dim", "optimizer", "scheduler"}),
    ("model.init_args.optimizer", "the optimizer", {"params"}),
    ("model.init_args.scheduler", "the learning-rate scheduler", {"optimizer"}),
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
            "\nEvery option: --help-all. A class's arguments: --data.help CLASS, --model.optimizer.help CLASS."
            "\nAny option can be set in a --config file under the same key (trainer.max_epochs: 10)."
        )
        parser.exit()


def config_value(config: Namespace, key: str) -> tuple[bool, Any]:
    """Whether ``config`` has the option ``key`` (as the command line names it) and its value there.

    A class's arguments sit under its ``init_args``: ``model.optimizer.lr`` is
    ``model.init_args.optimizer.init_args.lr``.
    """
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
    owner, _, leaf = key.rpartition(".")
    found, spec = config_value(config, owner) if owner else (False, None)
    if found and isinstance(spec, Namespace) and isinstance(spec.get("class_path"), str):
        parser = ArgumentParser(add_help=False)
        parser.add_class_arguments(import_object(spec.class_path), skip={"params", "optimizer", "input_dim"})
        key = leaf
    action = next((a for a in parser._actions if a.dest == key), None)
    text = " ".join(str(action.help or "").replace("``", "").replace("%%", "%").split()) if action else ""
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


class FullHelp(argparse.Action):
    """``--help-all``: the parser's help, then the arguments of the classes chosen so far, with their values."""

    help = "Show every option, with those of the classes chosen so far and their values, and exit."

    def __init__(self, option_strings: Sequence[str], dest: str, **kwargs: Any) -> None:
        super().__init__(option_strings, dest, nargs=0, **kwargs)

    def __call__(
        self,
        parser: argparse.ArgumentParser,
        namespace: argparse.Namespace,
        values: str | Sequence[Any] | None,
        option_string: str | None = None,
    ) -> None:
        parser.print_help()
        if isinstance(parser, ArgumentParser) and isinstance(namespace, Namespace):
            for text in class_sections(parser, namespace):
                print(text)
        parser.exit()


def class_sections(parser: ArgumentParser, config: Namespace) -> list[str]:
    """One block of help per configured class in ``config`` (data, model, optimizer, scheduler), defaults from it."""
    sections = []
    for key, what, skipped in _SECTIONS:
        spec = config.get(key)
        if not (isinstance(spec, Namespace) and isinstance(spec.get("class_path"), str)):
            continue
        option = key.replace(".init_args", "")  # --model.optimizer.lr, as the command line takes it
        cls = import_object(spec.class_path)
        sub = ArgumentParser(prog=parser.prog, add_help=False)
        sub.add_class_arguments(cls, option, skip=skipped)
        for name, value in vars(spec.get("init_args") or Namespace()).items():
            if name not in skipped and f"{option}.{name}" in sub.get_defaults():
                sub.set_defaults({f"{option}.{name}": value})
        # The options without the usage line and the class's own heading (its docstring's first line), nor the
        # group's own ``--data CONFIG`` and ``.help``, nor the tensor classes ``float | Tensor`` arguments list.
        options = sub.format_help().split("\n\n", 1)[-1].split("\n", 1)[-1]
        entries = [
            re.sub(r",\s+known subclasses:[^)]*", "", entry)
            for entry in re.split(r"\n(?=  -)", options.rstrip())
            if not entry.startswith(f"  --{option} CONFIG") and not entry.split()[0].endswith(".help")
        ]
        heading = f"Options of {what}, {spec.class_path} (defaults: this command's values):"
        sections.append("\n".join([heading, *entries, ""]))
    return sections
