"""The README's shell commands, run as a reader would, and its shown output, compared with the program's.

Commands run in order, in a fresh directory, in the environment. The fresh directory holds a copy of
``configs/``, as the repository root does; the environment is this one, its ``bin/`` first on the PATH, as
``source .venv/bin/activate`` leaves it. A command is skipped only for a reason in ``SKIPPED``; every other
one must exit with status 0. The quick tests run the Quick start's fit and the output blocks of the book's
config; the slow one runs every command and checks every output block, in README order (later ones use the
runs of earlier ones, as a reader's would).

Every plain fenced block (no language) of the README is output, and the line before it says whose:

- ``<!-- output -->``: a transcript, ``$ command`` then what it prints; the command runs where the block is.
- ``<!-- output of: command -->``: what an earlier command of a ``bash`` block printed.
- ``<!-- not checked: reason -->``: said why (another program's output, a signal mid-fit, ...).

A block matches the command's stdout when it exits 0, its stderr otherwise, line for line (``printed_alike``
says how numbers compare), without Lightning's lines about the hardware and why training stopped (the README
mentions them), and with a line ``...`` standing for any number of lines.
"""

from __future__ import annotations

import difflib
import json
import math
import os
import re
import shutil
import subprocess
import sys
from dataclasses import dataclass
from decimal import Decimal
from pathlib import Path

import pytest
import torch

from tests.conftest import ROOT

README = ROOT / "README.md"

# reason -> pattern: a command matching it is not run here (the first matching reason is the one given).
SKIPPED = {
    "the test suite itself": r"-m pytest",
    "sets up the environment (network, minutes); the tests run inside the one it makes": r"python3 -m venv|pip install",
    "starts a server that does not exit": r"^tensorboard\b",
    "needs a GPU or several machines": r"accelerator gpu|num_nodes|torchrun",
    "a benchmark: minutes of timing": r"linreg\.benchmark",
    "reads a bucket on object storage, with its credentials": r"s3://|AWS_ENDPOINT_URL",
}


def shell_blocks(markdown: str) -> list[str]:
    """The contents of the ```bash blocks of ``markdown``, in order."""
    return re.findall(r"^```bash\n(.*?)^```", markdown, re.DOTALL | re.MULTILINE)


def commands(block: str) -> list[str]:
    """A shell block's commands: continued lines (``\\``) joined, a here-document kept with its command.

    Example:
        >>> commands("# a comment\\necho a \\\\\\n  b\\ncat <<'END'\\nx\\nEND\\n")
        ['echo a \\\\\\n  b', "cat <<'END'\\nx\\nEND"]
    """
    lines, found = block.splitlines(), []
    i = 0
    while i < len(lines):
        command, i = lines[i], i + 1
        if not command.strip() or command.lstrip().startswith("#"):
            continue
        while command.endswith("\\") and i < len(lines):
            command, i = command + "\n" + lines[i], i + 1
        heredoc = re.search(r"<<'?(\w+)'?", command)
        if heredoc:
            end = lines.index(heredoc.group(1), i)
            command, i = "\n".join([command, *lines[i : end + 1]]), end + 1
        found.append(command)
    return found


def skip_reason(command: str) -> str | None:
    """Why ``command`` is not run here, or None if it is."""
    return next((reason for reason, pattern in SKIPPED.items() if re.search(pattern, command, re.MULTILINE)), None)


def readme_commands() -> list[str]:
    """Every command of the README that is run here, in order."""
    every = [command for block in shell_blocks(README.read_text()) for command in commands(block)]
    return [command for command in every if skip_reason(command) is None]


def run_in(directory: Path, command: str) -> subprocess.CompletedProcess[str]:
    """Runs ``command`` with bash in ``directory``, this environment's ``bin/`` first on the PATH."""
    environment = {**os.environ, "PATH": f"{Path(sys.executable).parent}{os.pathsep}{os.environ['PATH']}"}
    return subprocess.run(
        ["bash", "-o", "pipefail", "-ec", command],
        cwd=directory,
        env=environment,
        capture_output=True,
        text=True,
        check=False,
    )


# Lightning's lines on stderr about the hardware, restoring a checkpoint and why training stopped.
LIGHTNING_INFO = re.compile(r"^((GPU|TPU|HPU) available: |`Trainer\.fit` stopped: |Restor(ing|ed) )")
MARKER = re.compile(r"^<!-- (output|output of: (?P<command>.+?)|not checked: (?P<reason>.+?)) -->$")


@dataclass
class OutputBlock:
    """A plain fenced block of the README: the command whose output it shows, and that output."""

    line: int  # where the block starts, counting from 1
    command: str | None  # None: not checked
    transcript: bool  # the command is the block's first line, ``$ command``
    expected: list[str]


