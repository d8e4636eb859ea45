"""Training order that depends only on (seed, epoch), not on the global random state."""

from __future__ import annotations

from collections.abc import Iterator

import torch
from torch.utils.data import Sampler

from adni_lightning.seeding import derived_seed


class EpochShuffleSampler(Sampler[int]):
    """A fresh permutation each epoch, drawn from its own generator seeded with ``(seed, epoch)``.

    ``RandomSampler`` draws from the global generator, whose state at an epoch's start differs between a run
    and the same run resumed from a checkpoint (the loader iterators are created at different moments).
    Lightning calls :meth:`set_epoch` before every training epoch.
    """

    def __init__(self, length: int, seed: int, epoch: int = 0) -> None:
        self.length = length
        self.seed = seed
        self.epoch = epoch

    def set_epoch(self, epoch: int) -> None:
        self.epoch = epoch

    def __len__(self) -> int:
        return self.length

    def __iter__(self) -> Iterator[int]:
        generator = torch.Generator().manual_seed(derived_seed(self.seed, self.epoch))
        return iter(torch.randperm(self.length, generator=generator).tolist())
