"""Reading and writing checkpoint files: writes that a crash cannot half-finish, reads that run no code.

Lightning's ``TorchCheckpointIO`` writes a local checkpoint by opening the target and writing into it
(through fsspec), so a process killed mid-write leaves a truncated ``last.ckpt`` behind: exactly the file
a pre-empted job needs to resume. Here the bytes go to a temporary file in the same directory, are
flushed to disk, and only then renamed over the target; ``os.replace`` is atomic, so the target is at
every moment either the previous complete checkpoint or the new one.

A checkpoint is a pickle, and unpickling can call any function the file names. Every load here uses
``torch.load(weights_only=True)``, which accepts tensors and plain values only; a file that asks for
anything else is refused with a message saying so, before any of its code runs.
"""

from __future__ import annotations

import os
import pickle
import re
from typing import Any

import torch
from fsspec.implementations.local import LocalFileSystem
from lightning.fabric.utilities.cloud_io import get_filesystem
from lightning.pytorch.plugins.io import TorchCheckpointIO

from linreg.checkpointing.atomic import save_atomically
from linreg.data.files import open_input
from linreg.data.storage import is_remote
from linreg.validation import UserInputError


def load_safely(path: str | os.PathLike[str], map_location: Any = "cpu") -> Any:
    """``torch.load(path, weights_only=True)``, with a one-line ``UserInputError`` for every way it can fail.

    Raises:
        UserInputError: the file is missing, unreadable, not a PyTorch file, truncated, or holds Python
            objects other than tensors and plain values (loading those would run code named in the file).
    """
    shown = os.fspath(path)
    try:
        with open_input(path, seekable=True) if is_remote(path) else open(path, "rb") as file:  # s3://, gs://, ...
            return torch.load(file, map_location=map_location, weights_only=True)
    except UserInputError:  # a remote checkpoint's store said why, in one line
        raise
    except FileNotFoundError:
        raise UserInputError(f"checkpoint not found: {shown}") from None
    except IsADirectoryError:
        raise UserInputError(f"checkpoint is a directory, not a file: {shown}") from None
    except PermissionError:
        raise UserInputError(f"checkpoint cannot be read (permission denied): {shown}") from None
    except pickle.UnpicklingError as error:
        unsafe = re.search(r"GLOBAL ([\w.]+)", str(error))  # a function or class the file asks to be called
        if unsafe:
            raise UserInputError(
                f"refused to load checkpoint {shown}: it holds a Python object ({unsafe.group(1)}) besides tensors"
                " and plain values, and loading it would run code from the file; load only files you trust"
            ) from None
        unpickler = re.search(r"WeightsUnpickler error:\s*(.+)", str(error))
        raise UserInputError(_damaged(shown, unpickler.group(1) if unpickler else "unpickling failed")) from None
    except (RuntimeError, EOFError, KeyError, ValueError, IndexError, TypeError, AttributeError) as error:
        # torch.load's errors for a truncated zip archive, a text file, an empty file, ...
        text = str(error).strip().split(". ")[0].splitlines()[0][:100] if str(error).strip() else ""
        detail = text if isinstance(error, RuntimeError) else f"{type(error).__name__}: {text}" if text else ""
        raise UserInputError(_damaged(shown, detail or type(error).__name__)) from None


def _is_local(path: Any) -> bool:
    """Whether ``path`` names a file on the local file system (not ``s3://``, ``gs://``, ...)."""
    return isinstance(get_filesystem(path), LocalFileSystem)


def _damaged(shown: str, detail: str) -> str:
    """The message for a file torch cannot read, with the gist of torch's own complaint."""
    return f"checkpoint {shown} cannot be read: not a PyTorch checkpoint, or truncated or damaged ({detail})"


class AtomicCheckpointIO(TorchCheckpointIO):
    """Lightning's ``TorchCheckpointIO`` with atomic local writes and weights-only loads.

    Remote paths (``s3://``, ``gs://``, ...) are written by Lightning as before (object stores replace an
    object whole, so a reader never sees half of one), and read through ``linreg.data.files``.
    """

    def save_checkpoint(self, checkpoint: dict[str, Any], path: Any, storage_options: Any | None = None) -> None:
        if storage_options is not None or not _is_local(path):
            super().save_checkpoint(checkpoint, path, storage_options)
            return
        save_atomically(checkpoint, path)

    def load_checkpoint(self, path: Any, map_location: Any = "cpu", weights_only: bool | None = None) -> dict[str, Any]:
        # Loaded to the CPU (Lightning's default too); the strategy moves the states to the devices it uses.
        if weights_only is False:
            raise UserInputError(
                "weights_only=False is not accepted: this project loads checkpoints with weights_only=True only,"
                " so that loading one never runs code from it"
            )
        return load_safely(path, map_location)
