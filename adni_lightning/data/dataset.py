"""Torch dataset over cached volumes: one item per image, read from a memory-mapped cache entry."""

from __future__ import annotations

import os
from dataclasses import dataclass
from pathlib import Path

import numpy as np
import pandas as pd
import torch
from torch.utils.data import Dataset

from adni_lightning.data.batch import TEXT_KEYS, Batch, Item, TextKey
from adni_lightning.data.tabular import TabularEncoder
from adni_lightning.errors import OptionError


def available_cores() -> int:
    """The cores this process may run on (its CPU affinity, as torch counts them), at least 1."""
    if hasattr(os, "sched_getaffinity"):
        return max(1, len(os.sched_getaffinity(0)))
    return os.cpu_count() or 1


@dataclass(frozen=True)
class LoaderSpec:
    """How batches are drawn (the ``data.loader`` config group).

    Args:
        batch_size: images per batch (per device under DDP).
        num_workers: loader worker processes, also used to build the cache; 0 reads in the training process. At most
            the cores available are used (an info line says so).
        device_cache: hold the whole cache as one tensor on the training device and gather batches there,
            without worker processes (``num_workers`` then only builds the cache); the same batches as the
            loader path, bit for bit (:mod:`adni_lightning.data.resident`).
    """

    batch_size: int = 8
    num_workers: int = 2
    device_cache: bool = False

    def __post_init__(self) -> None:
        if self.batch_size < 1:
            raise OptionError(f"data.loader.batch_size must be at least 1, got {self.batch_size}")
        if self.num_workers < 0:
            raise OptionError(f"data.loader.num_workers must be 0 or more, got {self.num_workers}")


class VolumeDataset(Dataset):
    """Items with the :class:`~adni_lightning.data.batch.Batch` keys (one image each) for rows of a manifest.

    ``volume`` is the cached array with a channel axis, still compact (uint8 label index, uint8 occupancy fractions
    per channel, or float16): it is expanded to the network input on the device, where it is 10–40x cheaper to move
    and to transform. Items hold numpy arrays; :func:`collate_volumes` makes the batch tensors. ``rows`` may carry a
    ``split`` column.

    With ``score`` (a score task) ``label`` is the float32 score and ``group`` the image CSV's Group (the class a
    score task's manifest has none of); otherwise the int64 class index and its class name.
    """

    def __init__(
        self, rows: pd.DataFrame, entries: dict[str, Path], encoder: TabularEncoder, score: bool = False
    ) -> None:
        self.rows = rows.reset_index(drop=True)
        self.entries = [entries[i] for i in self.rows["image_id"]]
        self.encoder = encoder
        # The columns an item needs, as arrays once: a pandas row lookup per item costs more than the read.
        self.targets = self.rows["target"].to_numpy(dtype=np.float32 if score else np.int64)
        self._ages = self.rows["age"].to_numpy(dtype=np.float64)
        self._sexes = self.rows["sex"].astype(str).to_numpy()
        self._volumes = self.rows[list(encoder.volumes)].to_numpy(dtype=np.float64)
        sides = self.rows["split"] if "split" in self.rows else pd.Series("-", index=self.rows.index)
        group = self.rows["group" if score else "label"]
        columns = {"image_id": self.rows["image_id"], "subject": self.rows["subject"], "group": group}
        columns["split"] = sides
        self.text: dict[TextKey, list[str]] = {key: columns[key].astype(str).tolist() for key in TEXT_KEYS}

    def __len__(self) -> int:
        return len(self.rows)

    def tabular(self, indices: list[int]) -> np.ndarray:
        """``(len(indices), F)`` covariates, encoded when read: ``predict`` restores the encoder's statistics
        from the checkpoint after the datasets are made.
        """
        return self.encoder.encode_batch(self._ages[indices], self._sexes[indices], self._volumes[indices])

    def __getitem__(self, index: int) -> Item:
        volume = np.load(self.entries[index], mmap_mode="r")
        text = self.text
        return {
            # A channel axis, unless the entry has one (occupancy fractions).
            "volume": np.array(volume).reshape(-1, *volume.shape[-3:]),
            "tabular": self.tabular([index])[0],
            "label": self.targets[index].item(),
            "image_id": text["image_id"][index],
            "subject": text["subject"][index],
            "group": text["group"][index],
            "split": text["split"][index],
        }


def _labels(labels: list[int] | list[float]) -> torch.Tensor:
    """int64 class indices, or float32 scores (a score task's items hold floats)."""
    return torch.tensor(labels, dtype=torch.float32 if isinstance(labels[0], float) else torch.long)


def collate_volumes(items: list[Item]) -> Batch:
    """Stack items into a batch with numpy, then wrap as tensors.

    ``default_collate`` stacks with ``torch.stack``, whose intra-op thread pool costs more than the copy itself
    for small uint8 volumes on a machine with few cores.
    """
    batch: Batch = {
        "volume": torch.from_numpy(np.stack([item["volume"] for item in items])),
        "tabular": torch.from_numpy(np.stack([item["tabular"] for item in items])),
        "label": _labels([item["label"] for item in items]),
    }
    for key in TEXT_KEYS:
        batch[key] = [item[key] for item in items]
    return batch
