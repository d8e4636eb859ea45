"""On-device training augmentations of the compact volume, and the network-input step after them.

Augmentations are small classes listed in the config (``data.augment``); the DataModule applies the list in
``on_after_batch_transfer`` and then :func:`to_channels`, which is not an augmentation but the step that
turns a label index into the network's input. Every augmentation works on the compact ``(B, C, D, H, W)``
volume (C = 1: uint8 label index or float16 intensity; one uint8 occupancy fraction per structure channel with
``data.preprocessing.label_encoding occupancy``) and draws only from the context's generator, which the DataModule
seeds from (seed, step) so that a resumed run augments exactly as the uninterrupted one. Fractions are resampled
as intensities are (trilinearly) and a flip permutes their channels as it relabels a label index.
"""

from __future__ import annotations

import math
from abc import ABC, abstractmethod
from collections.abc import Mapping, Sequence
from dataclasses import dataclass

import torch
import torch.nn.functional as F

from adni_lightning.data.labels import LEFT_RIGHT_PAIRS
from adni_lightning.data.preprocess import FULL
from adni_lightning.errors import OptionError
from adni_lightning.vocabulary import LabelId


@dataclass
class AugmentContext:
    """What an augmentation needs to know about the batch beyond its voxels.

    ``labelmap``: the volume is a compact label index (resampled by nearest neighbour); ``swap`` maps a compact
    label index to that of its mirror structure, given for label indices only. ``channel_swap``: for occupancy
    fractions, the channel that holds each channel's mirror structure (:func:`channel_mirror`).
    """

    generator: torch.Generator
    labelmap: bool
    swap: torch.Tensor | None = None
    channel_swap: torch.Tensor | None = None


class Augmentation(ABC):
    """A random transform of a batch of compact volumes; subclasses are listed in ``data.augment``."""

    @abstractmethod
    def __call__(self, volume: torch.Tensor, context: AugmentContext) -> torch.Tensor:
        """``(B, 1, D, H, W)`` → same shape and dtype."""


class HemisphereFlip(Augmentation):
    """Mirror each volume across the left–right axis with ``probability``, swapping left and right labels.

    The volumes are in RAS order, so axis 0 of a volume is left–right. A mirrored left hippocampus must become
    a right hippocampus, or the flip teaches the network anatomy that does not exist (TorchIO #409). Occupancy
    fractions swap the channels of mirror structures instead (none with the bilateral default channels).
    """

    def __init__(self, probability: float = 0.5) -> None:
        self.probability = probability

    def __call__(self, volume: torch.Tensor, context: AugmentContext) -> torch.Tensor:
        if context.labelmap and context.swap is None:
            raise ValueError("HemisphereFlip of a label map needs the left/right swap table")
        return random_hemisphere_flip(volume, self.probability, context.swap, context.generator, context.channel_swap)


class RandomShift(Augmentation):
    """Translate each volume by up to ``max_voxels`` per axis, filling with background."""

    def __init__(self, max_voxels: int = 2) -> None:
        self.max_voxels = max_voxels

    def __call__(self, volume: torch.Tensor, context: AugmentContext) -> torch.Tensor:
        return random_shift(volume, self.max_voxels, context.generator)


class RandomAffine(Augmentation):
    """Rotate (up to ``degrees`` about each axis) and scale (by up to ``±scale``) each volume about its centre.

    Label maps are resampled by nearest neighbour, so the output holds only ids of the input; intensities and
    occupancy fractions trilinearly. Applied to each volume with ``probability``; the others pass unchanged.
    """

    def __init__(self, degrees: float = 10.0, scale: float = 0.1, probability: float = 1.0) -> None:
        self.degrees = degrees
        self.scale = scale
        self.probability = probability

    def __call__(self, volume: torch.Tensor, context: AugmentContext) -> torch.Tensor:
        return random_affine(volume, self.degrees, self.scale, self.probability, context.labelmap, context.generator)


