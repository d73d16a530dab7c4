"""``python -m linreg.benchmark tables``: reading CSV and Parquet, and fitting a Parquet data set streamed or in memory.

- reads: one table of ``--read-rows`` x ``--d`` written as CSV and as Parquet; seconds of this project's
  ``read_table`` (into float64 tensors, every cell checked) against ``pyarrow.csv.read_csv``,
  ``pyarrow.parquet.read_table`` and, when pandas is installed, ``pandas.read_csv``/``read_parquet``.
- fit: a synthetic data set of ``--rows`` x ``--d`` float32 (``y = X w + 1 + N(0, 0.1)``) in Parquet files
  of row groups of ``--row-group`` rows, fitted by ``python -m linreg fit --config configs/parquet.yaml``
  for ``--epochs`` epochs, streamed and (when it fits in half the free memory) in memory: whole-process
  wall time, training rows per second over it, peak resident memory, and the report's largest distance
  of the estimate from least squares in standard errors.
"""

from __future__ import annotations

import argparse
import importlib.util
import json
import sys
import tempfile
import time
from pathlib import Path

import numpy as np
import pyarrow as pa
import pyarrow.csv as pa_csv
import pyarrow.parquet as pq

from linreg.benchmark.measure import run_process
from linreg.data.streamed import BYTES_PER_VALUE, available_memory
from linreg.data.table import read_table

MIB = 2**20


