"""Where a table's files are, and the one place they are opened (``open_input``): local paths and object storage.

A URI goes through pyarrow's filesystems (``s3://``, ``gs://``, ``abfs://``, ``hdfs://``) or fsspec. Credentials
come from the store's environment and config files, never from the URI, so no secret reaches a config, log or
message. Timeouts are short: an unreachable store fails within a minute, not after GCS's 15 minutes of retries.

A file that has changed since the first pass recorded its ``Version`` is refused. Locally the version includes a
``fingerprint`` of the content, since ``cp -p`` and ``rsync -t`` keep size and modification time; it samples large
files, so a same-size change outside the sample goes unseen.
"""

from __future__ import annotations

import hashlib
import os
import re
import zlib
from collections.abc import Iterator
from contextlib import contextmanager
from dataclasses import dataclass
from datetime import timedelta
from functools import lru_cache
from pathlib import Path, PurePosixPath
from urllib.parse import SplitResult, parse_qs, urlencode, urlsplit

import pyarrow as pa
import pyarrow.fs as pafs
import pyarrow.parquet as pq
from pyarrow.fs import FileType

from linreg.validation import UserInputError, check_regular_file

PYARROW_SCHEMES = ("s3", "gs", "gcs", "abfs", "abfss", "hdfs", "viewfs", "file")  # the rest through fsspec
QUERY_OPTIONS = ("region", "endpoint_override", "scheme")  # of a URI's query: none of them a secret
CONNECT_TIMEOUT_S = 3.0  # per connection attempt (an unreachable endpoint fails in seconds, not minutes)
REQUEST_TIMEOUT_S = 20.0  # per S3 request: a store that accepts a connection and then stalls
ATTEMPTS = 3  # per request, the first included
RETRY_LIMIT_S = 20  # GCS's client retries (with backoff) for this long, instead of its default 15 minutes


@dataclass(frozen=True)
class Version:
    """A file's size, and its ETag (S3), modification time (another store), or local mtime and ``fingerprint``."""

    size: int
    stamp: str | int | None


def shown(path: str | os.PathLike[str]) -> str:
    """``path`` for a message, the user info of every URL in it (also in its query) masked as ``***``.

    Example:
        >>> shown("s3://b/t.csv?endpoint_override=http://KEY:SECRET@host")
        's3://b/t.csv?endpoint_override=http://***@host'
    """
    return _USER_INFO.sub(r"\1***@", os.fspath(path))


_USER_INFO = re.compile(r"(//|=)[^/?#@&=\s]*@")  # of a URL, or of one nested in a URL's query (scheme or none)


def is_remote(path: str | os.PathLike[str]) -> bool:
    """Whether ``path`` is a URI (``scheme://...``) rather than a local path."""
    return "://" in os.fspath(path)


def locate(path: str | os.PathLike[str]) -> tuple[pafs.FileSystem, str]:
    """The filesystem holding the URI ``path``, and the path within it.

    Raises:
        UserInputError: the URI holds credentials or a query option not in ``QUERY_OPTIONS`` (neither shown).
    """
    path = os.fspath(path)
    parts = urlsplit(path, allow_fragments=False)
    options = _options(parts)
    filesystem = _filesystem(parts.scheme, parts.netloc, tuple(sorted(options.items())), endpoint(path))
    if parts.scheme in ("s3", "gs", "gcs"):
        return filesystem, parts.netloc + parts.path
    if parts.scheme in PYARROW_SCHEMES:
        return filesystem, pafs.FileSystem.from_uri(path)[1]
    import fsspec  # a dependency of Lightning's

    return filesystem, fsspec.core.url_to_fs(path)[1]


