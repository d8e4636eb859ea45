"""Structure occlusion: how much each FreeSurfer structure of a label map moves the predicted probabilities.

A structure is *removed* by setting its voxels to background (compact index 0) in the compact label volume,
before :func:`~adni_lightning.data.augment.to_channels`: it then disappears from every one-hot channel, exactly
as if the segmentation had never labelled it. Left and right are separate structures (each FreeSurfer id is
one). ``delta_p = p(class | structure removed) − p(class | image)``: positive when removing the structure raises
that class's probability. Removal is not a small perturbation (a missing hippocampus is extreme atrophy, not a
healthy one), so the sign says which way the model reacts to the structure's absence, and the magnitude how
much it relies on it.

Only structures that some channel encodes are occluded: the others are invisible to the network (their
delta is exactly 0). The unoccluded image is evaluated in every chunk's batch, so an unchanged input gives a
delta of exactly 0 whatever the backend's batch-size-dependent arithmetic.

Occupancy inputs (``data.preprocessing.label_encoding occupancy``) cache channel fractions, not ids: there a
*channel* is removed (:func:`occlude_channels`: its fractions set to 0 in the network input), which is what
removing all of its ids from a label index does to a one-hot input, at the channel's granularity (a default
channel merges left and right).

The occluded copies of one image are built on the compact volume and run through the model in chunks, in
eval mode without gradients. Captum's ``FeatureAblation`` with a structure mask computes the same numbers (to
3e-8) but was never faster on the same inputs (``python benchmarks/interpret.py``; default model,
48³, 2 shared CPU cores: 1.25 against 1.29 s per image with one torch thread, 2.1 against 2.3 s and, under
heavier load, 4.8 against 14.5 s with two; 32³: 0.32 against 0.35 s), so this direct version is kept; it needs
no optional dependency.
"""

from __future__ import annotations

from collections.abc import Callable

import torch

#: Compact ``(B, 1, D, H, W)`` volumes (or network inputs) → ``(B, K)`` class probabilities (network input, model
#: and covariates).
Predictor = Callable[[torch.Tensor], torch.Tensor]
#: One volume and the ``k`` things to remove → ``(k, *volume.shape)`` copies, copy ``i`` without thing ``i``.
Occluder = Callable[[torch.Tensor, torch.Tensor], torch.Tensor]


def visible_labels(table: torch.Tensor) -> torch.Tensor:
    """Compact indices that some channel of ``table`` (``(num_compact, C)``, from ``channel_lookup``) encodes."""
    return torch.nonzero(table.abs().sum(dim=1) > 0).flatten()


def present_structures(volume: torch.Tensor, table: torch.Tensor) -> torch.Tensor:
    """Compact indices of the visible structures that occur in a compact volume (any shape), sorted."""
    present = torch.unique(volume).long()
    return present[torch.isin(present, visible_labels(table).to(present.device))]


def occlude(volume: torch.Tensor, labels: torch.Tensor) -> torch.Tensor:
    """Compact ``(1, D, H, W)`` volume → ``(k, 1, D, H, W)``: copy ``i`` with ``labels[i]``'s voxels set to 0."""
    labels = labels.to(device=volume.device, dtype=volume.dtype).view(-1, 1, 1, 1, 1)
    return torch.where(volume[None] == labels, torch.zeros((), dtype=volume.dtype, device=volume.device), volume[None])


def occlude_channels(image: torch.Tensor, channels: torch.Tensor) -> torch.Tensor:
    """``(C, D, H, W)`` network input → ``(k, C, D, H, W)``: copy ``i`` with channel ``channels[i]`` set to 0."""
    keep = torch.ones(len(channels), image.shape[0], 1, 1, 1, dtype=image.dtype, device=image.device)
    keep[torch.arange(len(channels)), channels.to(image.device)] = 0
    return image[None] * keep


@torch.no_grad()
def structure_occlusion(
    predict: Predictor, volume: torch.Tensor, labels: torch.Tensor, chunk: int = 16, occluder: Occluder = occlude
) -> torch.Tensor:
    """``delta_p`` of each structure: ``(len(labels), K)`` for a compact ``(1, D, H, W)`` volume (or, with
    ``occluder`` :func:`occlude_channels`, of each channel of a ``(C, D, H, W)`` network input).

    Each forward pass holds the intact image and up to ``chunk - 1`` occluded copies.
    """
    if chunk < 2:
        raise ValueError(f"chunk must be at least 2 (the intact image and one occluded copy), got {chunk}")
    deltas = []
    for start in range(0, len(labels), chunk - 1):
        batch = torch.cat([volume[None], occluder(volume, labels[start : start + chunk - 1])])
        probabilities = predict(batch)
        deltas.append(probabilities[1:] - probabilities[:1])
    if not deltas:  # nothing to occlude: no rows, as many columns as classes
        return torch.zeros(0, predict(volume[None]).shape[1])
    return torch.cat(deltas)
