"""The fast data path: whole batches indexed out of in-memory tensors, behind the DataLoader interface.

A stock ``DataLoader(TensorDataset(...))`` collates a batch example by example: at batch 1024, many times the SGD
step (``python -m linreg.benchmark loops``). Here each batch is a slice of one index tensor and one ``index_select``.

Every piece stays a standard type so that Lightning keeps doing its jobs with it:

- ``EpochShuffleSampler`` is a ``RandomSampler``, so Lightning sees a shuffled loader and, under DDP,
  swaps in a shuffling ``DistributedSampler``; its order depends on ``(seed, epoch)`` only.
- ``IndexBatchSampler`` is a ``BatchSampler``; Lightning rebuilds it around that ``DistributedSampler``,
  with the arguments it was first given, and it gives the sampler the data's seed: Lightning seeds it with
  the global seed (``seed_everything``), and the data's ``seed`` is what sets the order of the examples.
- ``ResumableDataLoader`` has ``state_dict``/``load_state_dict``, which Lightning stores in checkpoints,
  so a run resumed mid-epoch skips exactly the batches it has already trained on.

torchdata's ``StatefulDataLoader`` over this batch sampler resumes as exactly (tests/test_resume.py), but its state
counts batches, not their size: a checkpoint resumed with another batch size restarts at the wrong row without a word
(tests/test_loading.py), and its own row-counting ``BatchSampler`` builds a list per batch (4x slower a pass).
"""

from __future__ import annotations

from collections.abc import Iterator, Sequence, Sized
from typing import Any

import torch
from torch import Tensor
from torch.utils.data import (
    BatchSampler,
    DataLoader,
    DistributedSampler,
    RandomSampler,
    Sampler,
    SequentialSampler,
    TensorDataset,
)

from linreg.validation import UserInputError


class TensorBatchDataset(TensorDataset):
    """A ``TensorDataset`` indexed a whole batch at a time: ``DataLoader`` hands ``__getitems__`` the batch."""

    def __getitems__(self, indices: Tensor | Sequence[int]) -> tuple[Tensor, ...]:
        index = torch.as_tensor(indices, dtype=torch.long, device=self.tensors[0].device)
        return tuple(t.index_select(0, index) for t in self.tensors)


def keep_batch(batch: tuple[Tensor, ...]) -> tuple[Tensor, ...]:
    """Collate function for ``TensorBatchDataset``: the batch is already stacked."""
    return batch


class EpochShuffleSampler(RandomSampler):
    """A random permutation per epoch, drawn from ``seed + epoch`` (DistributedSampler's convention).

    The order depends on nothing but the seed and the epoch set by Lightning through ``set_epoch``,
    so a resumed run sees the same order as an uninterrupted one.
    """

    def __init__(self, data_source: Sized, seed: int = 0) -> None:
        super().__init__(data_source)
        self.seed = seed
        self.epoch = 0

    def set_epoch(self, epoch: int) -> None:
        self.epoch = epoch

    def permutation(self) -> Tensor:
        generator = torch.Generator().manual_seed(self.seed + self.epoch)
        return torch.randperm(len(self.data_source), generator=generator)

    def __iter__(self) -> Iterator[int]:
        return iter(self.permutation().tolist())


def _epoch_order(sampler: Sampler[int] | Sized) -> Tensor:
    """All indices of one pass of ``sampler`` as one tensor, without a Python list where avoidable."""
    if isinstance(sampler, EpochShuffleSampler):
        return sampler.permutation()
    if isinstance(sampler, SequentialSampler):
        return torch.arange(len(sampler))
    # Any other sampler, such as the DistributedSampler Lightning injects under DDP: one list per epoch.
    return torch.tensor(list(sampler), dtype=torch.long)  # type: ignore[call-overload]