def _options(parts: SplitResult) -> dict[str, str]:
    """The query options of a URI, checked to hold no credentials."""
    bucket = parts.scheme in ("s3", "gs", "gcs")  # user info there is a key; in abfs://container@account, a name
    if parts.password is not None or (bucket and "@" in parts.netloc):
        raise UserInputError(
            f"{parts.scheme}://***@{parts.hostname}{parts.path}: credentials in a data path are refused (they would"
            " be written to the run's config); give them as the store's environment variables or config file"
        )
    options = parse_qs(parts.query, keep_blank_values=True)
    if any("@" in value for value in options.get("endpoint_override", [])):
        raise UserInputError(
            f"{shown(parts.geturl())}: credentials in a data path's endpoint_override are refused (they would be"
            " written to the run's config); give them as the store's environment variables or config file"
        )
    if unknown := sorted(set(options) - set(QUERY_OPTIONS)):
        raise UserInputError(
            f"{parts.scheme}://{parts.netloc}{parts.path}: query option {unknown[0]!r} is not accepted; a data path"
            f" takes {', '.join(QUERY_OPTIONS)} (credentials come from the store's environment or config file)"
        )
    return {key: values[-1] for key, values in options.items()}


def endpoint(path: str | os.PathLike[str]) -> str | None:
    """An S3 path's ``?endpoint_override=``, else ``AWS_ENDPOINT_URL_S3``/``AWS_ENDPOINT_URL``; else None."""
    parts = urlsplit(os.fspath(path), allow_fragments=False)
    if parts.scheme != "s3":
        return None
    if given := _options(parts).get("endpoint_override"):
        return given
    for variable in ("AWS_ENDPOINT_URL_S3", "AWS_ENDPOINT_URL"):
        if value := os.environ.get(variable):
            if "@" in value:  # an endpoint has no user info: a key in it would be printed with every message
                raise UserInputError(
                    f"{variable}={shown('=' + value)[1:]}: credentials in an endpoint URL are"
                    " refused; give them as AWS_ACCESS_KEY_ID and AWS_SECRET_ACCESS_KEY, or in ~/.aws/credentials"
                )
            return value
    return None


@lru_cache(maxsize=16)
def _filesystem(
    scheme: str, netloc: str, query: tuple[tuple[str, str], ...], endpoint_url: str | None
) -> pafs.FileSystem:
    """One filesystem per store (a client is costly to build: credentials are looked up)."""
    options = dict(query)
    if scheme == "s3":
        return pafs.S3FileSystem(
            region=options.get("region"),
            scheme=options.get("scheme"),
            endpoint_override=endpoint_url,
            connect_timeout=CONNECT_TIMEOUT_S,
            request_timeout=REQUEST_TIMEOUT_S,
            retry_strategy=pafs.AwsStandardS3RetryStrategy(max_attempts=ATTEMPTS),
        )
    if scheme in ("gs", "gcs"):
        return pafs.GcsFileSystem(
            scheme=options.get("scheme"),
            endpoint_override=options.get("endpoint_override"),
            retry_time_limit=timedelta(seconds=RETRY_LIMIT_S),
        )
    if scheme in PYARROW_SCHEMES:
        return pafs.FileSystem.from_uri(f"{scheme}://{netloc}/?{urlencode(options)}")[0]
    import fsspec

    try:
        return pafs.PyFileSystem(pafs.FSSpecHandler(fsspec.filesystem(scheme)))
    except (ValueError, ImportError) as exc:  # an unknown protocol; a known one whose package is not installed
        raise UserInputError(f"{scheme}://{netloc}: no filesystem reads {scheme}:// here ({exc})") from None


def where(path: str | os.PathLike[str]) -> str:
    """`` at <endpoint>`` for a message about ``path``, where it has one."""
    return f" at {shown(url)}" if (url := endpoint(path)) else ""


def missing(path: str | os.PathLike[str]) -> str:
    """The message for a file that is not there: in a bucket, whether the bucket itself is."""
    if not is_remote(path):
        return f"{os.fspath(path)}: no such file or directory"
    filesystem, inner = locate(path)
    path = shown(path)
    if urlsplit(os.fspath(path)).scheme in ("s3", "gs", "gcs"):
        bucket, _, key = inner.partition("/")
        if filesystem.get_file_info(bucket).type == pafs.FileType.NotFound:
            return f"{path}: no such bucket {bucket!r}{where(path)}"
        return f"{path}: no such key {key!r} in bucket {bucket!r}{where(path)}"
    return f"{path}: no such file or directory"


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
        message = shown(one_line(exc))  # a library may quote the URL it was given
        raise UserInputError(f"{shown(path)}: cannot be read{where(path)} ({message})") from None


