"""The resumable training loader: order seeded per epoch, augmentations per sample, position saved."""
from __future__ import annotations

import torch
from torch.utils.data import TensorDataset

from mmsam.data.sampling import ResumableDataLoader, ResumableSampler, SeededDataset


class Noisy(TensorDataset):
    """Item i plus a random "augmentation" drawn from the global torch RNG."""

    def __getitem__(self, i):
        return super().__getitem__(i)[0] + torch.rand(())


DS = Noisy(torch.arange(10.0))


def _loader(**kw) -> ResumableDataLoader:
    return ResumableDataLoader(SeededDataset(DS), batch_size=3, drop_last=True, sampler=ResumableSampler(DS, seed=7), **kw)


def test_resumable_loader_state_round_trip() -> None:
    a = _loader()
    a.sampler.set_epoch(2)
    full = list(a)
    assert len(full) == 3 and a.state_dict() == {"seed": 7, "epoch": 3, "batch": 0}
    b = _loader()
    b.sampler.set_epoch(2)
    it = iter(b)
    first = next(it)
    state = b.state_dict()
    assert state == {"seed": 7, "epoch": 2, "batch": 1} and torch.equal(first, full[0])
    c = _loader()
    c.load_state_dict(state)
    c.sampler.set_epoch(2)  # Lightning's call before the epoch: ignored while the position is pending
    rest = list(c)
    assert len(rest) == 2 and all(torch.equal(x, y) for x, y in zip(rest, full[1:]))  # same order, same draws
    rng = torch.get_rng_state()
    list(_loader())
    assert torch.equal(rng, torch.get_rng_state())  # loading never moves the caller's RNG


def test_batches_do_not_depend_on_workers_or_earlier_draws() -> None:
    a = _loader()
    a.sampler.set_epoch(1)
    torch.manual_seed(123)
    plain = list(a)
    b = _loader(num_workers=2)
    b.sampler.set_epoch(1)
    torch.manual_seed(456)
    workers = list(b)
    assert all(torch.equal(x, y) for x, y in zip(plain, workers)) and len(plain) == 3
    c = _loader()
    c.sampler.set_epoch(2)
    assert not torch.equal(torch.cat(list(c)), torch.cat(plain))  # another epoch: another order and draws


def test_with_replacement_draws_num_samples() -> None:
    s = ResumableSampler(DS, seed=1, replacement=True, num_samples=25)
    assert len(s) == 25 and s.replacement and len(list(s)) == 25
    assert s.order(0) == ResumableSampler(DS, seed=1, replacement=True, num_samples=25).order(0)


class ThreadProbe(TensorDataset):
    """Records the intra-op thread count each item is made with."""

    seen: list[int] = []

    def __getitem__(self, i):
        ThreadProbe.seen.append(torch.get_num_threads())
        return super().__getitem__(i)[0]


def test_items_are_made_on_one_thread_as_in_a_worker() -> None:
    """CPU resampling rounds differently with the thread count: items are made on one thread in
    the training process too, so num_workers 0 and > 0 give the same bits."""
    ds = ThreadProbe(torch.arange(4.0))
    before = torch.get_num_threads()
    torch.set_num_threads(2)
    try:
        ThreadProbe.seen.clear()
        SeededDataset(ds)[(1, 5)]
        assert ThreadProbe.seen == [1] and torch.get_num_threads() == 2  # put back
        SeededDataset(ds)[2]  # a plain index (evaluation) keeps the caller's threads
        assert ThreadProbe.seen == [1, 2]
    finally:
        torch.set_num_threads(before)
