"""How the command line answers bad input: one short message, a non-zero exit status, no traceback.

jsonargparse reports a bad value with the full usage (a hundred lines) and, for union types, one error
per alternative type; a value rejected by one of our constructors arrives wrapped in such an error.
Both are cut down here to the key, what was wrong and what was given.

Errors raised while the command runs are answered the same way when they are about the user's input:
a ``UserInputError`` (ours), a ``MisconfigurationException`` (Lightning's word for the same thing) or
a file that cannot be opened. Anything else is a bug and keeps its traceback.
"""

from __future__ import annotations

import re
import sys
from typing import NoReturn

from lightning.fabric.utilities.exceptions import MisconfigurationException
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
    # A subclass-mode group (model, data) nests its keys: `model: Problem with given class_path 'X': Parser
    # key "optimizer": ...` is `model.optimizer: ...`.
    text = re.sub(r"""^([\w.]+): Problem with given class_path '[^']*':\s*Parser key "([^"]+)":\s*""", r"\1.\2: ", text)
    text = re.sub(r"<class '(?:[\w]+\.)*(\w+)'>", r"\1", text)
    text = re.sub(r"NestedArg\(key='([^']*)', val='([^']*)'\)", r"\1=\2", text)
    return re.sub(r"\s*Given value: (.*)$", r" (given: \1)", text)


# A quoted or bracketed value longer than this is cut in messages: a 2 MB list makes no readable line.
_LONGEST_VALUE = 80
_VALUE = re.compile(rf"\[[^\[\]]{{{_LONGEST_VALUE},}}\]?|'[^']{{{_LONGEST_VALUE},}}'|\"[^\"]{{{_LONGEST_VALUE},}}\"")


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
    line = one_line(shorten_values(message), limit=400)
    print(f"{prog}: error: {line}" + (f"\n{hint}" if hint else ""), file=sys.stderr)
    raise SystemExit(status)


def one_line(message: str, limit: int = 300) -> str:
    """``message`` with its lines joined and cut to ``limit`` characters."""
    text = " ".join(line.strip() for line in message.splitlines() if line.strip())
    return text if len(text) <= limit else text[: limit - 3] + "..."


def find_user_error(exc: BaseException) -> UserInputError | None:
    """The error about the user's input that caused ``exc``, as a ``UserInputError``, if there is one.

    Looks through the chain of causes (jsonargparse and Lightning wrap errors) for a ``UserInputError``,
    then for a ``MisconfigurationException`` or an ``OSError`` naming a file.
    """
    chain: list[BaseException] = []
    current: BaseException | None = exc
    while current is not None and all(current is not seen for seen in chain):
        chain.append(current)
        current = current.__cause__ or current.__context__
    for error in chain:
        if isinstance(error, UserInputError):
            return error
    for error in chain:
        if isinstance(error, MisconfigurationException):
            return UserInputError(one_line(str(error)))
        if isinstance(error, OSError) and error.filename is not None:
            return UserInputError(f"{error.filename}: {error.strerror or one_line(str(error))}")
    return None


class ShortErrorParser(LightningArgumentParser):
    """A LightningArgumentParser whose errors are one line instead of the usage and a nested report."""

    def error(self, message: str, ex: Exception | None = None) -> NoReturn:
        if not self.exit_on_error:  # jsonargparse is trying alternatives and wants the exception back
            super().error(message, ex)
        prog = self.prog.replace(" [options]", "")
        fail(prog, condense(message), f"(`{prog} --help` lists the accepted options)")