def readme_items(markdown: str) -> list[str | OutputBlock]:
    """The README's commands (run here) and output blocks, in order."""
    items: list[str | OutputBlock] = []
    lines = markdown.splitlines()
    fences = [i for i, line in enumerate(lines) if line.startswith("```")]
    for start, end in zip(fences[::2], fences[1::2], strict=True):
        body = lines[start + 1 : end]
        if lines[start] == "```bash":
            items += [c for c in commands("\n".join(body) + "\n") if skip_reason(c) is None]
        elif lines[start] == "```":
            marker = MARKER.match(lines[start - 1])
            assert marker, (
                f"README line {start + 1}: an output block needs <!-- output ... --> or <!-- not checked ... -->"
            )
            if marker.group("reason"):
                items.append(OutputBlock(start + 1, None, False, body))
            elif marker.group("command"):
                items.append(OutputBlock(start + 1, marker.group("command"), False, body))
            else:
                assert body[0].startswith("$ "), f"README line {start + 1}: a transcript starts with `$ command`"
                items.append(OutputBlock(start + 1, body[0][2:], True, body[1:]))
    return items


def printed(result: subprocess.CompletedProcess[str]) -> list[str]:
    """What a command showed: its stdout when it succeeded, else its stderr, without Lightning's info lines."""
    text = result.stdout if result.returncode == 0 else result.stderr
    return [line for line in text.splitlines() if not LIGHTNING_INFO.match(line)]


# A decimal number standing alone (not the 0 of ``x0`` or the 2 of ``r2``): digits with a point or an exponent.
DECIMAL = re.compile(r"(?<![\w.])([-+]?(?:(?:\d+\.\d+|\.\d+)(?:[eE][-+]?\d+)?|\d+[eE][-+]?\d+))")


def printed_alike(expected: str, shown: str) -> bool:
    """Whether ``shown`` prints what the README line ``expected`` does, to the digits a machine may change.

    Text and integers (epochs, steps, rows, line numbers, names) compare exactly; so does the line's layout,
    except the width of the space between columns, which follows the widths of the numbers in them. A decimal
    number (with a point or an exponent) comes from floating-point arithmetic, whose last bits differ between
    machines with the same torch (another BLAS, other vector instructions sum in another order): it compares
    equal when within a relative 1e-4 of the README's, or one unit in the last digit printed (of the shorter of
    the two: a value next to a rounding boundary prints one way here, the other way there). A real change (a word, an
    integer, a leading digit, SGD's loss against OLS's) differs by more.

    Example:
        >>> printed_alike("val mae   0.0080857    0.0080756", "val mae   0.0080857    0.0080757")
        True
    """
    expected_parts, shown_parts = DECIMAL.split(expected), DECIMAL.split(shown)
    if len(expected_parts) != len(shown_parts):
        return False
    texts = zip(expected_parts[::2], shown_parts[::2], strict=True)
    if any(re.sub(" +", " ", a) != re.sub(" +", " ", b) for a, b in texts):
        return False
    for a, b in zip(expected_parts[1::2], shown_parts[1::2], strict=True):
        last_digit = max(10.0 ** Decimal(a).as_tuple().exponent, 10.0 ** Decimal(b).as_tuple().exponent)
        if not math.isclose(float(a), float(b), rel_tol=1e-4, abs_tol=last_digit * (1 + 1e-9)):
            return False
    return True


def lines_alike(expected: list[str], shown: list[str]) -> bool:
    """Whether ``shown`` is ``expected`` line by line (``printed_alike``), a line ``...`` matching any lines."""
    if not expected:
        return not shown
    if expected[0] == "...":
        return any(lines_alike(expected[1:], shown[i:]) for i in range(len(shown) + 1))
    return bool(shown) and printed_alike(expected[0], shown[0]) and lines_alike(expected[1:], shown[1:])


def check_output(block: OutputBlock, shown: list[str]) -> None:
    """Asserts that ``shown`` is what ``block`` says (``lines_alike``)."""
    if not lines_alike(block.expected, shown):
        diff = "\n".join(difflib.unified_diff(block.expected, shown, "README", "program", lineterm=""))
        pytest.fail(f"README line {block.line}, output of `{block.command}` differs:\n{diff}")


@pytest.mark.parametrize(
    ("shown", "alike"),
    [
        ("val mae                   0.0080857    0.0080756", True),  # as the README shows it
        ("val mae                   0.0080857    0.0080757", True),  # another machine's last digit
        ("val mae                   0.0080857   0.00807561", True),  # a digit more, a space less
        ("val mse                   0.0080857    0.0080756", False),  # a word
        ("val mae                   0.0080857    0.0090756", False),  # a leading digit
        ("val mae                   0.0080857    0.0080856", False),  # SGD's value where OLS's was
        ("val mae                   0.0080857", False),  # a number missing
        ("val mae                   0.0080857    0.0080756 x", False),  # text added
    ],
)
def test_printed_numbers_compare_to_their_last_digit_and_text_exactly(shown: str, alike: bool) -> None:
    assert printed_alike("val mae                   0.0080857    0.0080756", shown) is alike


