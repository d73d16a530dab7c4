"""The files of a table: where they are (a file, or those of a directory) and the one place they are opened.

Every file is opened by ``open_input``, after checking it is a regular file, and every error of a read
is turned into one line naming the file by ``reading``: whatever Arrow, the OS or a decompressor raise.
A path may be a URI (``s3://...``): ``linreg.data.storage`` finds and opens the files of object storage.
Opened with the ``Version`` recorded by the first pass, a file that has changed since is refused. On object
storage a file's version is its ETag (of its content). A local file's is its size, modification time and a
fingerprint of its content (``fingerprint``), since ``cp -p`` or ``rsync -t`` rewrite a file and keep the first two:
a file of up to ``FULL_HASH_BYTES`` is hashed whole, so any change is seen; of a larger one only a sample is
hashed (its head and tail, where Parquet keeps its footer, and ``SAMPLES`` blocks spread between), so a change of
the same size, keeping the modification time, and outside the sample goes unseen there.
"""

from __future__ import annotations

import hashlib
import os
import zlib
from collections.abc import Iterator
from contextlib import contextmanager
from pathlib import Path, PurePosixPath

import pyarrow as pa
import pyarrow.parquet as pq
from pyarrow.fs import FileType

from linreg.data import storage
from linreg.data.storage import Version
from linreg.validation import UserInputError, check_regular_file

PARQUET_SUFFIXES = (".parquet", ".pq", ".parq")
# What reading a damaged or unreadable file raises: Arrow's errors, the OS's, and those of decompression.
READ_ERRORS = (pa.ArrowException, OSError, EOFError, zlib.error, UnicodeDecodeError)
# A local file's fingerprint: read at every open of a pass (each row group of a Parquet file), so it stays small.
FULL_HASH_BYTES = 1 << 20  # a file up to this size is hashed whole
END_BYTES = 1 << 16  # else its first and last bytes (a Parquet footer, a CSV header) ...
SAMPLES, SAMPLE_BYTES = 16, 1 << 12  # ... and this many blocks spread evenly between


MESSAGE_CHARS = 200  # of another library's message quoted in ours (a cloud client's runs to a paragraph)


def one_line(exc: BaseException) -> str:
    """An exception's message on one line (Arrow's may span several), cut to ``MESSAGE_CHARS``."""
    text = " ".join(str(exc).split()) or type(exc).__name__
    return text if len(text) <= MESSAGE_CHARS else text[: MESSAGE_CHARS - 3] + "..."


@contextmanager
def reading(path: str | Path) -> Iterator[None]:
    """Whatever reading ``path`` raises (``READ_ERRORS``), as one line naming the file."""
    try:
        yield
    except READ_ERRORS as exc:
        message = storage.shown(one_line(exc))  # a library may quote the URL it was given
        raise UserInputError(f"{storage.shown(path)}: cannot be read{storage.where(path)} ({message})") from None


def open_input(path: str | Path, seekable: bool = False, expected: Version | None = None) -> pa.NativeFile:
    """Opens a file of a table: a regular file (a FIFO would block), gunzipped if its name ends in ``.gz``
    (unless ``seekable``, as Parquet is read); refused if it is no longer of the ``expected`` version."""
    if storage.is_remote(path):
        with reading(path):
            file = storage.open_input(str(path), seekable or expected is not None)
            now = storage.version(str(path), file) if expected is not None else None
        if now != expected:
            file.close()
            raise _changed(path, expected, now)  # type: ignore[arg-type]
        if seekable or expected is None:
            return file
        file.close()  # opened to compare versions; a CSV file is read as a stream, gunzipped
        return open_input(path)
    status = check_regular_file(path)
    assert status is not None  # missing is refused
    if expected is not None and (now := _local_version(path, status)) != expected:
        raise _changed(path, expected, now)
    with reading(path):
        return pa.OSFile(str(path)) if seekable else pa.input_stream(str(path))


def version(path: str | Path) -> Version:
    """The file's ``Version`` now: its size, and its ETag on S3, else its modification time and ``fingerprint``."""
    if storage.is_remote(path):
        with reading(path):
            return storage.version(str(path))
    return _local_version(path, os.stat(path))


