"""``fit --help``: Lightning's options, then those of the data module, the model and its optimizer as configured.

In subclass mode (``--data CSVRegressionData``, ``--model.optimizer Adam``) LightningCLI lists a group as one
option, ``--data CONFIG | CLASS_PATH_OR_NAME | .INIT_ARG_NAME VALUE``, and its arguments only under
``--data.help CLASS``. ``FullHelp`` prints the help as usual and then, for the classes the command line
chose so far (a ``--config`` given before ``--help`` included), each argument as its own option, with the
value the run would use as its default: ``--data.batch_size`` reads ``default: 10`` under
``configs/d2l.yaml``.
"""

from __future__ import annotations

import argparse
import re
from collections.abc import Sequence
from typing import Any

from jsonargparse import ArgumentParser, Namespace
from jsonargparse.typing import import_object

# The sections: config key, what it holds, and arguments not set from the command line (the CLI fills them in).
_SECTIONS = (
    ("data", "the data module", {"input_dim"}),
    ("model", "the model", {"input_dim", "optimizer", "scheduler"}),
    ("model.init_args.optimizer", "the optimizer", {"params"}),
    ("model.init_args.scheduler", "the learning-rate scheduler", {"optimizer"}),
)


class FullHelp(argparse.Action):
    """``-h, --help``: the parser's help, then the arguments of the classes chosen so far, with their values."""

    help = "Show this help message, with the options of the classes chosen so far, and exit."

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
        # The options without the usage line and the class's own heading (its docstring's first line).
        options = sub.format_help().split("\n\n", 1)[-1].split("\n", 1)[-1]
        entries = [_plain(entry) for entry in re.split(r"\n(?=  -)", options.rstrip()) if _kept(entry, option)]
        heading = f"Options of {what}, {spec.class_path} (defaults: this command's values):"
        sections.append("\n".join([heading, *entries, ""]))
    return sections


def _kept(entry: str, option: str) -> bool:
    """Whether an option's entry says something here: not the group's own ``--data CONFIG``, nor a ``.help``."""
    return not entry.startswith(f"  --{option} CONFIG") and not entry.split()[0].endswith(".help")


def _plain(entry: str) -> str:
    """An entry without the list of tensor classes that torch's ``float | Tensor`` arguments bring."""
    return re.sub(r",\s+known subclasses:[^)]*", "", entry)