def open_input(path: str | Path, seekable: bool = False, expected: Version | None = None) -> pa.NativeFile:
    """Opens a regular file of a table (``.gz`` gunzipped unless ``seekable``), of the ``expected`` version.

    Raises:
        UserInputError: the file (or bucket) is missing, unreadable, or has changed.
    """
    remote = is_remote(path)
    if not remote:
        check_regular_file(path)
    with reading(path):
        if not remote:
            file = pa.OSFile(str(path)) if seekable else pa.input_stream(str(path))
        else:
            filesystem, inner = locate(path)
            try:  # a version is compared on the open file (an S3 ETag is of one request): it is seekable
                if seekable or expected is not None:
                    file = filesystem.open_input_file(inner)
                else:
                    file = filesystem.open_input_stream(inner, compression="detect")
            except FileNotFoundError:
                raise UserInputError(missing(path)) from None
    if expected is not None and (now := version(path, file)) != expected:
        file.close()
        raise _changed(path, expected, now)
    if remote and expected is not None and not seekable:
        file.close()  # opened to compare versions; a CSV file is read as a stream, gunzipped
        return open_input(path)
    return file


def version(path: str | Path, file: pa.NativeFile | None = None) -> Version:
    """The file's ``Version`` now (on S3, the ETag of opening ``file``, if given)."""
    with reading(path):
        if not is_remote(path):
            status = os.stat(path)
            return Version(status.st_size, f"{status.st_mtime_ns}:{fingerprint(path, status.st_size)}")
        if file is None:
            with open_input(path, seekable=True) as opened:
                return version(path, opened)
        if etag := file.metadata().get("ETag"):
            return Version(file.size(), etag.decode())
        filesystem, inner = locate(path)
        info = filesystem.get_file_info(inner)
        return Version(info.size, info.mtime_ns)


def fingerprint(path: str | Path, size: int) -> str:
    """A hash of the local file: whole up to ``FULL_HASH_BYTES``, else its ends and ``SAMPLES`` blocks between."""
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
        f"{shown(path)}: changed since this run first read it ({sizes}, and rewritten); the statistics"
        " and the split are the earlier file's: start the run again to use it"
    )


def is_parquet(path: str | Path) -> bool:
    """Whether ``path`` is read as Parquet: a directory, a ``.parquet`` name, or a file starting with ``PAR1``."""
    inner = urlsplit(os.fspath(path), allow_fragments=False).path if is_remote(path) else path  # without a query
    suffix = PurePosixPath(inner).suffix.lower()
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
            raise UserInputError(missing(path))
    files = _files_below(path) if kind == FileType.Directory else [str(path)]
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
    with reading(path):
        filesystem, inner = locate(path) if is_remote(path) else (pafs.LocalFileSystem(), os.fspath(path))
        return filesystem.get_file_info(inner).type


def _files_below(root: str | Path) -> list[str]:
    """The files below ``root`` in path order, skipping names starting with ``_`` or ``.`` and what is below them.

    Object storage is listed by ``pyarrow.dataset``. A local directory is walked here, because that discovery
    follows links (``test_links_below_a_data_directory_are_refused_not_followed`` fails with it) and drops FIFOs
    silently (``test_a_fifo_in_a_data_directory_is_refused_before_it_is_opened``); here both are refused.
    """
    if is_remote(root):
        import pyarrow.dataset as ds  # 16 MiB of libraries, for object storage only

        with reading(root):
            filesystem, inner = locate(root)
            found = ds.dataset(inner, schema=pa.schema([]), format="parquet", filesystem=filesystem).files
        parts, prefix = urlsplit(os.fspath(root), allow_fragments=False), inner.rstrip("/")
        return [parts._replace(path=parts.path.rstrip("/") + file[len(prefix) :]).geturl() for file in found]

    def fail(error: OSError) -> None:
        raise UserInputError(f"{error.filename}: cannot be read ({error.strerror})")

    files = []
    for folder, folders, names in os.walk(root, onerror=fail):
        folders[:] = [part for part in folders if not part.startswith(("_", "."))]
        for part in [*folders, *names]:
            if os.path.islink(entry := os.path.join(folder, part)):
                raise UserInputError(f"{entry}: is a link; the files of a data set must lie in its directory")
        files += [os.path.join(folder, part) for part in names if not part.startswith(("_", "."))]
    return sorted(files)
