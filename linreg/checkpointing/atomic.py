"""Writing a file so that a crash never leaves half of it: checkpoints, predictions.

The data go to a temporary file in the same directory, are flushed to disk, and only then renamed over
the target; ``os.replace`` is atomic, so the target is at every moment either what it was or complete.
"""

from __future__ import annotations

import contextlib
import os
import secrets
from collections.abc import Callable
from pathlib import Path
from typing import IO

import torch


def save_atomically(
    obj: object, path: str | os.PathLike[str], save: Callable[[object, IO[bytes]], None] = torch.save
) -> None:
    """Writes ``save(obj, file)`` to ``path`` such that ``path`` never holds a partial write.

    The data go to a hidden temporary file beside ``path`` (same directory, so same file system), are
    fsynced, and the file is renamed over ``path``; the directory is fsynced too, so the rename itself
    survives a power cut. A process killed before the rename leaves ``path`` as it was, plus the
    temporary ``.<name>.<random>.tmp``, which may be deleted.

    Example:
        >>> import tempfile
        >>> target = Path(tempfile.mkdtemp()) / "x.ckpt"
        >>> save_atomically({"w": torch.ones(2)}, target)
        >>> torch.load(target, weights_only=True)["w"]
        tensor([1., 1.])
    """
    path = Path(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    temporary = path.with_name(f".{path.name}.{secrets.token_hex(4)}.tmp")
    try:
        with open(temporary, "xb") as file:  # "x": never reuse a name another writer holds
            save(obj, file)
            file.flush()
            os.fsync(file.fileno())
        os.replace(temporary, path)
    except BaseException:
        with contextlib.suppress(OSError):
            temporary.unlink()
        raise
    _fsync_directory(path.parent)


def _fsync_directory(directory: Path) -> None:
    """Flushes a directory's entries (a rename) to disk; a no-op where directories cannot be opened (Windows)."""
    try:
        fd = os.open(directory, os.O_RDONLY)
    except OSError:
        return
    try:
        os.fsync(fd)
    except OSError:
        pass
    finally:
        os.close(fd)
