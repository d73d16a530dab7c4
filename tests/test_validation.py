"""The checks at the boundaries where input enters: config files, YAML, files that are not regular, memory."""

from __future__ import annotations

import os
from numbers import Integral, Real
from pathlib import Path

import pytest
import yaml

from linreg.constraints import AnyOf, Interval, ListOf
from linreg.validation import (
    MAX_YAML_VALUES,
    UserInputError,
    bounded_yaml_load,
    check_fits_in_memory,
    check_regular_file,
)

_LAUGHS = "\n".join(
    [
        "a0: &a0 [1, 1, 1, 1, 1, 1, 1, 1, 1, 1]",
        *(f"a{i}: &a{i} [{', '.join([f'*a{i - 1}'] * 10)}]" for i in range(1, 9)),
    ]
)


@pytest.mark.skipif(not hasattr(os, "mkfifo"), reason="FIFOs are POSIX")
def test_a_fifo_is_refused_without_being_opened(tmp_path: Path) -> None:
    os.mkfifo(tmp_path / "fifo")  # opening it would wait for a writer forever
    with pytest.raises(UserInputError, match=r"^--config: .*fifo: is a FIFO, not a regular file$"):
        check_regular_file(tmp_path / "fifo", "--config")
    with pytest.raises(UserInputError, match=r"^ckpt_path: .*: is a directory, not a regular file$"):
        check_regular_file(tmp_path, "ckpt_path")
    if Path("/dev/zero").exists():
        with pytest.raises(UserInputError, match=r"^ckpt_path: /dev/zero: is a device, not a regular file$"):
            check_regular_file("/dev/zero", "ckpt_path")


def test_a_regular_file_is_passed_with_its_status_and_a_missing_one_only_where_allowed(tmp_path: Path) -> None:
    (tmp_path / "a").write_text("abc")
    status = check_regular_file(tmp_path / "a")
    assert status is not None
    assert status.st_size == 3
    assert check_regular_file(tmp_path / "nope", missing_ok=True) is None
    with pytest.raises(UserInputError, match=r"nope: no such file or directory$"):
        check_regular_file(tmp_path / "nope")
    os.symlink(tmp_path / "a", tmp_path / "link")
    assert check_regular_file(tmp_path / "link") is not None  # its target is judged
    with pytest.raises(UserInputError, match=r"link: is a symbolic link, not a regular file$"):
        check_regular_file(tmp_path / "link", links=False)


def test_yaml_aliases_are_counted_before_anything_is_built() -> None:
    # 10**9 values once expanded: refused from the composed document, in milliseconds.
    with pytest.raises(UserInputError, match=f"expands to more than {MAX_YAML_VALUES} values"):
        bounded_yaml_load(_LAUGHS)
    assert bounded_yaml_load("a: &x [1, 2]\nb: *x") == {"a": [1, 2], "b": [1, 2]}


@pytest.mark.parametrize("document", ["", "a: 1", "- 1.0e+3\n- x\n- null", "a: &x {b: 1}\nc: *x", "!!str 5"])
def test_a_bounded_yaml_load_reads_a_document_as_pyyaml_safe_load_does(document: str) -> None:
    assert bounded_yaml_load(document) == yaml.safe_load(document)


def test_a_bounded_yaml_load_refuses_nesting_too_deep_and_leaves_syntax_errors_to_pyyaml() -> None:
    with pytest.raises(UserInputError, match=r"^a YAML value is nested too deeply to read"):
        bounded_yaml_load("[" * 5000 + "]" * 5000)
    with pytest.raises(yaml.YAMLError):
        bounded_yaml_load("a: [1")


def test_an_allocation_beyond_the_memory_available_is_refused() -> None:
    with pytest.raises(UserInputError, match=r"^10 trillion values need 4e\+04 GB of memory; .* GB is available$"):
        check_fits_in_memory("10 trillion values", 4 * 10**13)
    check_fits_in_memory("a few values", 1000)


@pytest.mark.parametrize(
    ("call", "message"),
    [
        (lambda: Interval(Integral, 1).check("n", True), "n must be an integer >= 1, got True"),
        (lambda: Interval(Integral, 1).check("n", 2.0), "n must be an integer >= 1, got 2.0"),
        (lambda: Interval(Integral, 1, 10).check("n", 11), "n must be an integer from 1 to 10, got 11"),
        (lambda: Interval(Real).check("x", float("nan")), "x must be a finite number, got nan"),
        (lambda: Interval(Real, 0, closed="neither").check("x", 0.0), "x must be a finite number > 0, got 0.0"),
        (
            lambda: ListOf(object).check("w", [1.0, float("inf")]),
            "w must be a non-empty list, each a finite number, got [1.0, inf]",
        ),
        (
            lambda: AnyOf(
                object,
                rules=(Interval(Integral, 0), Interval(Real, 0, 1, closed="left")),
                labels=("steps", "a fraction"),
            ).check("s", 1.5),
            "s must be an integer >= 0 (steps) or in [0, 1) (a fraction), got 1.5",
        ),
    ],
)
def test_number_checks_name_the_argument_and_the_value(call: object, message: str) -> None:
    with pytest.raises(UserInputError) as raised:
        call()  # type: ignore[operator]
    assert str(raised.value) == message
