"""Tables on object storage: an S3 server on loopback (moto) serves the files the local tests read from disk.

Remote and local reads must give the same tensors, statistics and least squares; every failure a store
brings (no bucket, no key, access denied, endpoint unreachable, a file changed, the server gone mid-epoch)
is one line naming the file; no credential reaches anything the run writes.
"""

from __future__ import annotations

import contextlib
import io
import logging
import time
from collections.abc import Iterator
from pathlib import Path

import numpy as np
import pyarrow.fs as pafs
import pyarrow.parquet as pq
import pytest
import torch
from jsonargparse import Namespace

from linreg.checkpointing.io import load_safely
from linreg.checkpointing.runs import refuse_remote_run_dir
from linreg.data import TableRegressionData, sources
from linreg.data.reading import read_header, read_table
from linreg.data.sources import locate
from linreg.data.tables import StreamedTable
from linreg.validation import UserInputError
from tests.conftest import ROOT, run_cli
from tests.test_csv_data import split_rows
from tests.test_parquet_and_streaming import make_arrow_table, streamed_resume_args, write_files
from tests.test_resume import assert_same_training_state, keeping_every_write
from tests.test_streaming_fits import assert_ols_is_least_squares_of_the_training_rows, fit, write_parquet

SECRET = "fake-secret-Zq7xW3"  # the secret access key the tests give: it must appear in nothing the run writes
KINDS = ["dir", "parquet", "csv", "gz"]


@pytest.fixture(scope="session")
def s3_server() -> Iterator[str]:
    """An S3-compatible server on 127.0.0.1 (a free port) holding a bucket ``data``, for the whole session; its
    endpoint URL."""
    moto_server = pytest.importorskip("moto.server", reason="moto[server] is in the test and remote-test extras")
    logging.getLogger("werkzeug").setLevel(logging.WARNING)  # not a line per request
    server = moto_server.ThreadedMotoServer(ip_address="127.0.0.1", port=0, verbose=False)
    server.start()
    host, port = server.get_host_and_port()
    admin(f"http://{host}:{port}").create_dir("data")
    yield f"http://{host}:{port}"
    server.stop()


@pytest.fixture
def s3_env(s3_server: str, monkeypatch: pytest.MonkeyPatch, tmp_path_factory: pytest.TempPathFactory) -> str:
    """Fake credentials and the loopback endpoint, as a user's environment would give them; no config files."""
    nothing = tmp_path_factory.getbasetemp() / "no-aws-config"
    for name, value in {
        "AWS_ACCESS_KEY_ID": "testing",
        "AWS_SECRET_ACCESS_KEY": SECRET,
        "AWS_DEFAULT_REGION": "us-east-1",
        "AWS_ENDPOINT_URL": s3_server,
        "AWS_CONFIG_FILE": str(nothing),
        "AWS_SHARED_CREDENTIALS_FILE": str(nothing),
        "AWS_EC2_METADATA_DISABLED": "true",
    }.items():
        monkeypatch.setenv(name, value)
    monkeypatch.delenv("AWS_ENDPOINT_URL_S3", raising=False)
    monkeypatch.delenv("AWS_PROFILE", raising=False)
    return s3_server


def admin(endpoint: str) -> pafs.S3FileSystem:
    """A client of the server that may create buckets (the code under test never does)."""
    return pafs.S3FileSystem(
        endpoint_override=endpoint, access_key="testing", secret_key=SECRET, allow_bucket_creation=True
    )


@pytest.fixture(scope="session")
def tables(tmp_path_factory: pytest.TempPathFactory, s3_server: str) -> dict[str, tuple[str, str]]:
    """The table of ``test_parquet_and_streaming`` in each kind, ``{kind: (local path, s3:// URI)}``.

    A Parquet file of row groups of 500, a directory of three files (and a ``_SUCCESS`` marker), CSV, CSV.gz.
    """
    local = tmp_path_factory.mktemp("tables")
    paths = write_files(local)
    store = admin(s3_server)
    for path in local.rglob("*"):
        if path.is_file():
            pafs.copy_files(str(path), f"data/{path.relative_to(local)}", destination_filesystem=store)
    return {kind: (str(paths[kind]), f"s3://data/{paths[kind].relative_to(local)}") for kind in KINDS}


