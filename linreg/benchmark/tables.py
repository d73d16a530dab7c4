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
import subprocess
import sys
import tempfile
import time
from pathlib import Path

import numpy as np
import pyarrow as pa
import pyarrow.csv as pa_csv
import pyarrow.parquet as pq

from linreg.benchmark import peers
from linreg.benchmark.measure import run_process
from linreg.data.reading import read_table
from linreg.data.tables import BYTES_PER_VALUE
from linreg.validation import available_memory

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


PYARROW_READ = """
import sys, time
import pyarrow.dataset as pa_ds
start = time.perf_counter()
pa_ds.dataset(sys.argv[1], format="parquet").to_table()
print(time.perf_counter() - start)
"""


def _linreg_fit(config: str, data: Path, work: Path, extra: list[str]) -> dict:
    """One ``python -m linreg fit`` process on ``data``: wall time, peak memory, its epochs' times, its report."""
    timings = work / "epochs.json"
    timer = json.dumps({"class_path": "linreg.benchmark.measure.EpochTimer", "init_args": {"path": str(timings)}})
    command = [
        sys.executable, "-m", "linreg", "fit", "--config", config, "--data.path", str(data), "--data.target", "y",
        "--data.features", "null", "--trainer.accelerator", "cpu", "--trainer.logger.init_args.save_dir",
        str(work / "runs"), f"--trainer.callbacks+={timer}", *extra,
    ]  # fmt: skip
    wall, peak = run_process(command)
    epochs = json.loads(timings.read_text())
    runs = (work / "runs").glob("*/version_*")
    report = json.loads((max(runs, key=lambda p: p.stat().st_mtime) / "report.json").read_text())
    return {
        "seconds": wall,
        "epoch_seconds": epochs["epoch_seconds"],
        "fixed_seconds": wall - sum(epochs["epoch_seconds"]),  # start-up, statistics pass, evaluation, report
        # The fastest epoch: the first pays one-off costs (torch's first optimizer step imports its compiler).
        "train_rows_per_s": report["ols"]["num_examples"] / min(epochs["epoch_seconds"]),
        "peak_mib": peak / MIB,
        "epochs": report["epochs"],
        "largest_se_from_ols": max(abs(row["sgd_minus_ols_in_se"]) for row in report["parameters"]),
    }


def fits(args: argparse.Namespace, work: Path) -> dict:
    data = write_synthetic(work / "fit", args.rows, args.d, args.row_group)
    # The read is timed in a process of its own: a child forked from a parent holding the table would count
    # the parent's pages in its peak memory.
    read = float(
        subprocess.run([sys.executable, "-c", PYARROW_READ, str(data)], capture_output=True, check=True).stdout
    )
    in_memory_bytes = BYTES_PER_VALUE * args.rows * (args.d + 1)
    modes = ["false"] + (["true"] if in_memory_bytes < 0.5 * (available_memory() or 0) else [])
    results: dict = {"pyarrow_read_seconds": read}
    for mode in modes:
        extra = ["--data.in_memory", mode] + (["--trainer.max_epochs", str(args.epochs)] if args.epochs else [])
        if args.batch_size:
            extra += ["--data.batch_size", str(args.batch_size)]
        fit = _linreg_fit("configs/parquet.yaml", data, work, extra)
        fit["fixed/(2 reads + 4 s)"] = fit["fixed_seconds"] / (2 * read + 4)
        results["streamed" if mode == "false" else "in_memory"] = fit
        print(f"  fit in_memory={mode}: {fit['seconds']:.1f} s, peak {fit['peak_mib']:.0f} MiB", file=sys.stderr)
    if peers.available():  # the scikit-learn script doing the same work, for as many epochs as the streamed fit
        streamed = results["streamed"]
        streamed["sklearn_process_seconds"] = peers.sklearn_stream_process(data, streamed["epochs"])
        streamed["sklearn_process/linreg"] = streamed["sklearn_process_seconds"] / streamed["seconds"]
    return {
        "rows": args.rows,
        "features": args.d,
        "epochs": args.epochs,
        "data_mib": sum(p.stat().st_size for p in data.iterdir()) / MIB,
        "float32_mib": args.rows * (args.d + 1) * 4 / MIB,
        **results,
    }


