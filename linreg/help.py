"""``fit --help``: Lightning's options, then those of the data module, the model and its optimizer as configured.

In subclass mode LightningCLI lists a group as one option (``--data CONFIG | CLASS_PATH_OR_NAME | .INIT_ARG_NAME
VALUE``) and its arguments only under ``--data.help CLASS``. ``FullHelp`` adds, for the classes chosen so far (by a
``--config`` before ``--help`` too), each argument with the value the run would use: ``--data.batch_size`` reads
``default: 10`` under ``configs/d2l.yaml``.
"""

from __future__ import annotations

import argparse
import re
from collections.abc import Sequence
from typing import Any

from jsonargparse import ArgumentParser, Namespace
from jsonargparse.typing import import_object

# Config key, what it holds, and the arguments the CLI fills in itself.
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
