"""Streamed fits end to end (slow): averaged SGD reaching least squares, and two processes sharing the row groups.

The truths are independent of the streaming code: least squares by ``numpy.linalg.lstsq`` on the training
rows read whole, and step counts from the row groups each process reads.
"""

from __future__ import annotations

import json
import subprocess
import sys
from pathlib import Path

import numpy as np
import pyarrow as pa
import pyarrow.parquet as pq
import pytest
import torch

from tests.conftest import ROOT
from tests.test_csv_data import split_rows

pytestmark = pytest.mark.slow

PARQUET_CONFIG = ROOT / "configs" / "parquet.yaml"


def write_parquet(path: Path, n: int, d: int, row_groups: list[int], seed: int = 0) -> np.ndarray:
    """``y = X w + 1 + N(0, 0.5)``, float32, in row groups of the given sizes; returns ``[X y]`` as float64."""
    assert sum(row_groups) == n
    rng = np.random.default_rng(seed)
    X = rng.normal(rng.uniform(-5, 5, d), rng.uniform(0.5, 3, d), size=(n, d)).astype(np.float32)
    y = (X @ rng.standard_normal(d) + 1.0 + 0.5 * rng.standard_normal(n)).astype(np.float32)
    table = pa.table({**{f"x{j}": X[:, j] for j in range(d)}, "y": y})
    with pq.ParquetWriter(path, table.schema) as writer:
        start = 0
        for size in row_groups:
            writer.write_table(table.slice(start, size), row_group_size=size)
            start += size
    return np.column_stack([X, y]).astype(np.float64)


def fit(save_dir: Path, path: Path, *extra: str) -> tuple[dict, str]:
    """``python -m linreg fit --config configs/parquet.yaml`` streamed; returns report.json and the output."""
    result = subprocess.run(
        [
            *(sys.executable, "-m", "linreg", "fit", "--config", str(PARQUET_CONFIG)),
            *("--data.path", str(path), "--data.target", "y", "--data.in_memory", "false"),
            *("--trainer.accelerator", "cpu", "--trainer.logger.init_args.save_dir", str(save_dir), *extra),
        ],
        capture_output=True,
        text=True,
        timeout=300,  # a process waiting on another that has stopped stepping would hang: fail instead
        check=False,
        cwd=ROOT,
    )
    assert result.returncode == 0, result.stderr[-3000:]
    return json.loads((save_dir / "parquet" / "version_0" / "report.json").read_text()), result.stdout


def assert_ols_is_least_squares_of_the_training_rows(report: dict, Z: np.ndarray) -> None:
    train = Z[split_rows(len(Z), 0.05, 0.05, seed=0)[0].numpy()]  # parquet.yaml's fractions and seed
    design = np.column_stack([train[:, :-1], np.ones(len(train))])
    solution = np.linalg.lstsq(design, train[:, -1], rcond=None)[0]
    np.testing.assert_allclose([row["ols"] for row in report["parameters"]], solution, rtol=1e-7, atol=1e-9)


def test_averaged_sgd_on_a_streamed_table_reaches_least_squares(tmp_path: Path) -> None:
    Z = write_parquet(tmp_path / "t.parquet", 200_000, 10, [16_384] * 12 + [3_392])
    report, _ = fit(tmp_path, tmp_path / "t.parquet")  # the config as it is: its own batch size and stopping rule
    assert report["estimator"]["averaged"]
    assert_ols_is_least_squares_of_the_training_rows(report, Z)
    assert max(abs(row["sgd_minus_ols_in_se"]) for row in report["parameters"]) <= 1.0


def test_two_processes_stream_their_own_row_groups_in_step(tmp_path: Path) -> None:
    """Five row groups: one process reads three, the other two; both stop after the shorter share's batches."""
    groups = [1500, 700, 1500, 700, 1600]
    Z = write_parquet(tmp_path / "t.parquet", sum(groups), 4, groups)
    report, printed = fit(
        tmp_path, tmp_path / "t.parquet",
        "--trainer.strategy", "ddp", "--trainer.devices", "2", "--data.batch_size", "32",
        "--trainer.max_epochs", "9", "--data.shuffle_buffer", "1000",
    )  # fmt: skip
    starts = np.cumsum([0, *groups])
    train = np.zeros(len(Z), dtype=bool)
    train[split_rows(len(Z), 0.05, 0.05, seed=0)[0].numpy()] = True
    shares = [sum(int(train[starts[g] : starts[g + 1]].sum()) for g in range(rank, len(groups), 2)) for rank in (0, 1)]
    assert shares[0] > shares[1] + 32  # unequal shares, so unequal batch counts had they not been evened
    checkpoint = tmp_path / "parquet" / "version_0" / "checkpoints" / "last.ckpt"
    assert torch.load(checkpoint, weights_only=True)["global_step"] == 9 * -(-shares[1] // 32)
    assert printed.count("largest |ASGD-OLS|/SE:") == 1
    assert_ols_is_least_squares_of_the_training_rows(report, Z)
    assert max(abs(row["sgd_minus_ols_in_se"]) for row in report["parameters"]) <= 3.0