def write_synthetic(directory: Path, rows: int, d: int, row_group: int, files: int = 4, seed: int = 0) -> Path:
    """A directory of ``files`` Parquet files holding ``rows`` rows of ``x0..x{d-1}, y`` in float32, block by block."""
    rng = np.random.default_rng(seed)
    w = rng.standard_normal(d).astype(np.float32)
    per_file = -(-rows // files)
    directory.mkdir(parents=True, exist_ok=True)
    schema = pa.schema([*(pa.field(f"x{j}", pa.float32()) for j in range(d)), pa.field("y", pa.float32())])
    for f in range(files):
        n_file = min(per_file, rows - f * per_file)
        with pq.ParquetWriter(directory / f"part-{f:03d}.parquet", schema) as writer:
            for start in range(0, n_file, row_group):
                n = min(row_group, n_file - start)
                X = rng.standard_normal((n, d), dtype=np.float32)
                y = X @ w + 1.0 + 0.1 * rng.standard_normal(n, dtype=np.float32)
                columns = [*(X[:, j] for j in range(d)), y]
                writer.write_table(pa.Table.from_arrays(columns, schema=schema), row_group_size=row_group)
    return directory


def _seconds(function: object) -> float:
    start = time.perf_counter()
    function()  # type: ignore[operator]
    return time.perf_counter() - start


def reads(args: argparse.Namespace, work: Path) -> dict:
    table = pq.read_table(write_synthetic(work / "read", args.read_rows, args.d, args.row_group, files=1))
    csv_path, parquet_path = work / "read.csv", work / "read.parquet"
    pa_csv.write_csv(table, csv_path)
    pq.write_table(table, parquet_path)
    names = table.column_names
    candidates = {
        "csv": {
            "linreg read_table": lambda: read_table(csv_path, names),
            "pyarrow.csv.read_csv": lambda: pa_csv.read_csv(csv_path),
        },
        "parquet": {
            "linreg read_table": lambda: read_table(parquet_path, names),
            "pyarrow.parquet.read_table": lambda: pq.read_table(parquet_path),
        },
    }
    if importlib.util.find_spec("pandas") is not None:
        import pandas as pd

        candidates["csv"]["pandas.read_csv"] = lambda: pd.read_csv(csv_path)
        candidates["parquet"]["pandas.read_parquet"] = lambda: pd.read_parquet(parquet_path)
    seconds = {
        kind: {name: min(_seconds(f) for _ in range(args.repeats)) for name, f in funcs.items()}
        for kind, funcs in candidates.items()
    }
    return {
        "rows": args.read_rows,
        "columns": args.d + 1,
        "csv_mib": csv_path.stat().st_size / MIB,
        "parquet_mib": parquet_path.stat().st_size / MIB,
        "seconds": seconds,
        "ratios": {
            "csv linreg/pyarrow": seconds["csv"]["linreg read_table"] / seconds["csv"]["pyarrow.csv.read_csv"],
            "parquet linreg/pyarrow": seconds["parquet"]["linreg read_table"]
            / seconds["parquet"]["pyarrow.parquet.read_table"],
        },
    }


def fits(args: argparse.Namespace, work: Path) -> dict:
    data = write_synthetic(work / "fit", args.rows, args.d, args.row_group)
    in_memory_bytes = BYTES_PER_VALUE * args.rows * (args.d + 1)
    modes = ["false"] + (["true"] if in_memory_bytes < 0.5 * available_memory() else [])
    results = {}
    for mode in modes:
        command = [
            sys.executable, "-m", "linreg", "fit", "--config", "configs/parquet.yaml",
            "--data.path", str(data), "--data.target", "y", "--data.in_memory", mode,
            "--data.batch_size", str(args.batch_size), "--trainer.max_epochs", str(args.epochs),
            "--trainer.accelerator", "cpu", "--trainer.logger.init_args.save_dir", str(work / "runs"),
        ]  # fmt: skip
        wall, peak = run_process(command)
        train_rows = args.rows * 0.98 * args.epochs  # parquet.yaml holds 1% + 1% out
        runs = (work / "runs" / "parquet").glob("version_*")
        report = json.loads((max(runs, key=lambda p: int(p.name.split("_")[1])) / "report.json").read_text())
        results["streamed" if mode == "false" else "in_memory"] = {
            "seconds": wall,
            "rows_per_s": train_rows / wall,
            "peak_mib": peak / MIB,
            "largest_se_from_ols": max(abs(row["sgd_minus_ols_in_se"]) for row in report["parameters"]),
        }
        print(f"  fit in_memory={mode}: {wall:.1f} s, peak {peak / MIB:.0f} MiB", file=sys.stderr)
    ratio = None
    if "in_memory" in results:
        ratio = results["streamed"]["rows_per_s"] / results["in_memory"]["rows_per_s"]
    return {
        "rows": args.rows,
        "features": args.d,
        "epochs": args.epochs,
        "data_mib": sum(p.stat().st_size for p in data.iterdir()) / MIB,
        **results,
        "streamed/in_memory": ratio,
    }


def tables(args: argparse.Namespace) -> dict:
    with tempfile.TemporaryDirectory(dir=args.workdir) as work:
        result = {"reads": reads(args, Path(work))} if args.read_rows else {}
        if args.rows:
            result["fit"] = fits(args, Path(work))
    return result


def print_tables(result: dict) -> None:
    if "reads" in result:
        r = result["reads"]
        sizes = f"CSV {r['csv_mib']:.0f} MiB, Parquet {r['parquet_mib']:.0f} MiB"
        print(f"reads: {r['rows']:,} rows x {r['columns']} columns ({sizes})")
        for kind, seconds in r["seconds"].items():
            for name, value in seconds.items():
                print(f"  {kind:<8} {name:<28} {value:7.2f} s  {r['rows'] / value:>12,.0f} rows/s")
        for name, value in r["ratios"].items():
            print(f"  {name:<26} {value:5.2f}x")
    if "fit" in result:
        f = result["fit"]
        print(f"fit: {f['rows']:,} x {f['features']} float32 Parquet ({f['data_mib']:.0f} MiB), {f['epochs']} epoch(s)")
        for mode in ("streamed", "in_memory"):
            if mode in f:
                m = f[mode]
                rate = f"{m['rows_per_s']:>10,.0f} rows/s"
                se = f"largest |estimate-OLS|/SE {m['largest_se_from_ols']:.2f}"
                print(f"  {mode:<10} {m['seconds']:7.1f} s  {rate}  peak {m['peak_mib']:6.0f} MiB  {se}")
        if f["streamed/in_memory"] is not None:
            print(f"  streamed/in_memory throughput {f['streamed/in_memory']:.2f}x")
