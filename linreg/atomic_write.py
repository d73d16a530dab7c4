"""Writing a file so that a crash cannot half-finish it: checkpoints, reports, figures, predictions.

``save_atomically`` writes to a temporary file in the target's directory, fsyncs it, renames it over the
target (``os.replace``, atomic) and fsyncs the directory: the target is at every moment the previous complete
file or the new one, also after a power cut. Lightning's own ``_atomic_save`` (2.6) writes through an fsspec
transaction, whose local temporary file is made by ``tempfile.mkstemp`` in the system's temporary directory and
moved with ``shutil.move``: where that is another file system, a copy that a crash can cut short, and nothing
is fsynced.
"""

from __future__ import annotations

import contextlib
import os
import secrets
from collections.abc import Callable
from pathlib import Path
from typing import IO

import torch

from linreg.validation import check_regular_file


def save_atomically(
    obj: object, path: str | os.PathLike[str], save: Callable[[object, IO[bytes]], None] = torch.save
) -> None:
    """Writes ``save(obj, file)`` to ``path`` such that ``path`` never holds a partial write.

    A process killed before the rename leaves ``path`` as it was, plus the temporary ``.<name>.<random>.tmp``.
    An existing ``path`` that is not a regular file (a FIFO, a directory, a link) is refused.

    Example:
        >>> import tempfile
        >>> target = Path(tempfile.mkdtemp()) / "x.ckpt"
        >>> save_atomically({"w": torch.ones(2)}, target)
        >>> torch.load(target, weights_only=True)["w"]
        tensor([1., 1.])
    """
    path = Path(path)
    check_regular_file(path, missing_ok=True, links=False)  # the entry the rename replaces
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
    try:  # the rename itself, to disk; where a directory cannot be opened (Windows) it is left to the system
        fd = os.open(path.parent, os.O_RDONLY)
    except OSError:
        return
    with contextlib.suppress(OSError):
        os.fsync(fd)
    os.close(fd)
