"""Checkpoint files: writes that a crash cannot half-finish (``linreg.atomic_write``), reads that run no code.

Unpickling can call any function the file names: every load is ``torch.load(weights_only=True)``, from a regular
file whose zip entries inflate to no more than its own size (``torch.save`` stores them uncompressed).
"""

from __future__ import annotations

import os
import pickle
import zipfile
from typing import IO, Any

import torch
from fsspec.implementations.local import LocalFileSystem
from lightning.fabric.plugins import CheckpointIO
from lightning.fabric.utilities.cloud_io import get_filesystem
from lightning.pytorch.plugins.io import TorchCheckpointIO

from linreg.atomic_write import save_atomically
from linreg.data.sources import is_remote, open_input
from linreg.validation import UserInputError, check_fits_in_memory, check_regular_file

# What a checkpoint's entries may inflate to beyond the file's own size: zip's own records, rounded up.
_INFLATION_SLACK = 1 << 20


def load_safely(path: str | os.PathLike[str], map_location: Any = "cpu") -> Any:
    """``torch.load(path, weights_only=True)``, with a one-line ``UserInputError`` for every way it can fail."""
    shown = os.fspath(path)
    if not is_remote(path):  # before opening: opening a FIFO waits for a writer
        check_regular_file(path, "checkpoint", missing_ok=True)
    try:
        with open_input(path, seekable=True) if is_remote(path) else open(path, "rb") as file:  # s3://, gs://, ...
            _check_inflation(file, shown)
            return torch.load(file, map_location=map_location, weights_only=True)
    except UserInputError:  # a remote checkpoint's store said why, in one line
        raise
    except FileNotFoundError:
        raise UserInputError(f"checkpoint not found: {shown}") from None
    except PermissionError:
        raise UserInputError(f"checkpoint cannot be read (permission denied): {shown}") from None
    except pickle.UnpicklingError:
        unsafe = _unsafe_globals(path)  # the functions or classes the file asks to be called
        if unsafe:
            raise UserInputError(
                f"refused to load checkpoint {shown}: it holds a Python object ({', '.join(unsafe[:3])}) besides"
                " tensors and plain values, and loading it would run code from the file; load only files you trust"
            ) from None
        detail = "what it holds cannot be unpickled weights-only"
    except (RuntimeError, EOFError, KeyError, ValueError, IndexError, TypeError, AttributeError) as error:
        # torch.load's errors for a truncated zip archive, a text file, an empty file, ...
        text = str(error).strip().split(". ")[0].splitlines()[0][:100] if str(error).strip() else ""
        detail = text if isinstance(error, RuntimeError) else f"{type(error).__name__}: {text}" if text else ""
        detail = detail or type(error).__name__
    raise UserInputError(
        f"checkpoint {shown} cannot be read: not a PyTorch checkpoint, or truncated or damaged ({detail})"
    )


def refuse_unsafe_loading(weights_only: bool | None) -> None:
    """Refuses ``weights_only=False`` (from the config or a caller): loading would run code named in the file."""
    if weights_only is False:
        raise UserInputError(
            "weights_only must stay true or unset, got False: checkpoints are loaded with weights_only=True,"
            " so that loading one never runs code from it"
        )


def _unsafe_globals(path: str | os.PathLike[str]) -> list[str]:
    """The globals a ``torch.save`` file names that weights-only loading refuses (torch's own list of them)."""
    try:
        with open_input(path, seekable=True) if is_remote(path) else open(path, "rb") as file:
            return torch.serialization.get_unsafe_globals_in_checkpoint(file)
    except Exception:  # not a zip archive torch can list: nothing to name
        return []


def _check_inflation(file: IO[bytes], shown: str) -> None:
    """Refuses a zip archive whose entries inflate beyond the file's size; anything else is left to torch.load."""
    if not zipfile.is_zipfile(file):
        file.seek(0)
        return
    file.seek(0)
    with zipfile.ZipFile(file) as archive:
        inflated = sum(entry.file_size for entry in archive.infolist())
    size = file.seek(0, os.SEEK_END)  # a local file or a store's (pyarrow's files have no fileno)
    if inflated > size + _INFLATION_SLACK:
        raise UserInputError(
            f"checkpoint {shown} inflates to {inflated} bytes from {size}: torch.save stores its entries"
            " uncompressed, so it did not write this file; refused before reading it"
        )
    check_fits_in_memory(f"checkpoint {shown}'s {inflated} bytes", inflated)
    file.seek(0)


class AtomicCheckpointIO(TorchCheckpointIO):
    """``TorchCheckpointIO``, atomic and weights-only; ``admitted``: a checkpoint already checked, restored as read."""

    admitted: tuple[str, dict[str, Any]] | None = None

    @classmethod
    def unless_given(cls, plugins: Any) -> list[Any]:
        """The trainer's ``plugins`` with an ``AtomicCheckpointIO`` added, unless they name a CheckpointIO."""
        given = [] if plugins is None else list(plugins) if isinstance(plugins, list) else [plugins]
        return given if any(isinstance(p, CheckpointIO) for p in given) else [*given, cls()]

    def save_checkpoint(self, checkpoint: dict[str, Any], path: Any, storage_options: Any | None = None) -> None:
        if storage_options is not None or not isinstance(get_filesystem(path), LocalFileSystem):  # s3://: whole
            super().save_checkpoint(checkpoint, path, storage_options)
            return
        save_atomically(checkpoint, path)

    def load_checkpoint(self, path: Any, map_location: Any = "cpu", weights_only: bool | None = None) -> dict[str, Any]:
        # Loaded to the CPU (Lightning's default too); the strategy moves the states to the devices it uses.
        refuse_unsafe_loading(weights_only)
        if self.admitted is not None and self.admitted[0] == os.fspath(path):
            (_, checkpoint), self.admitted = self.admitted, None
            return checkpoint
        return load_safely(path, map_location)
