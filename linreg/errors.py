"""How the command line answers bad input: one short message, exit status 2, no traceback.

jsonargparse reports a bad value with the full usage (a hundred lines) and, for union types, one error
per alternative type; a value rejected by one of our constructors arrives wrapped in such an error.
Both are cut down here to the key, what was wrong and what was given.
"""

from __future__ import annotations

import re
import sys
from typing import NoReturn

from lightning.pytorch.cli import LightningArgumentParser

from linreg.validation import UserInputError

# Lines of jsonargparse's union-type errors that say nothing about what the user got wrong.
_NOISE = (
    "Does not validate against any of the Union subtypes",
    "Subtypes:",
    "Errors:",
    "Given value type:",
    "- Expected a <class 'NoneType'>",
)


def condense(message: str) -> str:
    """One line from a jsonargparse error message: ``key: what is wrong (given: value)``.

    Example:
        >>> condense('Parser key "trainer.max_epochs":\\n  Expected a <class \\'int\\'>. Got value: abc')
        'trainer.max_epochs: Expected a int. Got value: abc'
    """
    lines = [line.strip() for line in message.splitlines()]
    text = " ".join(line.removeprefix("- ") for line in lines if line and not line.startswith(_NOISE))
    text = re.sub(r'^Parser key "([^"]+)":\s*', r"\1: ", text)
    text = re.sub(r"<class '(?:[\w]+\.)*(\w+)'>", r"\1", text)
    text = re.sub(r"NestedArg\(key='([^']*)', val='([^']*)'\)", r"\1=\2", text)
    return re.sub(r"\s*Given value: (.*)$", r" (given: \1)", text)


def fail(prog: str, message: str, hint: str = "", status: int = 2) -> NoReturn:
    """Prints ``prog: error: message`` (and a hint line) to stderr and exits with ``status``."""
    print(f"{prog}: error: {message}" + (f"\n{hint}" if hint else ""), file=sys.stderr)
    raise SystemExit(status)


def find_user_error(exc: BaseException) -> UserInputError | None:
    """The ``UserInputError`` that caused ``exc`` (jsonargparse wraps constructor errors), if any."""
    seen: set[int] = set()
    current: BaseException | None = exc
    while current is not None and id(current) not in seen:
        if isinstance(current, UserInputError):
            return current
        seen.add(id(current))
        current = current.__cause__ or current.__context__
    return None


class ShortErrorParser(LightningArgumentParser):
    """A LightningArgumentParser whose errors are one line instead of the usage and a nested report."""

    def error(self, message: str, ex: Exception | None = None) -> NoReturn:
        if not self.exit_on_error:  # jsonargparse is trying alternatives and wants the exception back
            super().error(message, ex)
        prog = self.prog.replace(" [options]", "")
        fail(prog, condense(message), f"(`{prog} --help` lists the accepted options)")