def _local_version(path: str | Path, status: os.stat_result) -> Version:
    with reading(path):
        return Version(status.st_size, f"{status.st_mtime_ns}:{fingerprint(path, status.st_size)}")


def fingerprint(path: str | Path, size: int) -> str:
    """A hash of the local file's content: all of it up to ``FULL_HASH_BYTES``, else a sample (see the module)."""
    digest = hashlib.blake2b(digest_size=16)
    with open(path, "rb") as file:
        if size <= FULL_HASH_BYTES:
            digest.update(file.read())
        else:
            step = (size - 2 * END_BYTES) // (SAMPLES + 1)
            for offset, length in [
                (0, END_BYTES),
                *((END_BYTES + i * step, SAMPLE_BYTES) for i in range(1, SAMPLES + 1)),
                (size - END_BYTES, END_BYTES),
            ]:
                file.seek(offset)
                digest.update(file.read(length))
    return digest.hexdigest()


def _changed(path: str | Path, then: Version, now: Version) -> UserInputError:
    sizes = f"{then.size} bytes then, {now.size} now" if then.size != now.size else f"still {now.size} bytes"
    return UserInputError(
        f"{storage.shown(path)}: changed since this run first read it ({sizes}, and rewritten); the statistics"
        " and the split are the earlier file's: start the run again to use it"
    )


def is_parquet(path: str | Path) -> bool:
    """Whether ``path`` is read as Parquet: a directory, a ``.parquet`` name, or a file starting with ``PAR1``."""
    suffix = PurePosixPath(storage.name(path)).suffix.lower()
    if suffix in PARQUET_SUFFIXES or (kind := _kind(path)) == FileType.Directory:
        return True
    if suffix in (".csv", ".gz", ".txt", ".tsv") or kind != FileType.File:
        return False
    with reading(path), open_input(path, seekable=True) as file:
        return file.read(4) == b"PAR1"


def parquet_files(path: str | Path) -> list[tuple[str, pq.FileMetaData]]:
    """The Parquet files of ``path`` (itself, or those below a directory, in path order) and their metadata."""
    if (kind := _kind(path)) == FileType.NotFound:
        with reading(path):
            raise UserInputError(storage.missing(path))
    below = storage.files_below if storage.is_remote(path) else _files_below
    files = below(path) if kind == FileType.Directory else [str(path)]
    if not files:
        raise UserInputError(
            f"{path}: is a directory that holds no Parquet files; give a CSV file, a Parquet file"
            " or a directory of Parquet files"
        )
    result = []
    for file in files:
        with reading(file), open_input(file, seekable=True) as source:
            result.append((file, pq.read_metadata(source)))
    return result


def _kind(path: str | Path) -> FileType:
    """``File``, ``Directory`` (a prefix, on object storage), ``NotFound``, or ``Unknown`` (a FIFO, ...)."""
    if storage.is_remote(path):
        with reading(path):
            return storage.file_type(path)
    path = Path(path)
    return FileType.Directory if path.is_dir() else FileType.File if path.is_file() else _exists(path)


def _exists(path: Path) -> FileType:
    return FileType.Unknown if path.exists() else FileType.NotFound


def _files_below(root: str | Path) -> list[str]:
    """The files below ``root`` (names starting with ``_`` or ``.`` skipped); a link below it is refused, so no
    file is read twice, or from outside the data set."""

    def fail(error: OSError) -> None:
        raise UserInputError(f"{error.filename}: cannot be read ({error.strerror})")

    files = []
    for folder, folders, names in os.walk(root, onerror=fail):
        folders[:] = [name for name in folders if not name.startswith(("_", "."))]
        for name in [*folders, *names]:
            entry = os.path.join(folder, name)
            if os.path.islink(entry):
                raise UserInputError(f"{entry}: is a link; the files of a data set must lie in its directory")
        files += [os.path.join(folder, name) for name in names if not name.startswith(("_", "."))]
    return sorted(files)
