"""``python -m linreg.benchmark [loops|process|memory]``: figures, never pass/fail.

- ``loops`` (default): one epoch of SGD on the same generated data, repeats alternating between
  (1) the book's loop, ``DataLoader(TensorDataset)``, (2) a fused plain loop (one permutation per
  epoch, each batch gathered whole with ``X[idx]``, no DataLoader), (2b) the same with
  ``X.index_select(0, idx)``, a faster gather on the CPU, and (3) this project's data module and model
  run by the Trainer exactly as ``fit`` builds them from a config; examples/s, medians, ratios.
- ``process``: the whole ``python -m linreg fit --config configs/d2l.yaml`` process against the whole
  plain script of the book (``linreg/benchmark/book.py``), wall time and peak memory.
- ``memory``: peak memory of ``fit --config configs/large.yaml`` against its tensors' bytes + 600 MiB.
- ``tables``: CSV and Parquet read rates against pyarrow's (and pandas', if installed) read calls, and a
  synthetic Parquet data set fitted streamed and in memory (``linreg/benchmark/tables.py``).
"""

from __future__ import annotations

import argparse
import json
import logging
import statistics
import sys
import tempfile
import time
from pathlib import Path
from unittest import mock

from linreg.benchmark.loops import bare_lightning_loop, book_loop, fused_loop
from linreg.benchmark.measure import lightning_epoch, run_process
from linreg.benchmark.tables import print_tables, tables

MIB = 2**20


def _loops(args: argparse.Namespace) -> dict:
    import torch

    from linreg.callbacks.progress import quiet_lightning
    from linreg.cli import build_cli
    from linreg.grouped import GroupedStepsRegression

    quiet_lightning()
    logging.getLogger("lightning.pytorch").setLevel(logging.WARNING)  # no per-run banners between the figures
    # The config's data: generated (num_train x d), or the table given by --table (its column y the target).
    data_args = ["--data.num_train", str(args.n), "--data.true_w", str(args.d)]
    if args.table:
        data_args = ["--data.path", args.table, "--data.target", "y", "--data.features", "null"]
    overrides = [
        "--config", args.config, *data_args,
        "--trainer.max_epochs", str(args.epochs), "--trainer.accelerator", args.accelerator or "cpu",
    ]  # fmt: skip
    with mock.patch.object(sys, "argv", [sys.argv[0]]):
        configured = build_cli(["--config", args.config, *data_args], run=False)  # builds, reads no rows
    if isinstance(configured.model, GroupedStepsRegression):  # SGD steps of --batch-size rows, grouped as configured
        steps = args.steps_per_batch or configured.datamodule.batch_size // configured.model.mini_batch_size
        overrides += [
            "--model.mini_batch_size",
            str(args.batch_size),
            "--data.batch_size",
            str(args.batch_size * steps),
        ]
    else:
        overrides += ["--data.batch_size", str(args.batch_size)]
    with tempfile.TemporaryDirectory() as runs:

        def build() -> object:
            with mock.patch.object(sys, "argv", [sys.argv[0]]):  # the CLI reads only the overrides
                return build_cli([*overrides, "--trainer.logger.init_args.save_dir", runs], run=False)

        cli = build()
        data = cli.datamodule
        data.setup("fit")  # the tensors every loop below trains on
        X, y = data.train_data
        device = cli.trainer.strategy.root_device
        lr = cli.model.configure_optimizers().defaults["lr"]  # the config's learning rate, for every loop
        loops = {
            "book_loop": lambda: book_loop(X, y, args.batch_size, lr, device),
            "fused_loop": lambda: fused_loop(X, y, args.batch_size, lr, device),
            "fused_index_select": lambda: fused_loop(X, y, args.batch_size, lr, device, gather="index_select"),
            "bare_lightning": lambda: bare_lightning_loop(X, y, args.batch_size, lr, device),
            "linreg": lambda: lightning_epoch(build, data),
        }
        results: dict[str, list[float]] = {name: [] for name in loops}
        for loop in loops.values():  # warm-up: first-call costs (imports, allocator) are not timed
            loop()
        for repeat in range(args.repeats):
            for name, loop in loops.items():
                results[name].append(loop())
                print(f"repeat {repeat + 1}: {name:<19} {results[name][-1]:>12,.0f} examples/s", file=sys.stderr)
    medians = {name: statistics.median(values) for name, values in results.items()}
    return {
        "setup": {
            **{k: v for k, v in vars(args).items() if k != "json"},
            "device": str(device),
            "torch": torch.__version__,
        },
        "examples_per_s": results,
        "median_examples_per_s": medians,
        "ratios": {
            "linreg/fused_loop": medians["linreg"] / medians["fused_loop"],
            "linreg/fused_index_select": medians["linreg"] / medians["fused_index_select"],
            "linreg/book_loop": medians["linreg"] / medians["book_loop"],
            # Time per step, linreg's over a bare Lightning step's on the same batches (1.0: no cost of its own).
            "linreg_step/bare_lightning_step": medians["bare_lightning"] / medians["linreg"],
        },
    }


