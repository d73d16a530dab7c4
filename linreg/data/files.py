"""The files of a table: where they are (a file, or those of a directory) and the one place they are opened.

Every file is opened by ``open_input``, after checking it is a regular file, and every error of a read
is turned into one line naming the file by ``reading``: whatever Arrow, the OS or a decompressor raise.
"""

from __future__ import annotations

import os
import stat
import zlib
from collections.abc import Iterator
from contextlib import contextmanager
from pathlib import Path

import pyarrow as pa
import pyarrow.parquet as pq

from linreg.validation import UserInputError, file_kind

PARQUET_SUFFIXES = (".parquet", ".pq", ".parq")
# What reading a damaged or unreadable file raises: Arrow's errors, the OS's, and those of decompression.
READ_ERRORS = (pa.ArrowException, OSError, EOFError, zlib.error, UnicodeDecodeError)


def one_line(exc: BaseException) -> str:
    """An exception's message on one line (Arrow's may span several)."""
    return " ".join(str(exc).split()) or type(exc).__name__


@contextmanager
def reading(path: str | Path) -> Iterator[None]:
    """Whatever reading ``path`` raises (``READ_ERRORS``), as one line naming the file."""
    try:
        yield
    except READ_ERRORS as exc:
        raise UserInputError(f"{path}: cannot be read ({one_line(exc)})") from None


def open_input(path: str | Path, seekable: bool = False) -> pa.NativeFile:
    """Opens a file of a table: a regular file (a FIFO would block), gunzipped if its name ends in ``.gz``
    (unless ``seekable``, as Parquet is read)."""
    try:
        mode = os.stat(path).st_mode
    except FileNotFoundError:
        raise UserInputError(f"{path}: no such file or directory") from None
    except OSError as exc:
        raise UserInputError(f"{path}: cannot be read ({exc.strerror})") from None
    if not stat.S_ISREG(mode):
        raise UserInputError(f"{path}: is {file_kind(mode)}, not a regular file")
    with reading(path):
        return pa.OSFile(str(path)) if seekable else pa.input_stream(str(path))


def is_parquet(path: str | Path) -> bool:
    """Whether ``path`` is read as Parquet: a directory, a ``.parquet`` name, or a file starting with ``PAR1``."""
    path = Path(path)
    if path.is_dir() or path.suffix.lower() in PARQUET_SUFFIXES:
        return True
    if path.suffix.lower() in (".csv", ".gz", ".txt", ".tsv") or not path.is_file():
        return False
    with reading(path), open_input(path, seekable=True) as file:
        return file.read(4) == b"PAR1"


def parquet_files(path: str | Path) -> list[tuple[str, pq.FileMetaData]]:
    """The Parquet files of ``path`` (itself, or those below a directory, in path order) and their metadata."""
    path = Path(path)
    if not path.exists():
        raise UserInputError(f"{path}: no such file or directory")
    files = _files_below(path) if path.is_dir() else [str(path)]
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


def _files_below(root: Path) -> list[str]:
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
