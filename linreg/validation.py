"""The error raised for bad input, and the checks shared by the places where input enters.

Constructors check their own arguments (so the classes are safe to use from Python too) and raise
``UserInputError``; so do the readers of files. The command line prints it as one line and exits 2,
with no traceback. The bounds here stop inputs that are valid in form but would hang or exhaust the
machine: a FIFO given as a file, YAML aliases that expand to gigabytes, an allocation beyond memory.
"""

from __future__ import annotations

import os
import stat
from pathlib import Path
from typing import Any

import yaml


class UserInputError(ValueError):
    """A value supplied by the user (config, command line, file) is invalid; the message says which."""

    exit_status = 2  # the command line's status for refused input, as argparse uses


def check_regular_file(
    path: str | os.PathLike[str], name: str = "", *, missing_ok: bool = False, links: bool = True
) -> os.stat_result | None:
    """Refuses ``path`` unless it is a regular file, before anything opens it (opening a FIFO waits for a writer).

    Returns its ``os.stat``, or ``None`` where it is missing or unreadable and ``missing_ok``. ``links=False``
    judges a symbolic link itself: the entry a rename would replace.
    """
    shown = f"{name}: {os.fspath(path)}" if name else os.fspath(path)
    try:
        status = os.stat(path) if links else os.lstat(path)
    except OSError as exc:
        if missing_ok:
            return None
        why = "no such file or directory" if isinstance(exc, FileNotFoundError) else f"cannot be read ({exc.strerror})"
        raise UserInputError(f"{shown}: {why}") from None
    if not stat.S_ISREG(status.st_mode):
        kinds = {stat.S_ISDIR: "a directory", stat.S_ISFIFO: "a FIFO", stat.S_ISLNK: "a symbolic link"}
        kinds |= {stat.S_ISCHR: "a device", stat.S_ISBLK: "a device"}
        kind = next((name for test, name in kinds.items() if test(status.st_mode)), "a socket")
        raise UserInputError(f"{shown}: is {kind}, not a regular file")
    return status


# Values a YAML document may expand to, aliases followed: a config is a few hundred.
MAX_YAML_VALUES = 100_000


def check_yaml_expansion(stream: str) -> None:
    """Refuses a YAML document that expands to more than ``MAX_YAML_VALUES`` values, aliases followed, or nests
    too deeply to compose. One PyYAML cannot compose is left to the loader to report."""
    loader = yaml.SafeLoader(stream)
    try:
        bounded_node(loader, stream)
    except yaml.YAMLError:
        return
    finally:
        loader.dispose()


def bounded_node(loader: yaml.SafeLoader, stream: str) -> yaml.Node | None:
    """The composed document of ``loader`` (reading ``stream``), refused if it expands too far or nests too deep.

    Every walk of a built value pays for its aliases' full expansion, exponential when nested: the composed
    document is counted before anything is built.
    """
    try:
        node = loader.get_single_node()
    except RecursionError:  # PyYAML composes nested values recursively: thousands of levels exhaust the stack
        raise UserInputError(f"a YAML value is nested too deeply to read; refused, given: {stream[:60]!r}") from None
    count, stack = 0, [node] if node is not None else []
    while stack and count <= MAX_YAML_VALUES:
        current = stack.pop()
        count += 1
        if isinstance(current, yaml.SequenceNode):
            stack.extend(current.value)
        elif isinstance(current, yaml.MappingNode):
            stack.extend(item for pair in current.value for item in pair)
    if count > MAX_YAML_VALUES:
        raise UserInputError(
            f"a YAML value expands to more than {MAX_YAML_VALUES} values (nested aliases); refused, given:"
            f" {stream[:60]!r}"
        )
    return node


def bounded_yaml_load(stream: str) -> Any:
    """``yaml.safe_load`` of a document within ``check_yaml_expansion``'s bounds, composed once and built from it.

    Example:
        >>> bounded_yaml_load("a: [1, 2]")
        {'a': [1, 2]}
    """
    loader = yaml.SafeLoader(stream)
    try:
        node = bounded_node(loader, stream)
        return None if node is None else loader.construct_document(node)
    finally:
        loader.dispose()


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
        raise UserInputError(f"{what} need {nbytes / 1e9:.3g} GB of memory; {available / 1e9:.3g} GB is available")


def usable_cores() -> int:
    """CPU cores this process may run on."""
    try:
        return len(os.sched_getaffinity(0))
    except AttributeError:  # not on Linux
        return os.cpu_count() or 1