def _process(args: argparse.Namespace) -> dict:
    book_script = [sys.executable, str(Path(__file__).with_name("book.py"))]
    with tempfile.TemporaryDirectory() as runs:
        fit = [
            sys.executable,
            "-m",
            "linreg",
            "fit",
            "--config",
            args.config,
            "--trainer.logger.init_args.save_dir",
            runs,
        ]
        commands = {"book_script": book_script, "linreg_fit": fit}
        for command in commands.values():  # warm-up: file-system caches
            run_process(command)
        seconds: dict[str, list[float]] = {name: [] for name in commands}
        peak_mib: dict[str, list[float]] = {name: [] for name in commands}
        for repeat in range(args.repeats):
            for name, command in commands.items():
                wall, peak = run_process(command)
                seconds[name].append(wall)
                peak_mib[name].append(peak / MIB)
                print(f"repeat {repeat + 1}: {name:<11} {wall:6.2f} s  peak {peak / MIB:6.0f} MiB", file=sys.stderr)
    medians = {name: statistics.median(values) for name, values in seconds.items()}
    return {
        "setup": {"config": args.config, "repeats": args.repeats, "accelerator": args.accelerator or "the config's"},
        "seconds": seconds,
        "peak_mib": peak_mib,
        "median_seconds": medians,
        "ratios": {"linreg_fit/book_script": medians["linreg_fit"] / medians["book_script"]},
    }


def _memory(args: argparse.Namespace) -> dict:
    from linreg.callbacks.progress import quiet_lightning
    from linreg.cli import build_cli
    from linreg.data import SyntheticRegressionData

    quiet_lightning()
    with tempfile.TemporaryDirectory() as runs:
        overrides = ["--config", args.config, "--trainer.logger.init_args.save_dir", runs]
        if args.accelerator:
            overrides += ["--trainer.accelerator", args.accelerator]
        with mock.patch.object(sys, "argv", [sys.argv[0]]):  # the CLI reads only the overrides
            data = build_cli(overrides, run=False).datamodule  # the config's sizes, without drawing the data
        if not isinstance(data, SyntheticRegressionData):
            raise SystemExit("memory: the config must use SyntheticRegressionData (its size is known in advance)")
        rows = data.num_train + data.num_val + data.num_test
        tensor_bytes = rows * (data.input_dim + 1) * 4  # float32 X and y
        wall, peak = run_process([sys.executable, "-m", "linreg", "fit", *overrides])
    return {
        "setup": {"config": args.config},
        "seconds": wall,
        "peak_mib": peak / MIB,
        "tensor_mib": tensor_bytes / MIB,
        "budget_mib": tensor_bytes / MIB + 600,
        "peak_minus_tensors_mib": (peak - tensor_bytes) / MIB,
        "within_budget": peak / MIB <= tensor_bytes / MIB + 600,
    }


