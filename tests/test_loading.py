"""The fast data path gives the same batches as PyTorch's per-example path, without copying the data."""

import pytest
import torch
from torch.utils.data import BatchSampler, DataLoader, DistributedSampler, SequentialSampler, TensorDataset

from linreg.data.batches import EpochShuffleSampler, IndexBatchSampler, TensorBatchDataset, keep_batch, tensor_loader


def _data(n: int = 103, d: int = 3) -> tuple[torch.Tensor, torch.Tensor]:
    X = torch.arange(n * d, dtype=torch.float32).reshape(n, d)
    return X, X.sum(1, keepdim=True)


def _batches(loader: DataLoader) -> list[tuple[torch.Tensor, torch.Tensor]]:
    return [tuple(b) for b in loader]


@pytest.mark.parametrize("epoch", [0, 1, 5])
def test_same_batches_as_a_standard_dataloader(epoch: int) -> None:
    X, y = _data()
    fast = tensor_loader(X, y, batch_size=10, shuffle=True, seed=3)
    fast.batch_sampler.sampler.set_epoch(epoch)
    reference_sampler = EpochShuffleSampler(range(len(X)), seed=3)
    reference_sampler.set_epoch(epoch)
    slow = DataLoader(TensorDataset(X, y), batch_size=10, sampler=reference_sampler)  # __getitem__ + collate
    fast_batches, slow_batches = _batches(fast), _batches(slow)
    assert len(fast_batches) == len(slow_batches) == 11
    for (fx, fy), (sx, sy) in zip(fast_batches, slow_batches, strict=True):
        assert torch.equal(fx, sx)
        assert torch.equal(fy, sy)


def test_shuffled_epoch_is_a_permutation_that_changes_with_epoch_and_seed() -> None:
    sampler = EpochShuffleSampler(range(1000), seed=0)
    first = sampler.permutation()
    assert torch.equal(first.sort().values, torch.arange(1000))
    sampler.set_epoch(1)
    assert not torch.equal(sampler.permutation(), first)
    sampler.set_epoch(0)
    assert torch.equal(sampler.permutation(), first)
    assert not torch.equal(EpochShuffleSampler(range(1000), seed=1).permutation(), first)


def test_order_matches_torch_distributed_sampler_on_one_process() -> None:
    dataset = range(500)
    ours = EpochShuffleSampler(dataset, seed=11)
    theirs = DistributedSampler(dataset, num_replicas=1, rank=0, shuffle=True, seed=11)
    for epoch in (0, 3):
        ours.set_epoch(epoch)
        theirs.set_epoch(epoch)
        assert ours.permutation().tolist() == list(theirs)


def test_unshuffled_loader_keeps_order_and_last_partial_batch() -> None:
    X, y = _data(25)
    batches = _batches(tensor_loader(X, y, batch_size=10, shuffle=False))
    assert [len(b[0]) for b in batches] == [10, 10, 5]
    assert torch.equal(torch.cat([b[0] for b in batches]), X)


def test_dataset_holds_views_not_copies() -> None:
    X, y = _data()
    dataset = tensor_loader(X, y, batch_size=10, shuffle=True).dataset
    assert dataset.tensors[0].data_ptr() == X.data_ptr()
    assert dataset.tensors[1].data_ptr() == y.data_ptr()


def test_any_other_sampler_is_batched_in_its_own_order() -> None:
    dataset = TensorBatchDataset(*_data(20))
    order = [5, 3, 1, 19, 0, 2]
    batch_sampler = IndexBatchSampler(order, batch_size=4)
    assert [b.tolist() for b in batch_sampler] == [[5, 3, 1, 19], [0, 2]]
    assert torch.equal(dataset.__getitems__(torch.tensor([5, 3]))[0], dataset.tensors[0][[5, 3]])


def test_resumed_pass_skips_the_batches_already_seen() -> None:
    sampler = EpochShuffleSampler(range(95), seed=2)
    batch_sampler = IndexBatchSampler(sampler, batch_size=10)
    sampler.set_epoch(4)
    full = [b.tolist() for b in batch_sampler]
    iterator = iter(batch_sampler)
    for _ in range(3):
        next(iterator)
    state = batch_sampler.state_dict()
    assert state["batches_done"] == 3

    resumed_sampler = EpochShuffleSampler(range(95), seed=2)
    resumed = IndexBatchSampler(resumed_sampler, batch_size=10)
    resumed.load_state_dict(state)
    resumed_sampler.set_epoch(4)
    assert [b.tolist() for b in resumed] == full[3:]
    assert [b.tolist() for b in resumed] == full  # the skip applies to one pass only


def test_resume_state_from_another_epoch_or_a_finished_pass_skips_nothing() -> None:
    sampler = EpochShuffleSampler(range(30), seed=0)
    batch_sampler = IndexBatchSampler(sampler, batch_size=10)
    batch_sampler.load_state_dict({"epoch": 0, "batches_done": 2, "batch_size": 10})
    sampler.set_epoch(1)
    assert len(list(batch_sampler)) == 3
    batch_sampler.load_state_dict({"epoch": 1, "batches_done": 3, "batch_size": 10})
    assert len(list(batch_sampler)) == 3


def test_resume_with_another_batch_size_is_refused() -> None:
    batch_sampler = IndexBatchSampler(EpochShuffleSampler(range(30)), batch_size=10)
    with pytest.raises(ValueError, match="batch_size=5"):
        batch_sampler.load_state_dict({"epoch": 0, "batches_done": 2, "batch_size": 5})


def _torchdata_loader(X: torch.Tensor, y: torch.Tensor, batch_size: int) -> DataLoader:
    stateful = pytest.importorskip("torchdata.stateful_dataloader")
    # A batch sampler without a state of its own, as ours would be: torchdata then counts the batches it yielded.
    batches = BatchSampler(SequentialSampler(range(len(X))), batch_size, drop_last=False)
    return stateful.StatefulDataLoader(TensorBatchDataset(X, y), batch_sampler=batches, collate_fn=keep_batch)


def _our_loader(X: torch.Tensor, y: torch.Tensor, batch_size: int) -> DataLoader:
    return tensor_loader(X, y, batch_size=batch_size, shuffle=False)


@pytest.mark.parametrize(
    "loader",
    [
        pytest.param(_our_loader, id="linreg"),
        pytest.param(
            _torchdata_loader,
            id="torchdata",
            # Why ResumableDataLoader is kept: resumed with batches of 5, torchdata's loader starts at row 15, not 30.
            marks=pytest.mark.xfail(strict=True, reason="torchdata's state counts batches, not rows"),
        ),
    ],
)
def test_a_mid_epoch_state_is_refused_by_a_loader_of_another_batch_size(loader) -> None:
    X, y = _data(60)
    written = loader(X, y, 10)
    batches = iter(written)
    for _ in range(3):  # 30 rows trained
        next(batches)
    state = written.state_dict()
    resumed = loader(X, y, 5)

    def resume() -> None:
        resumed.load_state_dict(state)
        next(iter(resumed))  # torchdata applies a loaded state when the next pass starts

    with pytest.raises(ValueError, match="batch_size=10"):
        resume()
