"""Structure occlusion and Integrated Gradients on hand-made label maps: exact where they must be, mirrored."""

from __future__ import annotations

from functools import partial

import pytest
import torch
from torch import nn

from adni_lightning.data.augment import random_hemisphere_flip, to_channels
from adni_lightning.data.labels import channel_lookup, compact_lookup, hemisphere_swap
from adni_lightning.interpret.occlusion import occlude, present_structures, structure_occlusion, visible_labels
from adni_lightning.models import ResNet3d
from adni_lightning.module import ADNIClassifier

C = compact_lookup()
#: Left and right kept apart, so mirroring an image is a flip plus a channel swap.
CHANNELS = {
    "wm_l": [2],
    "wm_r": [41],
    "hippocampus_l": [17],
    "hippocampus_r": [53],
    "ventricle_l": [4],
    "ventricle_r": [43],
    "csf": [24],
}
MIRROR = [1, 0, 3, 2, 5, 4, 6]  # channel of each channel's mirror structure
TABLE = torch.from_numpy(channel_lookup(CHANNELS))


def asymmetric_volume() -> torch.Tensor:
    """Compact ``(1, 16, 16, 16)`` RAS volume, axis 0 left → right: a larger left hippocampus and ventricle."""
    v = torch.zeros(16, 16, 16, dtype=torch.uint8)
    v[1:8, 2:14, 2:14] = C[2]
    v[8:15, 2:14, 2:14] = C[41]
    v[2:6, 5:10, 4:7] = C[17]
    v[10:12, 6:8, 4:6] = C[53]
    v[4:7, 9:12, 8:11] = C[4]
    v[9:11, 9:11, 8:10] = C[43]
    v[7:9, 4:6, 3:5] = C[24]
    return v[None]


def tiny_model(seed: int = 0) -> nn.Module:
    torch.manual_seed(seed)
    model = ADNIClassifier(partial(ResNet3d, widths=[4, 8], blocks=[1, 1]), in_channels=len(CHANNELS)).eval()
    with torch.no_grad():
        model.net.classifier.weight.mul_(20)  # probabilities that move, not all near 1/3
    return model


class Symmetric(nn.Module):
    """``(f(x) + f(mirror x)) / 2``: a classifier that cannot tell an image from its mirror image."""

    def __init__(self, model: nn.Module) -> None:
        super().__init__()
        self.model = model

    def forward(self, image: torch.Tensor, tabular: torch.Tensor) -> torch.Tensor:
        return (self.model(image, tabular) + self.model(image.flip(2)[:, MIRROR], tabular)) / 2


def predictor(model: nn.Module, tabular: torch.Tensor):
    return lambda volumes: model(to_channels(volumes, TABLE), tabular.expand(len(volumes), -1)).softmax(dim=1)


def mirrored(volume: torch.Tensor) -> torch.Tensor:
    return random_hemisphere_flip(volume[None], 1.0, torch.from_numpy(hemisphere_swap()))[0]


TABULAR = torch.tensor([[0.3, 1.0, 0.0]])


def test_occluding_an_absent_structure_changes_nothing_exactly():
    volume = asymmetric_volume()
    volume[volume == C[24]] = C[2]
    absent = torch.tensor([C[24], C[18]])  # CSF (a channel of its own) and an amygdala (in no channel)
    present = torch.tensor([C[17]])
    deltas = structure_occlusion(predictor(tiny_model(), TABULAR), volume, torch.cat([absent, present]), chunk=3)
    assert torch.equal(deltas[:2], torch.zeros(2, 3))
    assert deltas[2].abs().max() > 1e-4  # removing a present structure does move the probabilities
    assert deltas.sum(dim=1).abs().max() < 1e-6  # probabilities still sum to one


def test_removed_structure_vanishes_from_every_channel_and_nothing_else_changes():
    volume = asymmetric_volume()
    copies = occlude(volume, torch.tensor([C[17], C[43]]))
    assert copies.shape == (2, *volume.shape)
    for copy, label in zip(copies, (C[17], C[43])):
        was = volume == label
        assert not (copy == label).any() and (copy[was] == 0).all() and torch.equal(copy[~was], volume[~was])
        channels, original = to_channels(copy[None], TABLE)[0], to_channels(volume[None], TABLE)[0]
        assert (channels[:, was[0]] == 0).all() and torch.equal(channels[:, ~was[0]], original[:, ~was[0]])


def test_only_structures_some_channel_encodes_are_occluded():
    volume = asymmetric_volume()
    volume[0, 0, 0, 0] = C[1035]  # insula: in no channel of CHANNELS
    assert set(present_structures(volume, TABLE).tolist()) == {C[i] for i in (2, 41, 17, 53, 4, 43, 24)}
    assert C[1035] not in visible_labels(TABLE).tolist()


@pytest.mark.parametrize("symmetric", [True, False])
def test_a_mirrored_image_gets_the_mirrored_occlusion(symmetric):
    model = Symmetric(tiny_model()) if symmetric else tiny_model()
    volume, flipped = asymmetric_volume(), mirrored(asymmetric_volume())
    labels = torch.tensor([C[i] for i in (17, 53, 4, 43, 2, 41, 24)])
    mirror_labels = torch.tensor([C[i] for i in (53, 17, 43, 4, 41, 2, 24)])
    original = structure_occlusion(predictor(model, TABULAR), volume, labels)
    of_flipped = structure_occlusion(predictor(model, TABULAR), flipped, mirror_labels)
    gap = float((original - of_flipped).abs().max())
    if symmetric:
        assert gap < 1e-6
        assert float((original[0] - original[1]).abs().max()) > 1e-3  # left and right differ in this image
    else:
        assert gap > 1e-3  # an ordinary model tells them apart: the check above is not vacuous


@pytest.mark.parametrize("symmetric", [True, False])
def test_a_mirrored_image_gets_the_mirrored_attribution(symmetric):
    pytest.importorskip("captum")
    from adni_lightning.interpret.attribution import integrated_gradients

    model = Symmetric(tiny_model()) if symmetric else tiny_model()
    image = to_channels(asymmetric_volume()[None], TABLE)
    flipped = to_channels(mirrored(asymmetric_volume())[None], TABLE)
    target = int(model(image, TABULAR).argmax())
    original, _ = integrated_gradients(model, image, TABULAR, target, steps=8)
    of_flipped, _ = integrated_gradients(model, flipped, TABULAR, target, steps=8)
    assert original.shape == (16, 16, 16)
    gap = float((of_flipped - original.flip(0)).abs().max()) / float(original.abs().max())
    assert gap < 1e-4 if symmetric else gap > 1e-2
