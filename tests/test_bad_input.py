"""Every kind of bad input gets one short line naming it, a non-zero exit, no traceback, and changes no file.

Each case runs the command line in a directory that holds earlier results (finished runs, checkpoints
of several kinds, config files, a FIFO); after the refusal every file there must be byte for byte as
before, and no file or directory may have been added: a refused run leaves no ``version_N`` behind.
"""

from __future__ import annotations

import hashlib
import importlib.util
import os
import subprocess
import sys
from pathlib import Path

import pytest
import torch

from linreg.errors import find_user_error
from tests.conftest import D2L_CONFIG, run_cli

# In the arguments, {d} is the directory of earlier results and {config} the d2l config.
FIT = ("fit", "--config", "{config}", "--trainer.logger.init_args.save_dir", "{d}/runs")
CSV = (*FIT, "--data", "CSVRegressionData", "--data.path")
LONG_VALUE = str(list(range(20_000)))  # 128,890 characters: a message shows its start and says how long it is

CASES = [
    # --- config values and types ---
    ("batch-size-zero", [*FIT, "--data.batch_size", "0"], "data: batch_size must be an integer >= 1, got 0"),
    ("lr-negative", [*FIT, "--model.optimizer.lr", "-0.1"], "model.optimizer: Invalid learning rate: -0.1"),
    (
        "optimizer-unknown",
        [*FIT, "--model.optimizer", "torch.optim.Nope"],
        ('Parser key "optimizer"', "module 'torch.optim' has no attribute 'Nope'"),
    ),
    (
        "optimizer-without-lr",  # the config's lr 0.03 is SGD's; jsonargparse would carry it over to Adam
        [*FIT, "--model.optimizer", "Adam"],
        "model.optimizer Adam was given without its learning rate; give --model.optimizer.lr too",
    ),
    ("max-epochs-text", [*FIT, "--trainer.max_epochs", "abc"], "trainer.max_epochs must be an integer, got 'abc'"),
    # A value refused by the parser's type inside a class the config names: its key and the table's rule.
    ("lr-nan", [*FIT, "--model.optimizer.lr", "nan"], "model.optimizer.lr must be a finite number > 0, got 'nan'"),
    ("max-epochs-negative", [*FIT, "--trainer.max_epochs", "-5"], "`max_epochs` must be a non-negative integer or -1"),
    ("save-last-true", [*FIT, "--checkpoint.save_last", "true"], "checkpoint.save_last must stay false, got True"),
    ("devices-zero", [*FIT, "--trainer.devices", "0"], "trainer: `Trainer(devices='0')` value is not a valid input"),
    # --- unknown keys ---
    # --- unknown keys, named as given, with the nearest valid ones ---
    (
        "unknown-group-option",  # a prefix of --trainer.max_epochs: refused, not completed
        [*FIT, "--trainer.max_epoch", "10"],
        "unknown option --trainer.max_epoch; did you mean --trainer.max_epochs or",
    ),
    (
        "unknown-class-option",
        [*FIT, "--model.optimizer.learning_rate", "0.1"],
        "unknown option --model.optimizer.learning_rate; did you mean --model.optimizer.lr?",
    ),
    (
        "lightning-optimizer-group",  # it would replace the model's optimizer: the model's own is the one option
        [*FIT, "--optimizer", "Adam"],
        "unknown option --optimizer; did you mean --model.optimizer?",
    ),
    (
        "unknown-key-in-file",
        ["fit", "--config", "{d}/typo.yaml"],
        "unknown option 'trainer.max_epoch' in the config; did you mean trainer.max_epochs or",
    ),
    (
        "unknown-class-key-in-file",
        ["fit", "--config", "{d}/typo_init_arg.yaml"],
        "unknown option 'batchsize' of SyntheticRegressionData in the config; did you mean batch_size",
    ),
    # --- subcommand ---
    ("wrong-subcommand", ["train", "--config", "{config}"], "invalid choice: 'train'"),
    ("no-subcommand", [], 'expected "subcommand" to be one of {{fit,validate,test,predict}}'),
    # --- config file ---
    ("config-missing", ["fit", "--config", "{d}/nope.yaml"], "File does not exist: '{d}/nope.yaml'"),
    ("config-invalid-yaml", ["fit", "--config", "{d}/broken.yaml"], "{d}/broken.yaml: not valid YAML: line 3"),
    ("config-not-a-mapping", ["fit", "--config", "{d}/list.yaml"], "Unexpected config"),
    # --- checkpoints ---
    ("ckpt-missing", [*FIT, "--ckpt_path", "{d}/nope.ckpt"], "checkpoint not found: {d}/nope.ckpt"),
    ("ckpt-directory", [*FIT, "--ckpt_path", "{d}/runs"], "checkpoint: {d}/runs: is a directory, not a regular file"),
    ("ckpt-text-file", [*FIT, "--ckpt_path", "{d}/notes.ckpt"], "{d}/notes.ckpt cannot be read: not a PyTorch"),
    ("ckpt-empty", [*FIT, "--ckpt_path", "{d}/empty.ckpt"], "{d}/empty.ckpt cannot be read: not a PyTorch"),
    ("ckpt-truncated", [*FIT, "--ckpt_path", "{d}/truncated.ckpt"], "truncated or damaged (PytorchStreamReader failed"),
    ("ckpt-not-lightning", [*FIT, "--ckpt_path", "{d}/tensor.ckpt"], "tensor.ckpt: not a Lightning checkpoint"),
    ("ckpt-malicious", [*FIT, "--ckpt_path", "{d}/evil.ckpt"], "refused to load checkpoint {d}/evil.ckpt: it holds"),
    (
        "ckpt-other-input-dim",
        [*FIT, "--ckpt_path", "{d}/three.ckpt"],
        "does not fit this model: net.0.weight has shape [1, 3] there, [1, 5] here (input_dim 3 there, 5 here)",
    ),
    ("ckpt-weights-only-for-fit", [*FIT, "--ckpt_path", "{d}/weights.ckpt"], "holds the weights only"),
    ("ckpt-best-in-new-process", ["test", "--config", "{config}", "--ckpt_path", "best"], "ckpt_path 'best' names"),
    ("ckpt-last-without-logger", [*FIT, "--trainer.logger", "false", "--ckpt_path", "last"], "trainer.logger is off"),
    ("weights-only-false", [*FIT, "--ckpt_path", "{d}/last.ckpt", "--weights_only", "false"], "weights_only must stay"),
    # --- run directories ---
    (
        "log-dir-of-an-earlier-run",
        [*FIT, "--trainer.logger.init_args.version", "0"],
        "{d}/runs/d2l/version_0 already holds a run",
    ),
    (
        "no-logger-dir-of-an-earlier-run",
        [
            "fit",
            "--config",
            "{config}",
            "--trainer.logger",
            "false",
            "--trainer.default_root_dir",
            "{d}/runs/d2l/version_0",
        ],
        "{d}/runs/d2l/version_0 already holds a run",
    ),
    # --- data files (CSV): the header is checked when the data module is built, the rows before any file is
    # written (prepare_data runs before the logger makes the run directory) ---
    ("csv-missing", [*CSV, "{d}/nope.csv", "--data.target", "y"], "{d}/nope.csv: no such file"),
    ("csv-target-missing", [*CSV, "{d}/good.csv", "--data.target", "price"], "data: {d}/good.csv: no column 'price'"),
    ("csv-not-a-number", [*CSV, "{d}/text.csv", "--data.target", "y"], "line 4, column 'x2': 'n/a' is not a number"),
]
CASES += [
    # --- an optimizer's own checks, answered as the config key that built it ---
    (
        "scheduler-lr-turns-negative",
        [*FIT, "--model.scheduler", "ExponentialLR", "--model.scheduler.gamma", "-1"],
        "model.scheduler at epoch 1: the learning rate must be a finite number > 0, got -0.03",
    ),
    (
        "adam-betas-out-of-range",
        [*FIT, "--model.optimizer", "Adam", "--model.optimizer.lr", "0.1", "--model.optimizer.betas", "[2.0, 0.9]"],
        "model.optimizer: Invalid beta parameter at index 0: 2.0",
    ),
    # --- Lightning's checks that come only once fit runs ---
    ("seed-negative", [*FIT, "--seed_everything", "-5"], "seed_everything must be an integer from 0"),
    ("val-check-interval-zero", [*FIT, "--trainer.val_check_interval", "0"], "trainer.val_check_interval must be"),
    ("check-val-every-zero", [*FIT, "--trainer.check_val_every_n_epoch", "0"], "trainer.check_val_every_n_epoch"),
    # --- sizes beyond the machine ---
    ("num-train-beyond-memory", [*FIT, "--data.num_train", "1000000000000"], "examples (num_train + num_val"),
    ("true-w-beyond-memory", [*FIT, "--data.true_w", "300000000"], "of 300000000 features need"),
    (
        "cpu-processes-beyond-cores",
        [*FIT, "--trainer.devices", "9999", "--trainer.strategy", "ddp", "--trainer.accelerator", "cpu"],
        "trainer.devices: 9999 processes on the CPU",
    ),
    (
        "long-value-cut",
        [*FIT, "--data.batch_size", LONG_VALUE],
        (f"data.batch_size must be an integer >= 1, got '{LONG_VALUE[:40]}", "characters)"),
    ),
    # --- config files ---
    ("config-model-a-list", ["fit", "--config", "{d}/model_list.yaml"], ('Parser key "model"', "[1, 2]")),
    ("config-fifo", ["fit", "--config", "{d}/fifo"], "--config: {d}/fifo: is a FIFO, not a regular file"),
    # --- files that are not regular files ---
    ("csv-fifo", [*CSV, "{d}/fifo", "--data.target", "y"], "data: {d}/fifo: is a FIFO, not a regular file"),
    ("ckpt-fifo", [*FIT, "--ckpt_path", "{d}/fifo"], "--ckpt_path: {d}/fifo: is a FIFO, not a regular file"),
    ("class-group-fifo", [*FIT, "--data", "{d}/fifo"], "--data: {d}/fifo: is a FIFO, not a regular file"),
    # --- statistics that overflow ---
    (
        "csv-target-overflows",
        [*CSV, "{d}/huge_y.csv", "--data.target", "y"],
        "column 'y' is too large for the statistics",
    ),
    # --- checkpoints that do not fit this run ---
    ("ckpt-nan-weights-fit", [*FIT, "--ckpt_path", "{d}/nan.ckpt"], "nan.ckpt: state_dict['net.0.weight'] must"),
    ("ckpt-no-loops", [*FIT, "--ckpt_path", "{d}/no_loops.ckpt"], "{d}/no_loops.ckpt: lacks loops"),
    (
        "ckpt-sgd-resumed-as-adam",
        [*FIT, "--model.optimizer", "Adam", "--model.optimizer.lr", "0.03", "--ckpt_path", "{d}/last.ckpt"],
        "{d}/last.ckpt: was trained with another optimizer",
    ),
    (
        "ckpt-of-another-configuration",
        [*FIT, "--data.batch_size", "5", "--ckpt_path", "{d}/runs/d2l/version_0/checkpoints/last.ckpt"],
        "belongs to a run with other settings (data.batch_size 10 there, 5 here",
    ),
    (
        "ckpt-csv-for-synthetic-data",
        ["validate", "--config", "{config}", "--data.true_w", "[1.0, 2.0]", "--ckpt_path", "{d}/csv.ckpt"],
        "{d}/csv.ckpt: was trained on CSVRegressionData data",
    ),
    (
        "ckpt-synthetic-for-csv-data",
        ["validate", *CSV[1:], "{d}/good.csv", "--data.target", "y", "--ckpt_path", "{d}/two.ckpt"],
        "{d}/two.ckpt: holds no CSVRegressionData state",
    ),
    ("test-without-a-fit", ["test", "--config", "{config}"], "test needs trained weights and no --ckpt_path"),
    # --- a class of Lightning's named by the config refusing its arguments, answered as that key ---
    ("checkpoint-group-check", [*FIT, "--checkpoint.mode", "foo"], "checkpoint: `mode` can be min, max but got foo"),
    (
        "callback-check",
        [
            *FIT,
            "--trainer.callbacks+=EarlyStopping",
            "--trainer.callbacks.monitor",
            "val/loss",
            "--trainer.callbacks.mode",
            "bad",
        ],
        "trainer.callbacks[0]: `mode` can be min, max, got bad",
    ),
]
CASES += [
    # --- a configured object that refuses a value only once the command runs, answered as its key ---
    (
        "scheduler-refuses-at-its-first-step",
        [*FIT, "--data.num_train", "100", "--model.scheduler", "StepLR", "--model.scheduler.step_size", "0"],
        "model.scheduler (StepLR) when stepped: integer modulo by zero",
    ),
    (
        "optimizer-refuses-at-its-first-step",
        [*FIT, "--data.num_train", "100", "--model.optimizer", "SparseAdam", "--model.optimizer.lr", "0.1"],
        "model.optimizer (SparseAdam, lr 0.1) at its first step: SparseAdam does not support dense gradients",
    ),
    (
        "callback-refuses-at-the-first-validation",
        [*FIT, "--data.num_train", "100", "--trainer.callbacks+=EarlyStopping", "--trainer.callbacks.monitor", "x/y"],
        "trainer.callbacks[0].monitor: 'x/y' is not a metric this run logs",
    ),
    (
        "trainer-check-once-fit-runs",
        [*FIT, "--data.num_train", "100", "--trainer.val_check_interval", "1000000"],
        "trainer.val_check_interval must be at most the 10 training batches of an epoch, got 1000000",
    ),
    ("accelerator-needs-a-package", [*FIT, "--trainer.accelerator", "tpu"], "trainer: Requirement 'torch_xla"),
    # --- held-out kinds: memory, secrets, a file changed in place, results, messages ---
    ("features-beyond-memory", [*CSV, "{d}/wide.csv", "--data.target", "y"], "100000 features need 320 GB for"),
    (
        "credentials-in-an-endpoint",
        [*CSV, "s3://b/t.csv?endpoint_override=http://KEY:SECRET@127.0.0.1:9", "--data.target", "y"],
        "data: s3://b/t.csv?endpoint_override=http://***@127.0.0.1:9: credentials in a data path's endpoint",
    ),
    (
        "test-with-another-split-seed",
        ["test", *CSV[1:], "{d}/good.csv", "--data.target", "y", "--ckpt_path", "{d}/csv.ckpt", "--data.seed", "1"],
        "was trained with data.seed 0, which drew its training, validation and test rows; this run gives data.seed 1",
    ),
]
if not torch.cuda.is_available():
    CASES.append(("accelerator-gpu-absent", [*FIT, "--trainer.accelerator", "gpu"], "trainer: No supported gpu"))
    CASES.append(("precision-fp16-on-cpu", [*FIT, "--trainer.precision", "16-mixed"], "Lightning would train in bf16"))