def _print(mode: str, result: dict) -> None:
    if mode == "tables":
        print_tables(result)
    elif mode == "loops":
        s = result["setup"]
        print(f"one epoch, N={s['n']:,} d={s['d']} batch={s['batch_size']} on {s['device']} (torch {s['torch']})")
        for name, value in result["median_examples_per_s"].items():
            print(f"  {name:<19} {value:>12,.0f} examples/s (median of {s['repeats']})")
        for name, value in result["ratios"].items():
            print(f"  {name:<26} {value:6.2f}x")
    elif mode == "process":
        for name, value in result["median_seconds"].items():
            print(f"  {name:<12} {value:6.2f} s  peak {max(result['peak_mib'][name]):6.0f} MiB")
        print(f"  linreg_fit/book_script {result['ratios']['linreg_fit/book_script']:.2f}x")
    else:
        print(
            f"  fit --config {result['setup']['config']}: {result['seconds']:.1f} s, peak {result['peak_mib']:.0f} MiB"
        )
        print(f"  tensors {result['tensor_mib']:.0f} MiB; budget tensors + 600 MiB = {result['budget_mib']:.0f} MiB")
        print(f"  peak - tensors = {result['peak_minus_tensors_mib']:.0f} MiB")
        over = result["peak_mib"] - result["budget_mib"]
        verdict = "within the budget" if result["within_budget"] else f"OVER the budget by {over:.0f} MiB"
        print(f"  verdict: peak {result['peak_mib']:.0f} MiB, {verdict} of {result['budget_mib']:.0f} MiB")


def main(argv: list[str] | None = None) -> None:
    parser = argparse.ArgumentParser(prog="python -m linreg.benchmark", description=__doc__.split("\n\n")[0])
    parser.add_argument("mode", nargs="?", default="loops", choices=["loops", "process", "memory", "tables"])
    parser.add_argument(
        "--config", help="config of the linreg run (default: large.yaml for loops/memory, d2l.yaml for process)"
    )
    parser.add_argument("--n", type=int, default=1_000_000, help="training examples (loops)")
    parser.add_argument(
        "--table", help="loops: a CSV or Parquet table (target column y) to train on, for a table config"
    )
    parser.add_argument("--d", type=int, default=100, help="features (loops, tables)")
    parser.add_argument("--batch-size", type=int, help="examples per SGD step (loops: 1024; tables: the config's)")
    parser.add_argument(
        "--steps-per-batch",
        type=int,
        help="SGD steps per Lightning step where the config's model is GroupedStepsRegression (loops)",
    )
    parser.add_argument(
        "--epochs", type=int, help="epochs per timed linreg run (loops: 1; tables: the config's own stopping rule)"
    )
    parser.add_argument("--repeats", type=int, default=3, help="timed repeats of each candidate")
    parser.add_argument(
        "--accelerator", choices=["cpu", "gpu", "cuda", "auto"], help="loops: default cpu; others: the config's"
    )
    parser.add_argument("--rows", type=int, default=2_000_000, help="rows of the data set fitted (tables; 0: none)")
    parser.add_argument("--read-rows", type=int, default=1_000_000, help="rows of the table read (tables; 0: none)")
    parser.add_argument("--row-group", type=int, default=131_072, help="rows per Parquet row group (tables)")
    parser.add_argument("--csv-rows", type=int, default=1_000_000, help="rows of the CSV fitted (tables; 0: none)")
    parser.add_argument("--csv-d", type=int, default=20, help="features of the CSV fitted (tables)")
    parser.add_argument("--workdir", help="where the tables' files are written (tables; default: the temp dir)")
    parser.add_argument("--json", action="store_true", help="print one JSON object instead of the summary")
    args = parser.parse_args(argv)
    if args.mode == "loops":
        args.batch_size = args.batch_size or 1024
        args.epochs = args.epochs or 1
    if args.config is None:
        args.config = "configs/d2l.yaml" if args.mode == "process" else "configs/large.yaml"
    if not Path(args.config).is_file():
        parser.error(f"--config: no such file: {args.config!r} (run from the repository root)")
    started = time.perf_counter()
    result = {"loops": _loops, "process": _process, "memory": _memory, "tables": tables}[args.mode](args)
    result["benchmark_seconds"] = time.perf_counter() - started
    if args.json:
        print(json.dumps(result, indent=2))
    else:
        _print(args.mode, result)


if __name__ == "__main__":
    main()