def to_channels(index: torch.Tensor, table: torch.Tensor) -> torch.Tensor:
    """``(B, 1, D, H, W)`` compact label index → ``(B, C, D, H, W)`` float one-hot structure channels.

    Each volume is gathered from the channel-major table straight into its slot of the output: on a CPU about
    twice as fast as gathering voxel-major rows and permuting them, for the same values.
    """
    batch, channels = index.shape[0], table.shape[1]
    flat = index.reshape(batch, -1).int()
    by_channel = table.t().contiguous()
    out = torch.empty((batch, channels, flat.shape[1]), dtype=table.dtype, device=index.device)
    for volume, slot in zip(flat, out):
        torch.index_select(by_channel, 1, volume, out=slot)
    return out.view(batch, channels, *index.shape[2:])


def channel_mirror(channels: Mapping[str, Sequence[LabelId]]) -> torch.Tensor:
    """Channel index → the channel whose ids are the mirror of its own (left ↔ right by
    :data:`~adni_lightning.data.labels.LEFT_RIGHT_PAIRS`; itself for bilateral or midline channels).

    Raises :class:`~adni_lightning.errors.OptionError` naming a channel whose mirror no channel holds: its fractions
    would have nowhere to go after a flip.
    """
    mirror = {**dict(LEFT_RIGHT_PAIRS), **{right: left for left, right in LEFT_RIGHT_PAIRS}}
    id_sets = [frozenset(ids) for ids in channels.values()]
    order = []
    for name, ids in zip(channels, id_sets):
        mirrored = frozenset(mirror.get(i, i) for i in ids)
        if mirrored not in id_sets:
            raise OptionError(
                f"HemisphereFlip of data.preprocessing.label_encoding occupancy: channel {name!r} has no mirror "
                f"channel (ids {sorted(mirrored)}): add it to data.preprocessing.channels, merge left and right, "
                "or leave HemisphereFlip out of data.augment"
            )
        order.append(id_sets.index(mirrored))
    return torch.tensor(order, dtype=torch.long)


def dominant_labels(fractions: torch.Tensor, labels: torch.Tensor) -> torch.Tensor:
    """``(B, C, D, H, W)`` uint8 occupancy fractions → ``(B, 1, D, H, W)`` compact labels: in each voxel
    ``labels[c + 1]`` of the channel that fills most of it, or ``labels[0]`` (background) where what no channel fills
    is larger.

    A picture of the fractions in FreeSurfer colours (TensorBoard, interpret's reference maps); not a network input.
    """
    rest = (FULL - fractions.sum(dim=1, keepdim=True, dtype=torch.int16)).clamp(min=0).to(fractions.dtype)
    return labels.to(fractions.device)[torch.cat([rest, fractions], dim=1).argmax(dim=1, keepdim=True)]


def random_hemisphere_flip(
    image: torch.Tensor,
    probability: float,
    swap: torch.Tensor | None = None,
    generator: torch.Generator | None = None,
    channel_swap: torch.Tensor | None = None,
) -> torch.Tensor:
    """Mirror a random subset of the batch across axis 2 of ``(B, C, D, H, W)``; ``swap`` relabels label maps,
    ``channel_swap`` permutes the channels of occupancy fractions.
    """
    chosen = torch.rand(image.shape[0], device=image.device, generator=generator) < probability
    if not chosen.any():
        return image
    flipped = image[chosen].flip(2)
    if swap is not None:
        flipped = swap.to(image.device)[flipped.long()].to(image.dtype)
    if channel_swap is not None:
        flipped = flipped[:, channel_swap.to(image.device)]
    out = image.clone()
    out[chosen] = flipped
    return out


