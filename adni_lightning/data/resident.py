"""The device-resident cohort: every cached volume in one tensor on the training device, batches gathered there.

Why: on an accelerator the DataLoader's worker processes, not the model, would set the pace (handing a batch
between processes costs more than reading it: ``benchmarks/README.md``). Our cohorts are small (645 label maps
at 128³ as uint8 make 1.3 GB), so the whole cache fits on a training GPU; a batch is then one ``index_select``
on the device, with no worker processes and no copy of volumes from the host.

The path keeps the DataLoader API: the DataModule builds the same ``DataLoader`` (same sampler, batch size, and
under DDP the distributed sampler Lightning injects) over a :class:`ResidentDataset`, whose ``__getitems__``
returns the whole batch. So the batches, and with them a resumed run, are bit-identical to the loader path's.

Where the cohort lives: on a CUDA device when it takes at most :data:`DEVICE_SHARE` of the device's free memory
(the rest is the model's), else in host memory, gathered there and copied per batch as the loader path does
(not pinned as a whole: a gathered batch is a new tensor, which the DataLoader pins). On the CPU the host is the
device. Under DDP every rank holds the whole cohort: the training shard changes each epoch.
"""

from __future__ import annotations

import logging
from collections.abc import Sequence
from pathlib import Path
from typing import Any

import numpy as np
import torch
from torch.utils.data import Dataset

from adni_lightning.data.batch import TEXT_KEYS, Batch
from adni_lightning.data.dataset import VolumeDataset

log = logging.getLogger(__name__)

#: Largest share of a CUDA device's free memory the cohort may take; a larger cohort stays in host memory.
DEVICE_SHARE = 0.25


def resident_device(nbytes: int, device: torch.device) -> torch.device:
    """Where a cohort of ``nbytes`` is held for training on ``device`` (the rule of the module docstring)."""
    if device.type != "cuda":
        return device
    free, _ = torch.cuda.mem_get_info(device)
    return device if nbytes <= DEVICE_SHARE * free else torch.device("cpu")


class ResidentCohort:
    """Cache entries stacked into one ``(N, C, D, H, W)`` tensor (C = 1: uint8 label index or float16 intensity; C
    channels of uint8 occupancy fractions).

    Args:
        entries: the cache entries (``.npy``), in row order; a repeated entry gets a row of its own but is looked
            up at its first row.
        device: the training device; the tensor lives there or in host memory (:func:`resident_device`).
    """

    def __init__(self, entries: Sequence[Path], device: torch.device) -> None:
        if not entries:
            raise ValueError("a resident cohort needs at least one cache entry")
        first = np.load(entries[0], mmap_mode="r")
        self.requested = torch.device(device)
        placed = resident_device(len(entries) * first.nbytes, self.requested)
        dtype = torch.from_numpy(np.empty(0, first.dtype)).dtype
        shape = (-1, *first.shape[-3:])  # a channel axis, if not cached with one
        self.volumes = torch.empty((len(entries), *first.reshape(shape).shape), dtype=dtype, device=placed)
        self.position: dict[Path, int] = {}
        for row, entry in enumerate(entries):
            array = np.load(entry)
            if array.shape != first.shape or array.dtype != first.dtype:
                raise ValueError(
                    f"{entry}: {array.dtype} {array.shape} differs from {entries[0]}'s {first.dtype} {first.shape}"
                )
            self.volumes[row].copy_(torch.from_numpy(array.reshape(shape)))
            self.position.setdefault(Path(entry), row)
        where = "" if placed == self.requested else f" (host memory: over {DEVICE_SHARE:.0%} of the free memory)"
        log.info("device cache: %d volumes, %.2f GB on %s%s", len(entries), self.nbytes / 1e9, placed, where)

    @property
    def nbytes(self) -> int:
        return self.volumes.numel() * self.volumes.element_size()

    @property
    def on_host(self) -> bool:
        return self.volumes.device.type == "cpu"

    def holds(self, entries: Sequence[Path], device: torch.device) -> bool:
        """True when it was made for ``device`` and has every entry (so a later stage can reuse it)."""
        return self.requested == torch.device(device) and all(Path(e) in self.position for e in entries)


class ResidentDataset(Dataset):
    """One side's images as rows of a :class:`ResidentCohort`; the DataLoader gets each batch whole.

    The DataLoader calls :meth:`__getitems__` with a batch's indices (from the same sampler as the loader path)
    and hands the result to :func:`already_collated`. Covariates are encoded when read, as
    :class:`~adni_lightning.data.dataset.VolumeDataset` does, with the same arithmetic.
    """

    def __init__(self, images: VolumeDataset, cohort: ResidentCohort) -> None:
        self.images = images
        self.cohort = cohort
        device = cohort.volumes.device
        self.rows = torch.tensor([cohort.position[Path(e)] for e in images.entries], dtype=torch.long, device=device)
        self.targets = torch.tensor(images.targets, device=device)  # int64 classes or float32 scores: their dtype

    def __len__(self) -> int:
        return len(self.images)

    def __getitem__(self, index: int) -> Batch:
        """A batch of the one image."""
        return self.__getitems__([index])

    def __getitems__(self, indices: list[int]) -> Batch:
        index = torch.tensor(indices, dtype=torch.long, device=self.rows.device)
        batch: Batch = {
            "volume": self.cohort.volumes.index_select(0, self.rows[index]),
            "tabular": torch.from_numpy(self.images.tabular(indices)).to(self.rows.device),
            "label": self.targets[index],
        }
        for key in TEXT_KEYS:
            batch[key] = [self.images.text[key][i] for i in indices]
        return batch


def already_collated(batch: Any) -> Batch:
    """The ``collate_fn`` over a :class:`ResidentDataset`, whose batches come out whole."""
    return batch