def data_module(path: str, in_memory: bool) -> TableRegressionData:
    data = TableRegressionData(path, target="y", features=["a", "b", "c"], in_memory=in_memory, batch_size=256)
    data.setup("fit")
    return data


def assert_same_statistics(local: TableRegressionData, remote: TableRegressionData) -> None:
    ours, theirs = local.state_dict(), remote.state_dict()
    assert ours.keys() == theirs.keys()
    for key, value in ours.items():
        assert torch.equal(value, theirs[key]) if isinstance(value, torch.Tensor) else value == theirs[key], key


def batches(data: TableRegressionData) -> list[torch.Tensor]:
    return [torch.cat(batch, dim=1) for batch in data.train_dataloader()]


@pytest.mark.parametrize(
    ("kind", "in_memory"),
    [
        ("parquet", False),
        ("gz", True),
        *(pytest.param(kind, mode, marks=pytest.mark.slow) for kind in ("dir", "csv") for mode in (True, False)),
        pytest.param("parquet", True, marks=pytest.mark.slow),
        pytest.param("gz", False, marks=pytest.mark.slow),
    ],
)
def test_a_table_on_s3_gives_the_tensors_statistics_and_least_squares_of_the_same_file_on_disk(
    s3_env: str, tables: dict[str, tuple[str, str]], kind: str, in_memory: bool
) -> None:
    local, remote = (data_module(path, in_memory) for path in tables[kind])
    assert_same_statistics(local, remote)
    torch.testing.assert_close(remote.reference().w, local.reference().w, rtol=0, atol=0)
    for split in ("val_data", "test_data"):
        assert all(torch.equal(a, b) for a, b in zip(getattr(local, split), getattr(remote, split), strict=True))
    if in_memory:
        assert all(torch.equal(a, b) for a, b in zip(local.train_data, remote.train_data, strict=True))
    else:  # streamed: the same batches, in the same order
        assert all(torch.equal(a, b) for a, b in zip(batches(local), batches(remote), strict=True))


def test_a_missing_bucket_and_a_missing_key_are_named_with_the_endpoint(s3_env: str) -> None:
    with pytest.raises(UserInputError, match=rf"^s3://nobucket/t.csv: no such bucket 'nobucket' at {s3_env}$"):
        read_header("s3://nobucket/t.csv")
    with pytest.raises(UserInputError, match=r"^s3://data/none.parquet: no such key 'none.parquet' in bucket"):
        read_header("s3://data/none.parquet")


def test_access_denied_is_one_line_naming_the_key_and_the_endpoint(
    s3_env: str, tables: dict[str, tuple[str, str]], monkeypatch: pytest.MonkeyPatch
) -> None:
    from moto import settings

    monkeypatch.setattr(settings, "INITIAL_NO_AUTH_ACTION_COUNT", 0)  # every request checked: "testing" is no user
    with pytest.raises(UserInputError, match=rf"^s3://data/t.parquet: cannot be read at {s3_env} \(.*ACCESS_DENIED"):
        read_header(tables["parquet"][1])


@pytest.mark.slow  # the retries' backoff: seconds
def test_an_unreachable_endpoint_fails_in_seconds_naming_it(monkeypatch: pytest.MonkeyPatch, s3_env: str) -> None:
    monkeypatch.setenv("AWS_ENDPOINT_URL", "http://127.0.0.1:9")  # the discard port: nothing listens there
    start = time.monotonic()
    with pytest.raises(UserInputError, match=r"^s3://data/t.csv: cannot be read at http://127.0.0.1:9 \(.*connect"):
        read_header("s3://data/t.csv")
    assert time.monotonic() - start < 30