def random_shift(image: torch.Tensor, max_shift: int, generator: torch.Generator | None = None) -> torch.Tensor:
    """Translate each volume of ``(B, C, D, H, W)`` by up to ``max_shift`` voxels per axis, filling with 0.

    0 is background both as a compact label index and as a normalised intensity, so nothing new is invented.
    """
    if max_shift <= 0:
        return image
    depth, height, width = image.shape[2:]
    padded = F.pad(image, [max_shift] * 6)
    offsets = torch.randint(0, 2 * max_shift + 1, (image.shape[0], 3), generator=generator, device=image.device)
    return torch.stack(
        [padded[b, :, d : d + depth, h : h + height, w : w + width] for b, (d, h, w) in enumerate(offsets.tolist())]
    )


def _rotation(angles: torch.Tensor) -> torch.Tensor:
    """``(B, 3)`` angles in radians → ``(B, 3, 3)`` rotations about the three axes, composed."""
    cos, sin = angles.cos(), angles.sin()
    one, zero = torch.ones_like(cos[:, 0]), torch.zeros_like(cos[:, 0])

    def matrix(rows: list[list[torch.Tensor]]) -> torch.Tensor:
        return torch.stack([torch.stack(row, dim=-1) for row in rows], dim=-2)

    rx = matrix([[one, zero, zero], [zero, cos[:, 0], -sin[:, 0]], [zero, sin[:, 0], cos[:, 0]]])
    ry = matrix([[cos[:, 1], zero, sin[:, 1]], [zero, one, zero], [-sin[:, 1], zero, cos[:, 1]]])
    rz = matrix([[cos[:, 2], -sin[:, 2], zero], [sin[:, 2], cos[:, 2], zero], [zero, zero, one]])
    return rz @ ry @ rx


def random_affine(
    image: torch.Tensor,
    degrees: float,
    scale: float,
    probability: float,
    labelmap: bool,
    generator: torch.Generator | None = None,
) -> torch.Tensor:
    """Random rotation (uniform in ±``degrees`` about each axis) and isotropic scaling (±``scale``) of each volume
    of ``(B, C, D, H, W)``, applied with ``probability``; see :func:`affine_resample`.
    """
    batch, device = image.shape[0], image.device
    draws = torch.rand(batch, 5, generator=generator, device=device, dtype=torch.float64)
    chosen = draws[:, 4] < probability
    if not chosen.any():
        return image
    angles = torch.where(chosen[:, None], (draws[:, :3] * 2 - 1) * math.radians(degrees), 0.0)
    factors = torch.where(chosen, 1 + (draws[:, 3] * 2 - 1) * scale, 1.0)
    return affine_resample(image, angles, factors, labelmap)


def affine_resample(image: torch.Tensor, angles: torch.Tensor, factors: torch.Tensor, labelmap: bool) -> torch.Tensor:
    """Rotate each volume of ``(B, C, D, H, W)`` by ``angles`` (``(B, 3)`` radians about the W, H and D axes, in
    that order) and zoom it by ``factors`` (``(B,)``) about its centre; outside the volume is background (0).

    The transform is built in voxel units and expressed in ``affine_grid``'s normalised coordinates, so a
    non-cubic volume rotates without shearing. Label maps are resampled by nearest neighbour (only input ids
    come out), intensities and occupancy fractions trilinearly; an integer volume (labels, uint8 fractions) is
    rounded back, not truncated.
    """
    batch, device = image.shape[0], image.device
    # Output voxel x reads input voxel R x / s, in grid order (W, H, D); normalised by each axis' half-size.
    half = torch.tensor(image.shape[:1:-1], dtype=torch.float64, device=device) / 2
    linear = _rotation(angles.to(device, torch.float64)) / factors.to(device, torch.float64)[:, None, None]
    linear = linear / half[None, :, None] * half[None, None, :]
    theta = torch.cat([linear, torch.zeros(batch, 3, 1, dtype=torch.float64, device=device)], dim=2)
    grid = F.affine_grid(theta.float(), list(image.shape), align_corners=False)
    out = F.grid_sample(
        image.float(), grid, mode="nearest" if labelmap else "bilinear", padding_mode="zeros", align_corners=False
    )
    return (out if image.is_floating_point() else out.round()).to(image.dtype)
