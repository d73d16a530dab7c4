"""Argument checks shared by the constructors, and the error they raise.

Constructors validate their own arguments (so the classes are safe to use from Python too) and raise
``UserInputError``; the CLI turns that into a one-line message and a non-zero exit, with no traceback.
"""

from __future__ import annotations

import math
from numbers import Real


class UserInputError(ValueError):
    """A value supplied by the user (config, command line, file) is invalid; the message says which."""

    exit_status = 2  # the command line's status for refused input, as argparse uses


def check_int(name: str, value: object, minimum: int, maximum: int | None = None) -> int:
    """Returns ``value`` as a plain int if it is an int ``>= minimum`` (and ``<= maximum``); raises otherwise."""
    if isinstance(value, bool) or not isinstance(value, int) or value < minimum:
        raise UserInputError(f"{name} must be an integer >= {minimum}, got {value!r}")
    if maximum is not None and value > maximum:
        raise UserInputError(f"{name} must be an integer from {minimum} to {maximum}, got {value!r}")
    return int(value)


def check_float(name: str, value: object, minimum: float = -math.inf, *, strict: bool = False) -> float:
    """Returns ``value`` as a float if it is finite and ``>= minimum`` (``> minimum`` when ``strict``)."""
    ok = isinstance(value, Real) and not isinstance(value, bool) and math.isfinite(value)
    if ok and (value > minimum if strict else value >= minimum):
        return float(value)  # type: ignore[arg-type]
    bound = "" if minimum == -math.inf else f" {'>' if strict else '>='} {minimum:g}"
    raise UserInputError(f"{name} must be a finite number{bound}, got {value!r}")