class EpochPosition:
    """How many batches of the current pass were handed out: saved in checkpoints, skipped when resumed.

    Shared by every training loader of the project (in memory and streamed). A batch is counted before it
    is yielded, so a checkpoint taken after its step includes it.

    Args:
        batch_size: rows per batch; a checkpoint of another batch size cannot say where to resume.
    """

    def __init__(self, batch_size: int) -> None:
        self.batch_size = batch_size
        self.batches_done = 0
        self._resume_from: dict[str, Any] | None = None

    def start_pass(self, epoch: int | None, num_batches: int) -> int:
        """Starts a pass over the data; returns the batches a restored checkpoint of this epoch already trained on."""
        state, self._resume_from = self._resume_from, None
        # A pass that had finished (a checkpoint at the end of an epoch) leaves nothing to skip.
        resumed = state is not None and state["epoch"] == epoch and state["batches_done"] < num_batches
        self.batches_done = state["batches_done"] if resumed else 0  # type: ignore[index]
        return self.batches_done

    def state_dict(self, epoch: int | None) -> dict[str, Any]:
        return {"epoch": epoch, "batches_done": self.batches_done, "batch_size": self.batch_size}

    def load_state_dict(self, state: dict[str, Any]) -> None:
        if state.get("batch_size") != self.batch_size:
            raise UserInputError(
                f"cannot resume mid-epoch: the checkpoint was written with batch_size={state.get('batch_size')},"
                f" this run has batch_size={self.batch_size}"
            )
        self._resume_from = dict(state)


class IndexBatchSampler(BatchSampler):
    """Yields each batch as a slice (a view) of the epoch's index tensor instead of a list of ints.

    It also counts the batches handed out in the current pass, so that a checkpoint taken mid-epoch
    can say where to resume, and skips that many batches on the first pass after ``load_state_dict``.
    """

    def __init__(
        self, sampler: Sampler[int] | Sized, batch_size: int, drop_last: bool = False, seed: int | None = None
    ) -> None:
        super().__init__(sampler, batch_size, drop_last)  # type: ignore[arg-type]
        if seed is not None and isinstance(sampler, DistributedSampler) and sampler.shuffle:
            # The DistributedSampler Lightning puts in under DDP: the same order as EpochShuffleSampler(seed) gives
            # one process (a permutation drawn from seed + epoch), shared out among the processes.
            sampler.seed = seed
        self.position = EpochPosition(batch_size)

    def _epoch(self) -> int | None:
        return getattr(self.sampler, "epoch", None)

    def __iter__(self) -> Iterator[Tensor]:  # type: ignore[override]
        order = _epoch_order(self.sampler)
        stop = len(order) - len(order) % self.batch_size if self.drop_last else len(order)
        skip = self.position.start_pass(self._epoch(), len(self))
        for start in range(skip * self.batch_size, stop, self.batch_size):
            self.position.batches_done += 1
            yield order[start : start + self.batch_size]

    def state_dict(self) -> dict[str, Any]:
        return self.position.state_dict(self._epoch())

    def load_state_dict(self, state: dict[str, Any]) -> None:
        self.position.load_state_dict(state)


class ResumableDataLoader(DataLoader):
    """A DataLoader whose position within the epoch is saved in Lightning checkpoints."""

    def state_dict(self) -> dict[str, Any]:
        return self.batch_sampler.state_dict()  # type: ignore[union-attr]

    def load_state_dict(self, state: dict[str, Any]) -> None:
        self.batch_sampler.load_state_dict(state)  # type: ignore[union-attr]


def tensor_loader(
    *tensors: Tensor,
    batch_size: int,
    shuffle: bool,
    seed: int = 0,
    pin_memory: bool = False,
) -> ResumableDataLoader:
    """A loader over ``tensors`` on the fast path: ``seed`` + epoch shuffling (also under DDP), whole-batch indexing.

    Example:
        >>> X, y = torch.arange(10.0).reshape(5, 2), torch.arange(5.0).reshape(5, 1)
        >>> [b[1].flatten().tolist() for b in tensor_loader(X, y, batch_size=2, shuffle=False)]
        [[0.0, 1.0], [2.0, 3.0], [4.0]]
    """
    dataset = TensorBatchDataset(*tensors)
    sampler = EpochShuffleSampler(dataset, seed) if shuffle else SequentialSampler(dataset)
    return ResumableDataLoader(
        dataset,
        batch_sampler=IndexBatchSampler(sampler, batch_size, seed=seed if shuffle else None),
        collate_fn=keep_batch,
        pin_memory=pin_memory,
    )


def fits_on_device(tensors: Sequence[Tensor], device: torch.device, fraction: float = 0.5) -> bool:
    """Whether ``tensors`` take at most ``fraction`` of the free memory of CUDA ``device``."""
    if device.type != "cuda":
        return False
    free, _total = torch.cuda.mem_get_info(device)
    return sum(t.nbytes for t in tensors) <= fraction * free