def test_integers_and_names_with_digits_compare_exactly() -> None:
    assert printed_alike("epoch 3, loss 0.000095  val/r2 0.999998", "epoch 3, loss 0.000095  val/r2 0.999998")
    assert not printed_alike("epoch 3, loss 0.000095", "epoch 4, loss 0.000095")
    assert not printed_alike("w[x0]  2", "w[x1]  2")
    assert not printed_alike("2,505582,502089.34065900696", "2,505583,502089.34065900696")
    assert printed_alike("largest 9.5399e-05 (w[x0])", "largest 9.5400e-05 (w[x0])")
    assert not printed_alike("largest 9.5399e-05", "largest 9.5399e-06")


def test_a_line_of_dots_stands_for_any_lines() -> None:
    assert lines_alike(["a 1.0", "...", "z"], ["a 1.0", "b", "c", "z"])
    assert lines_alike(["a", "..."], ["a"])
    assert not lines_alike(["a", "...", "z"], ["a", "b"])


@pytest.fixture
def fresh_root(tmp_path: Path) -> Path:
    """A directory laid out like the repository root, as far as the README's commands look."""
    shutil.copytree(ROOT / "configs", tmp_path / "configs")
    return tmp_path


def test_every_command_is_run_or_skipped_for_a_stated_reason() -> None:
    every = [command for block in shell_blocks(README.read_text()) for command in commands(block)]
    run = readme_commands()
    assert run[0] == "python -m linreg fit --config configs/d2l.yaml"  # the Quick start's
    assert len(run) >= 10
    assert not any(re.match(r"linreg\b", command) for command in run), run  # `linreg` alone may not be on PATH
    skipped = [command for command in every if command not in run]
    assert {skip_reason(command) for command in skipped} == set(SKIPPED)  # every rule is used, none is stale


def test_the_quick_start_runs_as_written(fresh_root: Path) -> None:
    result = run_in(fresh_root, readme_commands()[0])
    assert result.returncode == 0, result.stderr
    assert "epoch 3, loss " in result.stdout
    assert "error in estimating b: tensor(" in result.stdout


@pytest.mark.slow
def test_every_readme_command_runs_as_written_and_prints_what_it_shows(fresh_root: Path) -> None:
    results: dict[str, subprocess.CompletedProcess[str]] = {}
    for item in readme_items(README.read_text()):
        if isinstance(item, str):
            results[item] = run_in(fresh_root, item)
            assert results[item].returncode == 0, f"{item}\n{results[item].stderr[-3000:]}"
        elif item.command is not None:
            result = run_in(fresh_root, item.command) if item.transcript else results[item.command]
            check_output(item, printed(result))


def _blocks() -> list[OutputBlock]:
    return [item for item in readme_items(README.read_text()) if isinstance(item, OutputBlock)]


def test_every_output_block_says_whose_output_it_is() -> None:
    blocks = _blocks()
    checked = [block for block in blocks if block.command is not None]
    assert len(checked) >= 5
    commands_run = [item for item in readme_items(README.read_text()) if isinstance(item, str)]
    for block in checked:  # an `output of:` names a command the README runs before it
        assert block.transcript or block.command in commands_run, block.command


@pytest.mark.slow  # a process per block; the slow README test checks every block again, in README order
@pytest.mark.parametrize(
    "block",
    [block for block in _blocks() if block.command and "configs/d2l.yaml" in block.command],
    ids=lambda block: f"line{block.line}",
)
def test_output_of_the_books_config_is_what_the_readme_shows(fresh_root: Path, block: OutputBlock) -> None:
    check_output(block, printed(run_in(fresh_root, block.command)))


def python_section() -> str:
    """The code of the README's "From Python" section."""
    found = re.search(r"^## From Python\n.*?^```python\n(.*?)^```", README.read_text(), re.DOTALL | re.MULTILINE)
    assert found is not None
    return found.group(1)


def test_the_from_python_section_runs_as_a_notebook_would_and_gives_the_command_lines_estimate(
    d2l_run: Path, tmp_path: Path, monkeypatch: pytest.MonkeyPatch, capsys: pytest.CaptureFixture[str]
) -> None:
    monkeypatch.chdir(tmp_path)
    namespace: dict = {}
    exec(compile(python_section(), "README.md", "exec"), namespace)  # in this interpreter, as a notebook cell runs
    out = capsys.readouterr().out
    assert "\r" not in out  # no progress bar redrawn in place: not a terminal
    assert out.startswith("epoch 1, loss ")
    assert "verdict: SGD" in out
    model, report = namespace["model"], namespace["report"]
    true_w = torch.tensor([2.0, -3.4, 5.6, 3.2, -0.6])
    assert (model.weight - true_w).abs().max() < 5e-3  # the book's data, recovered
    assert abs(model.bias.item() - 4.2) < 5e-3
    # The command line's run of configs/d2l.yaml: the same seeds, data and steps, so the same estimate.
    cli = json.loads((d2l_run / "report.json").read_text())
    assert [row["sgd"] for row in report["parameters"]] == [row["sgd"] for row in cli["parameters"]]
    assert (tmp_path / "runs" / "notebook" / "version_0" / "report.json").is_file()
