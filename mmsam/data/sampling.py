"""A training loader that resumes exactly: order seeded per epoch, augmentations seeded per
sample, position in the epoch saved in the checkpoint.

* :class:`ResumableSampler` yields ``(index, sample_seed)``: the epoch's order is a function of
  ``(seed, epoch)`` only (a permutation, or ``num_samples`` draws with replacement), each sample's
  seed a function of ``(seed, epoch, position)``.
* :class:`SeededDataset` runs the wrapped dataset's ``__getitem__`` (its random flips and crops)
  under that sample seed for ``random``, NumPy and torch, and on one intra-op thread (as in a
  loader worker process), then puts the caller's RNG states and thread count back: augmentations
  do not depend on worker count, worker seeds or earlier draws (bit for bit: CPU resampling
  kernels round differently with the number of threads), and loading never moves the training
  process's own RNG streams.
* :class:`ResumableDataLoader` counts the batches it has handed out; its ``state_dict`` (saved by
  Lightning's fit loop in every checkpoint) is the next batch to train, and ``load_state_dict``
  makes the next iteration skip the batches already trained.
"""
from __future__ import annotations

import os
import random
from typing import Any, Iterator, Optional, Sized

import numpy as np
import torch
from torch.utils.data import DataLoader, Dataset, Sampler


def _mix(*values: int) -> int:
    """A 63-bit seed from integers (NumPy's SeedSequence: well spread, platform independent)."""
    words = [int(v) & 0xFFFFFFFFFFFFFFFF for v in values]
    return int(np.random.SeedSequence(words).generate_state(1, np.uint64)[0]) >> 1


def default_seed() -> int:
    """``seed_everything``'s seed (``PL_GLOBAL_SEED``) when set, else a fresh random one."""
    env = os.environ.get("PL_GLOBAL_SEED")
    return int(env) if env is not None else int(torch.randint(0, 2**62, ()).item())


class ResumableSampler(Sampler):
    """Shuffled (or with-replacement) sampling reproducible from ``(seed, epoch)``.

    Args:
        data_source: the dataset (only its length is used).
        seed: base seed (default :func:`default_seed`).
        replacement: draw ``num_samples`` items with replacement instead of a permutation.
        num_samples: items per epoch (default: the dataset's length).
    """

    def __init__(self, data_source: Sized, *, seed: Optional[int] = None, replacement: bool = False, num_samples: Optional[int] = None) -> None:
        self.data_source = data_source
        self.seed = default_seed() if seed is None else int(seed)
        self.replacement = replacement
        self._num_samples = num_samples
        self.epoch = 0
        self.start = 0  # items of the epoch to skip (set when resuming mid-epoch)
        self._pinned = False  # a resume position was loaded: ignore set_epoch until it is used

    @property
    def num_samples(self) -> int:
        return len(self.data_source) if self._num_samples is None else self._num_samples

    def __len__(self) -> int:
        return self.num_samples

    def set_epoch(self, epoch: int) -> None:
        """Called by Lightning before each epoch; ignored while a loaded resume position is pending."""
        if not self._pinned:
            self.epoch, self.start = int(epoch), 0

    def resume_at(self, epoch: int, start: int) -> None:
        """Make the next iteration be epoch ``epoch`` from its ``start``-th item."""
        self.epoch, self.start, self._pinned = int(epoch), int(start), True

    def order(self, epoch: int) -> list[int]:
        """The item indices of ``epoch``, in order."""
        g = torch.Generator().manual_seed(_mix(self.seed, epoch))
        n = len(self.data_source)
        if self.replacement:
            return torch.randint(0, n, (self.num_samples,), generator=g).tolist()
        return torch.randperm(n, generator=g).tolist()[: self.num_samples]

    def __iter__(self) -> Iterator[tuple[int, int]]:
        epoch, start = self.epoch, self.start
        self._pinned, self.start = False, 0
        items = self.order(epoch)
        return iter([(idx, _mix(self.seed, epoch, pos)) for pos, idx in enumerate(items)][start:])


class SeededDataset(Dataset):
    """Runs ``dataset[index]`` with ``random`` / NumPy / torch seeded from the sample seed.

    Keys are ``(index, seed)`` pairs (from :class:`ResumableSampler`); a plain index is passed
    through unseeded. The caller's RNG states are restored afterwards.
    """

    def __init__(self, dataset: Dataset) -> None:
        self.dataset = dataset

    def __len__(self) -> int:
        return len(self.dataset)  # type: ignore[arg-type]

    def __getattr__(self, name: str) -> Any:
        if name == "dataset":
            raise AttributeError(name)
        return getattr(self.dataset, name)

    def __getitem__(self, key: Any) -> Any:
        if not isinstance(key, tuple):
            return self.dataset[key]
        index, seed = key
        py, npy, th = random.getstate(), np.random.get_state(), torch.get_rng_state()
        threads = torch.get_num_threads()
        try:
            if threads != 1:
                torch.set_num_threads(1)
            random.seed(seed)
            np.random.seed(seed % 2**32)
            torch.manual_seed(seed)
            return self.dataset[index]
        finally:
            if threads != 1:
                torch.set_num_threads(threads)
            random.setstate(py)
            np.random.set_state(npy)
            torch.set_rng_state(th)


class ResumableDataLoader(DataLoader):
    """A training ``DataLoader`` over :class:`SeededDataset` + :class:`ResumableSampler` whose
    position survives a checkpoint (Lightning saves ``state_dict()`` with its loop state)."""

    def __init__(self, dataset: Dataset, *args: Any, **kwargs: Any) -> None:
        sampler = kwargs.get("sampler")
        if not isinstance(sampler, ResumableSampler):
            raise TypeError(f"ResumableDataLoader needs sampler=ResumableSampler(...), got {type(sampler).__name__}")
        # its own generator: creating an iterator (worker base seed) never draws from the global RNG
        kwargs.setdefault("generator", torch.Generator().manual_seed(sampler.seed))
        super().__init__(dataset, *args, **kwargs)
        self._epoch = self.sampler.epoch
        self._next = 0  # batches handed out in the epoch being iterated

    def __iter__(self) -> Iterator[Any]:  # type: ignore[override]
        sampler: ResumableSampler = self.sampler  # type: ignore[assignment]
        if sampler.start % self.batch_size:  # type: ignore[operator]
            raise ValueError(f"resume position {sampler.start} is not a multiple of the batch size {self.batch_size}")
        self._epoch, self._next = sampler.epoch, sampler.start // self.batch_size  # type: ignore[operator]
        return self._count(super().__iter__())

    def _count(self, it: Iterator[Any]) -> Iterator[Any]:
        for batch in it:
            self._next += 1
            yield batch

    def state_dict(self) -> dict[str, int]:
        """The next batch to train: ``{"seed", "epoch", "batch"}`` (the next epoch once this one is done)."""
        sampler: ResumableSampler = self.sampler  # type: ignore[assignment]
        epoch, batch = self._epoch, self._next
        if batch >= len(self):
            epoch, batch = epoch + 1, 0
        return {"seed": sampler.seed, "epoch": epoch, "batch": batch}

    def load_state_dict(self, state: dict[str, int]) -> None:
        sampler: ResumableSampler = self.sampler  # type: ignore[assignment]
        sampler.seed = int(state["seed"])
        sampler.resume_at(int(state["epoch"]), int(state["batch"]) * self.batch_size)  # type: ignore[operator]