def csv_command(args: argparse.Namespace, work: Path) -> dict:
    """The README's CSV command, whole process, against the scikit-learn script on the same file."""
    table = pq.read_table(write_synthetic(work / "csv", args.csv_rows, args.csv_d, args.row_group, files=1))
    csv = work / "table.csv"
    pa_csv.write_csv(table, csv)
    del table
    result = {"rows": args.csv_rows, "features": args.csv_d, "csv_mib": csv.stat().st_size / MIB}
    result["linreg"] = _linreg_fit("configs/csv.yaml", csv, work, [])
    if peers.available():
        result["sklearn_script_seconds"] = peers.sklearn_csv_process(csv)
        result["linreg/sklearn_script"] = result["linreg"]["seconds"] / result["sklearn_script_seconds"]
    return result


def tables(args: argparse.Namespace) -> dict:
    with tempfile.TemporaryDirectory(dir=args.workdir) as work:
        result = {"reads": reads(args, Path(work))} if args.read_rows else {}
        if args.rows:
            result["fit"] = fits(args, Path(work))
        if args.csv_rows:
            result["csv"] = csv_command(args, Path(work))
        if args.rows and peers.available():  # last: it holds the table in this process
            result["fit"]["sklearn"] = peers.sklearn_peers(Path(work) / "fit")
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
        print(f"fit: {f['rows']:,} x {f['features']} float32 Parquet ({f['data_mib']:.0f} MiB on disk,"
              f" {f['float32_mib']:.0f} MiB as float32), {f['epochs']} epoch(s); pyarrow reads it in"
              f" {f['pyarrow_read_seconds']:.2f} s")  # fmt: skip
        for mode in ("streamed", "in_memory"):
            if mode in f:
                m = f[mode]
                rate = f"{m['train_rows_per_s']:>10,.0f} rows/s an epoch"
                fixed = f"fixed {m['fixed_seconds']:5.1f} s ({m['fixed/(2 reads + 4 s)']:.2f}x of 2 reads + 4 s)"
                se = f"largest |estimate-OLS|/SE {m['largest_se_from_ols']:.2f}"
                print(f"  linreg {mode:<10} {rate}; {fixed}; whole {m['seconds']:5.1f} s ({m['epochs']} epochs);"
                      f" peak {m['peak_mib']:5.0f} MiB; {se}")  # fmt: skip
                if "sklearn_process_seconds" in m:
                    print(f"    sklearn's streaming script, the same work (scaling pass, {m['epochs']} partial_fit"
                          f" epochs, held-out scores): {m['sklearn_process_seconds']:.1f} s whole process;"
                          f" linreg {m['sklearn_process/linreg']:.2f}x its speed")  # fmt: skip
        for name, m in f.get("sklearn", {}).items():
            rate = f"{m['rows_per_s']:>10,.0f} rows/s" if "rows_per_s" in m else ""
            se = f"; largest |estimate-OLS|/SE {m['largest_se_from_ols']:.2f}" if "largest_se_from_ols" in m else ""
            print(f"  sklearn {name:<50} {m['seconds']:6.2f} s {rate}{se}")
    if "csv" in result:
        c = result["csv"]
        m = c["linreg"]
        print(f"csv: {c['rows']:,} x {c['features']} ({c['csv_mib']:.0f} MiB), fit --config configs/csv.yaml")
        print(f"  linreg whole process {m['seconds']:.1f} s ({m['epochs']} epochs, fixed {m['fixed_seconds']:.1f} s);"
              f" largest |estimate-OLS|/SE {m['largest_se_from_ols']:.2f}")  # fmt: skip
        if "sklearn_script_seconds" in c:
            print(f"  sklearn script (pyarrow read + SGDRegressor().fit) {c['sklearn_script_seconds']:.1f} s;"
                  f" linreg/sklearn {c['linreg/sklearn_script']:.1f}x")  # fmt: skip
