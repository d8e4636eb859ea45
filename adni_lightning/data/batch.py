"""The batch schema: the keys every stage of the pipeline reads and writes, declared once.

The dataset yields items, :func:`~adni_lightning.data.dataset.collate_volumes` stacks them, the DataModule's
``on_after_batch_transfer`` turns the compact ``volume`` into the network's ``image``, and the module, the
prediction writer and the figures read the result. Each of them names its keys through this module so a
new key (or a renamed one) is a change in one place.
"""

from __future__ import annotations

from typing import Literal, TypedDict

import numpy as np
import torch

#: The per-image string keys (see :class:`Batch`).
TextKey = Literal["image_id", "subject", "group", "split"]


class Item(TypedDict):
    """One image as :class:`~adni_lightning.data.dataset.VolumeDataset` yields it, before collation: the
    :class:`Batch` keys with numpy arrays, an int class index and one string each.
    """

    volume: np.ndarray
    tabular: np.ndarray
    label: int | float
    image_id: str
    subject: str
    group: str
    split: str


class Batch(TypedDict, total=False):
    """One batch, as the model sees it after ``on_after_batch_transfer``.

    ``volume``: ``(B, 1, D, H, W)`` compact volume as cached: uint8 label index for label maps, float16 for
    intensities (augmented, for training batches). Present from the loader on. Occupancy fractions are cached as
    ``(B, C, D, H, W)`` uint8; after ``on_after_batch_transfer`` ``volume`` holds each voxel's dominant structure
    as a label index instead, to be drawn (the fractions are in ``image``).
    ``image``: ``(B, C, D, H, W)`` float32 network input made from ``volume`` on the device (one-hot
    structure channels for label maps). Added by ``on_after_batch_transfer``.
    ``tabular``: ``(B, F)`` float32 covariates (standardised age, sex one-hot).
    ``label``: ``(B,)`` int64 class index; for a score task (a regression) the float32 score, in its units.
    ``image_id``, ``subject``, ``group``, ``split``: per-image strings (group: the class name, for a score task the
    image CSV's Group; split: train, val, test or ``-`` when predicting a cohort without a split).
    """

    volume: torch.Tensor
    image: torch.Tensor
    tabular: torch.Tensor
    label: torch.Tensor
    image_id: list[str]
    subject: list[str]
    group: list[str]
    split: list[str]


#: Keys that hold one string per image, carried through unchanged.
TEXT_KEYS: tuple[TextKey, ...] = ("image_id", "subject", "group", "split")