def test_an_unreachable_gcs_endpoint_fails_within_the_retry_limit(monkeypatch: pytest.MonkeyPatch) -> None:
    # GCS's client retries for 15 minutes by default. Nothing outside this machine is contacted: the store and
    # the metadata server (where the client looks for credentials) are the discard port on loopback.
    for name in ("GCE_METADATA_HOST", "GCE_METADATA_ROOT"):
        monkeypatch.setenv(name, "127.0.0.1:9")
    monkeypatch.setattr(sources, "RETRY_LIMIT_S", 1)
    sources._filesystem.cache_clear()  # a filesystem built with the limit of an earlier test would be reused
    start = time.monotonic()
    with pytest.raises(UserInputError, match=r"^gs://bucket/t.csv\?endpoint_override=127.0.0.1:9&scheme=http: cannot"):
        read_header("gs://bucket/t.csv?endpoint_override=127.0.0.1:9&scheme=http")
    assert time.monotonic() - start < 10
    sources._filesystem.cache_clear()


@pytest.mark.parametrize(
    ("uri", "refused"),
    [
        (f"s3://AKIAEXAMPLE:{SECRET}@data/t.csv", "credentials in a data path are refused"),
        (f"s3://data/t.csv?secret_key={SECRET}", "query option 'secret_key' is not accepted"),
        (f"s3://data/t.csv?endpoint_override=http://KEY:{SECRET}@127.0.0.1:9", "=http://\\*\\*\\*@127.0.0.1:9: cred"),
        (f"gs://data/t.csv?endpoint_override=KEY:{SECRET}@127.0.0.1:9", "credentials in a data path's endpoint_"),
    ],
)
def test_credentials_in_a_uri_are_refused_without_being_repeated(uri: str, refused: str) -> None:
    with pytest.raises(UserInputError, match=refused) as error:
        locate(uri)
    assert SECRET not in str(error.value)