CASES += [
    # --- a valid configuration Lightning would end in a traceback (EarlyStopping without validation is no refusal:
    # it is left idle and said so, tests/test_without_validation.py) ---
    (
        "learning-rate-finder",
        [*FIT, "--trainer.callbacks+=LearningRateFinder"],
        "trainer.callbacks[0]: LearningRateFinder sets a model attribute lr or learning_rate",
    ),
]
CASES.append(
    (
        "predict-no-batches",  # Lightning would skip predict without a word and exit 0
        ["predict", "--config", "{config}", "--ckpt_path", "{d}/last.ckpt", "--trainer.limit_predict_batches", "0"],
        "trainer.limit_predict_batches 0 predicts no rows; nothing was written",
    )
)
if importlib.util.find_spec("rich") is None:  # a class that needs a package this environment lacks
    CASES.append(
        ("callback-needs-a-package", [*FIT, "--trainer.callbacks+=RichProgressBar"], "RichProgressBar needs a package")
    )
if os.name == "posix" and os.geteuid() != 0:  # root reads any file
    CASES.append(("ckpt-unreadable", [*FIT, "--ckpt_path", "{d}/locked.ckpt"], "permission denied"))


@pytest.fixture(scope="module")
def earlier(tmp_path_factory: pytest.TempPathFactory) -> Path:
    """A directory of earlier results: a finished run, checkpoints good and bad, config files good and bad."""
    d = tmp_path_factory.mktemp("earlier")
    small = (
        "--data.num_train",
        "20",
        "--data.num_val",
        "10",
        "--trainer.max_epochs",
        "1",
        "--trainer.log_every_n_steps",
        "1",
    )
    run_cli(*(a.format(d=d, config=D2L_CONFIG) for a in FIT), *small)
    last = d / "runs" / "d2l" / "version_0" / "checkpoints" / "last.ckpt"
    (d / "last.ckpt").write_bytes(last.read_bytes())
    run_cli(*(a.format(d=d, config=D2L_CONFIG) for a in FIT), *small, "--data.true_w", "[1.0, 2.0, 3.0]")
    (d / "runs" / "d2l" / "version_1" / "checkpoints" / "last.ckpt").rename(d / "three.ckpt")
    checkpoint = torch.load(last, weights_only=True)
    torch.save(
        {k: checkpoint[k] for k in ("state_dict", "epoch", "global_step", "hyper_parameters")}, d / "weights.ckpt"
    )
    torch.save(torch.ones(3), d / "tensor.ckpt")
    (d / "truncated.ckpt").write_bytes(last.read_bytes()[:1000])
    (d / "empty.ckpt").write_bytes(b"")
    (d / "notes.ckpt").write_text("not a checkpoint\n")
    (d / "locked.ckpt").write_bytes(last.read_bytes())
    (d / "locked.ckpt").chmod(0)
    (d / "broken.yaml").write_text("trainer:\n  max_epochs: [3\n")
    (d / "typo.yaml").write_text(D2L_CONFIG.read_text().replace("max_epochs:", "max_epoch:"))
    (d / "typo_init_arg.yaml").write_text(D2L_CONFIG.read_text().replace("batch_size:", "batchsize:"))
    (d / "list.yaml").write_text("- 1\n- 2\n")
    rows = [f"{i},{(i * 7) % 5},{2 * i + 1}" for i in range(40)]
    (d / "good.csv").write_text("x1,x2,y\n" + "\n".join(rows) + "\n")
    (d / "text.csv").write_text("x1,x2,y\n" + "\n".join([*rows[:2], "3,n/a,7", *rows[3:]]) + "\n")

    checkpoint = torch.load(last, weights_only=True)
    torch.save({k: v for k, v in checkpoint.items() if k != "loops"}, d / "no_loops.ckpt")
    poisoned = {**checkpoint, "state_dict": {k: v.clone() for k, v in checkpoint["state_dict"].items()}}
    poisoned["state_dict"]["net.0.weight"][0, 1] = float("nan")
    torch.save(poisoned, d / "nan.ckpt")
    run_cli(*(a.format(d=d, config=D2L_CONFIG) for a in FIT), *small, "--data.true_w", "[1.0, 2.0]")
    (d / "runs" / "d2l" / "version_2" / "checkpoints" / "last.ckpt").rename(d / "two.ckpt")
    run_cli(*(a.format(d=d, config=D2L_CONFIG) for a in CSV), str(d / "good.csv"), "--data.target", "y", *small[4:])
    (d / "runs" / "d2l" / "version_3" / "checkpoints" / "last.ckpt").rename(d / "csv.ckpt")
    (d / "model_list.yaml").write_text("model:\n  - 1\n  - 2\n")
    os.mkfifo(d / "fifo")
    (d / "wide.csv").write_text(",".join(f"c{i}" for i in range(100_000)) + ",y\n" + ",".join(["1"] * 100_001) + "\n")
    (d / "huge_y.csv").write_text(
        "x1,x2,y\n" + "\n".join(f"{i},{(i * 7) % 5},{(2 * i + 1) * 1e300}" for i in range(40))
    )

    class Payload:
        def __reduce__(self) -> tuple[object, tuple[str]]:
            return (os.mkdir, (str(d / "pwned"),))

    torch.save({"state_dict": {}, "payload": Payload()}, d / "evil.ckpt")
    return d


