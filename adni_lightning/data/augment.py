"""Batch transforms run on the device after transfer: label index → channels, and hemisphere flips."""

from __future__ import annotations

import torch


def to_channels(index: torch.Tensor, table: torch.Tensor) -> torch.Tensor:
    """``(B, 1, D, H, W)`` compact label index → ``(B, C, D, H, W)`` float one-hot structure channels."""
    channels = table[index[:, 0].long()]
    return channels.permute(0, 4, 1, 2, 3).contiguous()


def random_hemisphere_flip(
    image: torch.Tensor, probability: float, swap: torch.Tensor | None = None, generator: torch.Generator | None = None
) -> torch.Tensor:
    """Mirror a random subset of the batch across the left–right axis (axis 2 of ``(B, C, D, H, W)``).

    The volumes are in RAS order, so axis 0 of a volume is left–right. For label maps pass ``swap`` (compact
    index → index of the mirror structure): a mirrored left hippocampus must become a right hippocampus.
    """
    chosen = torch.rand(image.shape[0], device=image.device, generator=generator) < probability
    if not chosen.any():
        return image
    flipped = image[chosen].flip(2)
    if swap is not None:
        flipped = swap[flipped.long()].to(image.dtype)
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
    padded = torch.nn.functional.pad(image, [max_shift] * 6)
    offsets = torch.randint(0, 2 * max_shift + 1, (image.shape[0], 3), generator=generator, device=image.device)
    return torch.stack([
        padded[b, :, d:d + depth, h:h + height, w:w + width] for b, (d, h, w) in enumerate(offsets.tolist())
    ])