@pytest.mark.parametrize("variable", ["AWS_ENDPOINT_URL", "AWS_ENDPOINT_URL_S3"])
def test_credentials_in_the_endpoint_variable_are_refused_without_being_repeated(
    variable: str, monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.setenv(variable, f"http://user:{SECRET}@127.0.0.1:9")
    with pytest.raises(
        UserInputError, match=rf"^{variable}=http://\*\*\*@127.0.0.1:9: credentials in an endpoint"
    ) as error:
        read_header("s3://data/t.csv")
    assert SECRET not in str(error.value)


@pytest.mark.parametrize("key", ["default_root_dir", "logger"])
def test_a_run_directory_on_object_storage_is_refused_naming_the_key(key: str) -> None:
    logger = Namespace(class_path="CSVLogger", init_args=Namespace(save_dir="s3://bucket/runs", name="x"))
    trainer = Namespace(default_root_dir="s3://bucket/runs") if key == "default_root_dir" else Namespace(logger=logger)
    with pytest.raises(UserInputError, match=r"^trainer\.(default_root_dir|logger\.init_args\.save_dir): s3://bucket"):
        refuse_remote_run_dir(trainer)
    refuse_remote_run_dir(Namespace(default_root_dir="runs", logger=False))  # a local directory, no logger: fine


def test_a_missing_checkpoint_on_s3_is_named_by_its_store(s3_env: str) -> None:
    with pytest.raises(UserInputError, match=r"^s3://data/none.ckpt: no such key 'none.ckpt' in bucket 'data' at"):
        load_safely("s3://data/none.ckpt")


@pytest.mark.slow  # a CLI run
def test_the_cli_reports_a_missing_bucket_in_one_line(s3_env: str, capsys: pytest.CaptureFixture[str]) -> None:
    with pytest.raises(SystemExit) as stopped:
        run_cli("fit", "--config", str(ROOT / "configs" / "csv.yaml"), "--data.path", "s3://nobucket/t.csv")
    assert stopped.value.code == 2
    assert (
        capsys.readouterr().err == f"linreg: error: data: s3://nobucket/t.csv: no such bucket 'nobucket' at {s3_env}\n"
    )


def test_the_endpoint_and_region_may_be_given_in_the_uri(s3_env: str, tables: dict[str, tuple[str, str]]) -> None:
    uri = f"{tables['csv'][1]}?endpoint_override={s3_env}&region=us-east-1"
    assert read_header(uri) == ["id", "a", "b", "c", "y"]


def test_a_file_changed_after_the_statistics_pass_stops_the_next_epoch(s3_env: str) -> None:
    table, store = make_arrow_table(n=600), admin(s3_env)
    pq.write_table(table, "data/changing.parquet", row_group_size=100, filesystem=store)
    streamed = StreamedTable("s3://data/changing.parquet", ["a", "b", "c", "y"], 0.1, 0.1, 0, 1000)
    pq.write_table(table.slice(0, 500), "data/changing.parquet", row_group_size=100, filesystem=store)
    loader = streamed.loader("train", 64, streamed.standardizer())
    with pytest.raises(UserInputError, match=r"^s3://data/changing.parquet: changed since this run first read it"):
        next(iter(loader))


@pytest.mark.slow  # the retries' backoff: seconds
def test_a_server_gone_mid_epoch_is_one_line_after_retries(
    s3_env: str, tables: dict[str, tuple[str, str]], monkeypatch: pytest.MonkeyPatch
) -> None:
    from moto.server import ThreadedMotoServer

    second = ThreadedMotoServer(ip_address="127.0.0.1", port=0, verbose=False)  # same buckets
    second.start()
    host, port = second.get_host_and_port()
    monkeypatch.setenv("AWS_ENDPOINT_URL", f"http://{host}:{port}")
    streamed = StreamedTable(tables["parquet"][1], ["a", "b", "c", "y"], 0.1, 0.1, 0, 256)
    epoch = iter(streamed.loader("train", 64, streamed.standardizer()))
    next(epoch)
    second.stop()
    with pytest.raises(UserInputError, match=rf"^s3://data/t.parquet: cannot be read at http://{host}:{port} \("):
        list(epoch)


def test_a_scheme_pyarrow_lacks_is_read_through_fsspec(tables: dict[str, tuple[str, str]]) -> None:
    import fsspec

    with fsspec.filesystem("memory").open("/linreg-test/t.parquet", "wb") as file:
        file.write(Path(tables["parquet"][0]).read_bytes())
    local, remote = data_module(tables["parquet"][0], False), data_module("memory:///linreg-test/t.parquet", False)
    assert_same_statistics(local, remote)
    assert all(torch.equal(a, b) for a, b in zip(batches(local), batches(remote), strict=True))


@pytest.mark.slow
def test_a_fit_on_s3_data_writes_no_credential_anywhere(
    s3_env: str, tables: dict[str, tuple[str, str]], tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    run_cli(
        "fit", "--config", str(ROOT / "configs" / "parquet.yaml"),
        "--data.path", tables["dir"][1], "--data.target", "y", "--data.features", "[a, b, c]",
        "--data.in_memory", "false", "--trainer.max_epochs", "2", "--trainer.min_steps", "0",
        "--trainer.logger.init_args.save_dir", str(tmp_path),
    )  # fmt: skip
    run = tmp_path / "parquet" / "version_0"
    assert f"path: {tables['dir'][1]}" in (run / "config.yaml").read_text()
    written = [path for path in tmp_path.rglob("*") if path.is_file()]
    assert len(written) >= 4  # config, checkpoint, events, report
    assert not [path for path in written if SECRET.encode() in path.read_bytes()]
    printed = capsys.readouterr()
    assert SECRET not in printed.out + printed.err


@pytest.mark.slow
def test_a_streamed_fit_on_s3_resumed_from_a_mid_epoch_checkpoint_on_s3_ends_bit_identical(
    s3_env: str, tables: dict[str, tuple[str, str]], tmp_path: Path
) -> None:
    args = streamed_resume_args(tables["parquet"][1], tmp_path)
    # Every version of last.ckpt is what a kill -9 just after its (atomic) write would leave.
    with keeping_every_write(tmp_path / "history"), contextlib.redirect_stdout(io.StringIO()):
        run_cli(*args)
    mid_epoch = [p for p in sorted((tmp_path / "history").iterdir()) if p.name.endswith("-step50.ckpt")]
    final = torch.load(tmp_path / "parquet" / "version_0" / "checkpoints" / "last.ckpt", weights_only=True)
    pafs.copy_files(str(mid_epoch[0]), "data/runs/last.ckpt", destination_filesystem=admin(s3_env))
    with contextlib.redirect_stdout(io.StringIO()):  # resumed from the checkpoint on the store (read weights-only)
        run_cli(*args, "--ckpt_path", "s3://data/runs/last.ckpt")
    resumed = tmp_path / "parquet" / "version_1" / "checkpoints" / "last.ckpt"
    assert_same_training_state(final, torch.load(resumed, weights_only=True))


@pytest.mark.slow
def test_two_processes_stream_their_own_row_groups_of_one_bucket(s3_env: str, tmp_path: Path) -> None:
    """Four row groups in one object: each process reads two, in step (DDP over gloo). Shares of equal size weigh
    every row alike, so averaged SGD converges to the least squares of all of them."""
    groups = [1500, 1500, 1500, 1500]
    Z = write_parquet(tmp_path / "t.parquet", sum(groups), 4, groups)
    pafs.copy_files(str(tmp_path / "t.parquet"), "data/ddp/t.parquet", destination_filesystem=admin(s3_env))
    # The config's stopping rule: at least 1000 steps, then early stopping.
    report, printed = fit(
        tmp_path, "s3://data/ddp/t.parquet",  # type: ignore[arg-type]
        "--trainer.strategy", "ddp", "--trainer.devices", "2", "--data.batch_size", "32",
        "--data.shuffle_buffer", "1000",
    )  # fmt: skip
    starts = np.cumsum([0, *groups])
    train = np.zeros(len(Z), dtype=bool)
    train[split_rows(len(Z), 0.05, 0.05, seed=0)[0].numpy()] = True
    shares = [sum(int(train[starts[g] : starts[g + 1]].sum()) for g in range(rank, len(groups), 2)) for rank in (0, 1)]
    checkpoint = torch.load(tmp_path / "parquet" / "version_0" / "checkpoints" / "last.ckpt", weights_only=True)
    # Each epoch as many steps as the shorter share has batches (the last one may stop part way, after 1000 steps,
    # or at its end, where early stopping ends the run: the checkpoint then counts that epoch as done).
    per_epoch = -(-shares[1] // 32)
    assert checkpoint["epoch"] * per_epoch <= checkpoint["global_step"] <= (checkpoint["epoch"] + 1) * per_epoch
    assert printed.count("largest |ASGD-OLS|/SE:") == 1
    assert_ols_is_least_squares_of_the_training_rows(report, Z)
    assert max(abs(row["sgd_minus_ols_in_se"]) for row in report["parameters"]) <= 1.0


def test_an_answer_that_is_not_a_table_is_named_as_the_store_s(s3_env: str) -> None:
    with admin(s3_env).open_output_stream("data/junk.csv") as out:
        out.write(b"x,y\n\xff\xfe\x00junk")
    with pytest.raises(UserInputError, match=rf"^s3://data/junk.csv: the store's answer at {s3_env} could not be read"):
        read_table("s3://data/junk.csv", ["x", "y"])


def test_a_file_uri_as_run_directory_is_the_local_directory_it_names(tmp_path: Path) -> None:
    logger = Namespace(class_path="CSVLogger", init_args=Namespace(save_dir=f"file://{tmp_path}/my%20runs", name="x"))
    trainer = Namespace(default_root_dir=f"file://{tmp_path}", logger=logger)
    refuse_remote_run_dir(trainer)
    assert trainer.default_root_dir == str(tmp_path)
    assert trainer.logger.init_args.save_dir == f"{tmp_path}/my runs"  # as urllib reads the URI's path
