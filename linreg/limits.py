"""Bounds on what an input may cost: regular files only, bounded YAML, memory and processes checked first.

An input can be valid in form and still hang or exhaust the machine: a FIFO or ``/dev/zero`` given as
a file is read forever, a few hundred bytes of nested YAML aliases expand to gigabytes, a size of 10¹²
examples is handed to the allocator, ``devices 9999`` on the CPU starts 9999 processes. Each is
checked here before the work starts, and refused with a ``UserInputError`` naming the key and value.
"""

from __future__ import annotations

import os
import stat
from pathlib import Path
from typing import Any

import yaml

from linreg.validation import UserInputError

# Values a YAML document may expand to, aliases followed: a config is a few hundred.
MAX_YAML_VALUES = 100_000


def check_regular_file(name: str, path: str | os.PathLike[str]) -> None:
    """Raises ``UserInputError`` if ``path`` exists and is not a regular file (a FIFO, a device, a socket).

    A missing file or a directory is left to the reader, which names those cases itself.
    """
    try:
        mode = os.stat(path).st_mode
    except OSError:
        return
    if not stat.S_ISREG(mode) and not stat.S_ISDIR(mode):
        kind = "a FIFO" if stat.S_ISFIFO(mode) else "a device" if stat.S_ISCHR(mode) or stat.S_ISBLK(mode) else None
        raise UserInputError(f"{name}: {os.fspath(path)} is {kind or 'not a regular file'}; give a regular file")


def _expanded_size(node: yaml.Node, budget: int) -> int:
    """How many values ``node`` stands for with every alias followed, counting only up to ``budget``."""
    count, stack = 0, [node]
    while stack and count <= budget:
        current = stack.pop()
        count += 1
        if isinstance(current, yaml.SequenceNode):
            stack.extend(current.value)
        elif isinstance(current, yaml.MappingNode):
            stack.extend(item for pair in current.value for item in pair)
    return count


def check_yaml_expansion(stream: str) -> None:
    """Refuses a YAML document that expands to more than ``MAX_YAML_VALUES`` values, aliases followed.

    PyYAML builds an alias as a shared reference, which is cheap; every later walk of the value (the
    parser's checks, copies, the saved config) pays for the full expansion, which nested aliases make
    exponential. The composed document is counted before anything is built from it. A document PyYAML
    cannot compose is left to the loader, which reports it.
    """
    try:
        node = yaml.compose(stream, Loader=yaml.SafeLoader)
    except yaml.YAMLError:
        return
    except RecursionError:  # PyYAML composes nested values recursively: thousands of levels exhaust the stack
        raise UserInputError(f"a YAML value is nested too deeply to read; refused, given: {stream[:60]!r}") from None
    if node is not None and _expanded_size(node, MAX_YAML_VALUES) > MAX_YAML_VALUES:
        raise UserInputError(
            f"a YAML value expands to more than {MAX_YAML_VALUES} values (nested aliases); refused, given:"
            f" {stream[:60]!r}"
        )


def bounded_yaml_load(stream: str) -> Any:
    """``yaml.safe_load`` after ``check_yaml_expansion``.

    Example:
        >>> bounded_yaml_load("a: [1, 2]")
        {'a': [1, 2]}
    """
    check_yaml_expansion(stream)
    return yaml.safe_load(stream)


def check_config_file(path: str) -> None:
    """Refuses a ``--config`` file that is not a regular UTF-8 text file."""
    check_regular_file("--config", path)
    try:
        Path(path).read_bytes().decode("utf-8")
    except UnicodeDecodeError as error:
        raise UserInputError(f"--config: {path} is not a text file (byte {error.start} is not UTF-8)") from None
    except OSError:
        return  # missing or unreadable: the parser names it


def available_memory() -> int | None:
    """Bytes of memory available to a new allocation (Linux ``MemAvailable``), or ``None`` where unknown."""
    try:
        for line in Path("/proc/meminfo").read_text().splitlines():
            if line.startswith("MemAvailable:"):
                return int(line.split()[1]) * 1024
    except (OSError, ValueError, IndexError):
        pass
    try:
        return os.sysconf("SC_AVPHYS_PAGES") * os.sysconf("SC_PAGE_SIZE")
    except (ValueError, OSError, AttributeError):
        return None


def check_fits_in_memory(what: str, nbytes: int) -> None:
    """Refuses an allocation of ``nbytes`` larger than the memory available; ``what`` names the values."""
    available = available_memory()
    if available is not None and nbytes > available:
        raise UserInputError(f"{what} need {_size(nbytes)} of memory; {_size(available)} is available")


def _size(nbytes: float) -> str:
    """``1.5 GB``: a byte count for a message."""
    for unit in ("bytes", "kB", "MB", "GB", "TB"):
        if nbytes < 1000 or unit == "TB":
            return f"{nbytes:.3g} {unit}"
        nbytes /= 1000
    return f"{nbytes:.3g} PB"  # pragma: no cover


def usable_cores() -> int:
    """CPU cores this process may run on."""
    try:
        return len(os.sched_getaffinity(0))
    except AttributeError:  # not on Linux
        return os.cpu_count() or 1
