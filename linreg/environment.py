"""The process environment, checked once where the command starts, before Lightning reads it.

Lightning and torchmetrics read a process's rank (``RANK``, ``LOCAL_RANK``, ``SLURM_PROCID``...) on import:
``LOCAL_RANK=abc`` fails there with a traceback, and a rank left from another job (``RANK=1`` in one process) makes
this process think it is not the first, so it prints no error and writes no events. A launcher always sets the
number of processes beside a rank: a rank other than 0 without it is stale. ``JSONARGPARSE_DEBUG`` fails in
jsonargparse with a traceback on any value but true or false. Standard library only: checked before that import.
"""

from __future__ import annotations

import os
import sys
from collections.abc import Mapping

# The variables read, and the smallest value each takes (all are integers).
_INTEGERS = {
    "RANK": 0,
    "LOCAL_RANK": 0,
    "NODE_RANK": 0,
    "GROUP_RANK": 0,
    "WORLD_SIZE": 1,
    "LOCAL_WORLD_SIZE": 1,
    "SLURM_PROCID": 0,
    "SLURM_LOCALID": 0,
    "SLURM_NODEID": 0,
    "SLURM_NTASKS": 1,
    "JSM_NAMESPACE_RANK": 0,
    "JSM_NAMESPACE_SIZE": 1,
    "MASTER_PORT": 1,
}
# Each rank and the number of processes it counts up to, which the launcher that set the rank sets too.
_RANK_OF = {
    "RANK": "WORLD_SIZE",
    "LOCAL_RANK": "WORLD_SIZE",
    "SLURM_PROCID": "SLURM_NTASKS",
    "JSM_NAMESPACE_RANK": "JSM_NAMESPACE_SIZE",
}
# jsonargparse's debug switch: its own check of the value is a traceback.
_BOOLEANS = ("JSONARGPARSE_DEBUG",)


def environment_problem(environ: Mapping[str, str]) -> str | None:
    """What is wrong with the distributed (and debug) variables of ``environ``, in one line; None if nothing.

    Example:
        >>> environment_problem({"RANK": "1"})
        'RANK=1 is set but WORLD_SIZE is not: a rank left from another job? Unset RANK to run one process'
        >>> environment_problem({"RANK": "1", "WORLD_SIZE": "2"}) is None
        True
    """
    for name, smallest in _INTEGERS.items():
        value = environ.get(name)
        if value is not None and not (value.strip().isdigit() and int(value) >= smallest):
            return f"environment variable {name} must be an integer >= {smallest}, got {value!r}"
    for rank, size in _RANK_OF.items():
        if rank not in environ or int(environ[rank]) == 0:
            continue  # rank 0 alone is how one process is started anyway
        if size not in environ:
            return (
                f"{rank}={environ[rank]} is set but {size} is not: a rank left from another job?"
                f" Unset {rank} to run one process"
            )
        if int(environ[rank]) >= int(environ[size]):
            return f"{rank}={environ[rank]} must be below {size}={environ[size]} (ranks count from 0)"
    for name in _BOOLEANS:
        value = environ.get(name, "")
        if value.lower() not in ("", "true", "false"):
            return f"environment variable {name} must be true or false, got {value!r}"
    return None


def check_process_environment(prog: str = "linreg") -> None:
    """Exits with status 2 and one line on stderr if the process environment is unusable (``environment_problem``)."""
    problem = environment_problem(os.environ)
    if problem is not None:
        print(f"{prog}: error: {problem}", file=sys.stderr)
        raise SystemExit(2)