def _snapshot(directory: Path) -> tuple[dict[str, str], set[str]]:
    """Every file's SHA-256, and every directory, under ``directory``."""
    files, dirs = {}, set()
    for path in directory.rglob("*"):
        if path.is_dir():
            dirs.add(str(path))
        elif path.name != "locked.ckpt" and path.is_file():
            files[str(path)] = hashlib.sha256(path.read_bytes()).hexdigest()
    return files, dirs


@pytest.mark.parametrize(("args", "message"), [case[1:] for case in CASES], ids=[case[0] for case in CASES])
def test_bad_input_is_refused_in_one_line_and_changes_nothing(
    args: list[str],
    message: str | tuple[str, ...],
    earlier: Path,
    capsys: pytest.CaptureFixture[str],
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    monkeypatch.chdir(earlier)  # anything written to the working directory would show in the snapshot too
    files_before, dirs_before = _snapshot(earlier)
    with pytest.raises(SystemExit) as exit_info:
        run_cli(*(a.format(d=earlier, config=D2L_CONFIG) for a in args))
    assert exit_info.value.code == 2
    err = capsys.readouterr().err
    errors = [line for line in err.splitlines() if ": error: " in line]
    assert len(errors) == 1, err
    for part in (message,) if isinstance(message, str) else message:  # the key and the value, or the whole message
        assert part.format(d=earlier) in errors[0]
    assert len(errors[0]) < 400
    assert "Traceback" not in err
    files_after, dirs_after = _snapshot(earlier)
    assert files_after == files_before  # nothing changed, nothing added
    assert dirs_after == dirs_before  # no run directory left behind, not even an empty one
    assert not (earlier / "pwned").exists()


@pytest.mark.slow  # a process each; test_a_bad_value_is_the_only_line_printed is the quick case of `python -m`
@pytest.mark.parametrize("case", ["ckpt-truncated", "ckpt-other-input-dim"])
def test_python_dash_m_linreg_refuses_without_traceback(case: str, earlier: Path) -> None:
    args, message = next(c[1:] for c in CASES if c[0] == case)
    result = subprocess.run(
        [sys.executable, "-m", "linreg", *(a.format(d=earlier, config=D2L_CONFIG) for a in args)],
        capture_output=True,
        text=True,
        check=False,
        cwd=earlier,
    )
    assert result.returncode == 2
    assert message.format(d=earlier) in result.stderr
    assert "Traceback" not in result.stderr


@pytest.mark.slow  # a whole process or several fits: seconds
def test_a_bad_value_is_the_only_line_printed(earlier: Path) -> None:
    result = subprocess.run(
        [sys.executable, "-m", "linreg", "fit", "--config", str(D2L_CONFIG), "--model.init_std", "-1"],
        capture_output=True,
        text=True,
        check=False,
        cwd=earlier,
    )
    assert result.returncode == 2
    assert result.stdout == ""
    # A value the model's constructor refuses (the parser's refusals add the --help hint): no "Seed set" line.
    assert result.stderr.splitlines() == ["linreg: error: model: init_std must be a finite number >= 0, got -1.0"]


def test_a_file_that_cannot_be_opened_is_answered_with_its_name() -> None:
    # How a data module's missing file reaches the user: an OSError naming the file, wrapped by jsonargparse.
    try:
        try:
            open("/nonexistent/data.csv")  # noqa: SIM115
        except FileNotFoundError as missing:
            raise ValueError("Problem with given class_path 'linreg.data.CsvData'") from missing
    except ValueError as wrapped:
        error = find_user_error(wrapped)
    assert error is not None
    assert str(error) == "/nonexistent/data.csv: No such file or directory"
