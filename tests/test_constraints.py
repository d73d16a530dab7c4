"""The one table of rules (``constraints.CONFIG``): each constrained key's help ends with its rule, and the code
that takes the key refuses what the rule refuses, saying the rule. Generated from the table, key by key."""

from __future__ import annotations

import contextlib
import inspect
import io
import math
import re
from collections.abc import Callable
from numbers import Integral
from pathlib import Path
from typing import Any

import pytest
import torch
from jsonargparse import Namespace

from linreg.callbacks import AveragedSGD
from linreg.checkpointing.runs import LastCheckpoint
from linreg.config_checks import check_config_values
from linreg.constraints import CONFIG, AnyOf, Interval, ListOf, Options
from linreg.data import CSVRegressionData, SyntheticRegressionData
from linreg.grouped import GroupedStepsRegression
from linreg.model import LinearRegression
from linreg.trial import check_param_groups
from linreg.validation import UserInputError
from tests.conftest import run_cli

# The helps that show the classes' arguments: the whole parser's, and each class's that takes a key of the table.
HELPS = [
    ("--help-all",),
    ("--data.help", "SyntheticRegressionData"),
    ("--data.help", "CSVRegressionData"),
    ("--model.help", "LinearRegression"),
    ("--model.help", "linreg.grouped.GroupedStepsRegression"),
    *[("--model.optimizer.help", name) for name in ("SGD", "Adam", "Adagrad", "Adadelta")],
]
# Keys no parser shows: a callback of trainer.callbacks (its help: --trainer.callbacks.help AveragedSGD), and the
# loss module's argument.
NOT_IN_A_PARSER = {"AveragedSGD.start", "model.loss.delta"}


def option_helps(text: str) -> dict[str, str]:
    """``{option: its help, on one line}`` of an argparse help text (``--data.seed`` -> ``seeds the data ...``)."""
    helps: dict[str, str] = {}
    for section in re.split(r"\n(?=  -)", text):
        options = re.findall(r"--([\w.]+)", section.split("  ", 2)[1]) if section.startswith("  -") else []
        for option in options:
            helps.setdefault(option, " ".join(section.split()))
    return helps


@pytest.fixture(scope="module")
def helps() -> dict[str, str]:
    """Every option's help in ``HELPS``, by config key (``--model.optimizer.help SGD`` lists ``--optimizer.lr``)."""
    found: dict[str, str] = {}
    for args in HELPS:
        out = io.StringIO()
        with contextlib.redirect_stdout(out), pytest.raises(SystemExit):
            run_cli("fit", *args)
        for option, text in option_helps(out.getvalue()).items():
            key = option if option in CONFIG else f"model.{option}"
            found.setdefault(key, text)
    return found


def test_every_constrained_key_a_parser_shows_ends_its_help_with_its_rule(helps: dict[str, str]) -> None:
    shown = {key for key in CONFIG if key in helps}
    assert shown == CONFIG.keys() - NOT_IN_A_PARSER
    for key in shown:
        assert f"({CONFIG[key]}" in helps[key], key


def outside(rule: Interval) -> list[Any]:
    """Numbers just outside ``rule``: past each bound, on an excluded bound, not finite, not whole.

    (A value of another type, a string or a boolean, is the parser's to refuse, by the argument's type.)
    """
    if isinstance(rule, Options):
        return ["neither", None]
    if isinstance(rule, AnyOf):
        return [value for r in rule.rules for value in outside(r) if not rule.holds(value)]
    if isinstance(rule, ListOf):
        return [[], [*outside(rule.item)[:1]], 1.0]
    values: list[Any] = [math.nan, math.inf] + ([1.5] if rule.kind is Integral else [])
    if rule.left is not None:
        values += [rule.left - 1] + ([rule.left] if rule.closed in ("right", "neither") else [])
    if rule.right is not None:
        values += [rule.right + 1] + ([rule.right] if rule.closed in ("left", "neither") else [])
    return values


def inside(rule: Interval) -> list[Any]:
    """Numbers inside ``rule`` (an ``Interval``): on each bound it includes, and beyond or between them."""
    left, right = rule.left, rule.right
    values = [left] if left is not None and rule.closed in ("left", "both") else []
    values += [right] if right is not None and rule.closed in ("right", "both") and right != left else []
    if left is not None and right is not None and right > left:
        values.append((left + right) / 2 if rule.kind is not Integral else (left + right) // 2)
    elif right is None:
        values += [(left or 0) + 1, (left or 0) + 1000]
    return values


def taker(key: str, tmp_path: Path) -> Callable[[Any], Any]:
    """What takes ``key``'s value from a config: a constructor, or the check of what goes to torch or Lightning."""
    group, _, name = key.partition(".")
    if key.startswith("model.optimizer."):  # checked on the optimizer's param groups, once torch built them
        name = name.removeprefix("optimizer.")
        return lambda v: check_param_groups(
            [{"lr": 0.1, name: (v, 0.999) if name == "betas" else v}], "model.optimizer"
        )
    if key == "model.loss.delta":
        return lambda v: LinearRegression(input_dim=1, loss=torch.nn.HuberLoss(delta=v))
    if group in ("trainer", "seed_everything"):  # Lightning's arguments: the config check
        return lambda v: check_config_values(Namespace({key: v}))
    csv = tmp_path / "t.csv"
    csv.write_text("x,y\n1,2\n2,3\n")
    # The classes that take the group's keys, each with the arguments it needs besides.
    classes: list[tuple[Callable[..., Any], dict[str, Any]]] = {
        "data": [(SyntheticRegressionData, {}), (CSVRegressionData, {"path": str(csv), "target": "y"})],
        "model": [(LinearRegression, {"input_dim": 1}), (GroupedStepsRegression, {"input_dim": 1})],
        "last": [(LastCheckpoint, {})],
        "AveragedSGD": [(AveragedSGD, {})],
    }[group]
    cls, needed = next((c, kw) for c, kw in classes if name in inspect.signature(c).parameters)
    return lambda v: cls(**{**needed, name: v})


@pytest.mark.parametrize("key", sorted(CONFIG))
def test_each_value_a_rule_refuses_is_refused_where_the_config_gives_it_saying_the_rule(
    key: str, tmp_path: Path
) -> None:
    take, rule = taker(key, tmp_path), CONFIG[key]
    for value in outside(rule):
        assert not rule.holds(value), (key, value)
        with pytest.raises(UserInputError) as raised:
            take(value)
        assert str(rule) in str(raised.value), (key, value)
