"""The README's shell commands, run as a reader would: in order, in a fresh directory, in the environment.

The fresh directory holds a copy of ``configs/``, as the repository root does; the environment is this
one, its ``bin/`` first on the PATH, as ``source .venv/bin/activate`` leaves it. A command is skipped
only for a reason in ``SKIPPED``; every other one must exit with status 0. The quick test runs the
Quick start's fit; the slow one runs every command, in README order (later ones use the runs of
earlier ones, as a reader's would).
"""

from __future__ import annotations

import os
import re
import shutil
import subprocess
import sys
from pathlib import Path

import pytest

from tests.conftest import ROOT

README = ROOT / "README.md"

# reason -> pattern: a command matching it is not run here (the first matching reason is the one given).
SKIPPED = {
    "the test suite itself": r"-m pytest",
    "sets up the environment (network, minutes); the tests run inside the one it makes": r"python3 -m venv|pip install",
    "starts a server that does not exit": r"^tensorboard\b",
    "needs a GPU or several machines": r"accelerator gpu|num_nodes|torchrun",
    "a benchmark: minutes of timing": r"linreg\.benchmark",
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
    assert all(command.startswith("python") for command in run), run  # `linreg` alone may not be on PATH
    skipped = [command for command in every if command not in run]
    assert {skip_reason(command) for command in skipped} == set(SKIPPED)  # every rule is used, none is stale


def test_the_quick_start_runs_as_written(fresh_root: Path) -> None:
    result = run_in(fresh_root, readme_commands()[0])
    assert result.returncode == 0, result.stderr
    assert "epoch 3, loss " in result.stdout
    assert "error in estimating b: tensor(" in result.stdout


@pytest.mark.slow
def test_every_readme_command_runs_as_written(fresh_root: Path) -> None:
    for command in readme_commands():
        result = run_in(fresh_root, command)
        assert result.returncode == 0, f"{command}\n{result.stderr[-3000:]}"
