"""Torch dataset over cached volumes: one dict per image, read from a memory-mapped cache entry."""

from __future__ import annotations

from pathlib import Path

import numpy as np
import pandas as pd
import torch
from torch.utils.data import Dataset

from adni_lightning.data.tabular import TabularEncoder


class VolumeDataset(Dataset):
    """Items ``{"image", "tabular", "label", "image_id", "subject", "group"}`` for the rows of a manifest.

    ``image`` is the cached array with a channel axis, still compact (uint8 label index or float16): it is
    expanded to channels on the device, where it is 10–40x cheaper to move and to transform. Items hold numpy
    arrays; :func:`collate_volumes` makes the batch tensors.
    """

    def __init__(self, rows: pd.DataFrame, entries: dict[str, Path], encoder: TabularEncoder) -> None:
        self.rows = rows.reset_index(drop=True)
        self.entries = [entries[i] for i in self.rows["image_id"]]
        self.encoder = encoder

    def __len__(self) -> int:
        return len(self.rows)

    def __getitem__(self, index: int) -> dict[str, object]:
        row = self.rows.iloc[index]
        volume = np.load(self.entries[index], mmap_mode="r")
        return {
            "image": np.array(volume)[None],
            "tabular": self.encoder.encode(float(row["age"]), str(row["sex"])),
            "label": int(row["target"]),
            "image_id": str(row["image_id"]),
            "subject": str(row["subject"]),
            "group": str(row["label"]),
        }


def collate_volumes(items: list[dict[str, object]]) -> dict[str, object]:
    """Stack items into a batch with numpy, then wrap as tensors.

    ``default_collate`` stacks with ``torch.stack``, whose intra-op thread pool costs more than the copy itself
    for small uint8 volumes on a machine with few cores.
    """
    batch: dict[str, object] = {
        "image": torch.from_numpy(np.stack([item["image"] for item in items])),
        "tabular": torch.from_numpy(np.stack([item["tabular"] for item in items])),
        "label": torch.tensor([item["label"] for item in items], dtype=torch.long),
    }
    for key in ("image_id", "subject", "group"):
        batch[key] = [item[key] for item in items]
    return batch
