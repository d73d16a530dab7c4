"""The process environment is checked once, where the command starts: one line for a variable that cannot be right."""

from __future__ import annotations

import os
import subprocess
import sys
from pathlib import Path

import pytest

from linreg.environment import environment_problem
from tests.conftest import D2L_CONFIG, ROOT


@pytest.mark.parametrize(
    ("environ", "named"),
    [
        ({"LOCAL_RANK": "abc"}, "LOCAL_RANK must be an integer >= 0, got 'abc'"),
        ({"WORLD_SIZE": "0"}, "WORLD_SIZE must be an integer >= 1, got '0'"),
        ({"MASTER_PORT": "-1"}, "MASTER_PORT must be an integer >= 1, got '-1'"),
        ({"RANK": "1"}, "RANK=1 is set but WORLD_SIZE is not"),
        ({"SLURM_PROCID": "3"}, "SLURM_PROCID=3 is set but SLURM_NTASKS is not"),
        ({"RANK": "2", "WORLD_SIZE": "2"}, "RANK=2 must be below WORLD_SIZE=2"),
        ({"JSONARGPARSE_DEBUG": "1"}, "JSONARGPARSE_DEBUG must be true or false, got '1'"),
    ],
)
def test_an_unusable_variable_is_named_with_its_value(environ: dict[str, str], named: str) -> None:
    assert named in (environment_problem(environ) or "")


@pytest.mark.parametrize(
    "environ",
    [
        {},
        {"RANK": "0"},  # rank 0 alone is one process
        {"LOCAL_RANK": "1", "WORLD_SIZE": "2", "NODE_RANK": "0", "MASTER_ADDR": "127.0.0.1", "MASTER_PORT": "29500"},
        {"SLURM_PROCID": "1", "SLURM_NTASKS": "4"},
        {"JSONARGPARSE_DEBUG": "True"},
    ],
)
def test_what_launchers_set_is_accepted(environ: dict[str, str]) -> None:
    assert environment_problem(environ) is None


def test_a_stale_rank_is_refused_before_anything_is_written(tmp_path: Path) -> None:
    # Lightning would read RANK=1 on import and keep this process silent: no error printed, no events written.
    result = subprocess.run(
        [*(sys.executable, "-m", "linreg", "fit", "--config", str(D2L_CONFIG))],
        capture_output=True,
        text=True,
        check=False,
        cwd=tmp_path,
        env={**os.environ, "PYTHONPATH": str(ROOT), "RANK": "1"},
    )
    assert result.returncode == 2
    assert result.stderr.splitlines() == [
        "linreg: error: RANK=1 is set but WORLD_SIZE is not: a rank left from another job?"
        " Unset RANK to run one process"
    ]
    assert list(tmp_path.iterdir()) == []
