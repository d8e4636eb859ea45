import math

import numpy as np
import pytest
import torch

from adni_lightning.data.augment import (
    AugmentContext,
    HemisphereFlip,
    RandomAffine,
    affine_resample,
    random_hemisphere_flip,
    random_shift,
    to_channels,
)
from adni_lightning.data.labels import channel_lookup, compact_lookup, hemisphere_swap
from adni_lightning.data.preprocess import Preprocessing

C = compact_lookup()


def _asymmetric_batch() -> torch.Tensor:
    """RAS compact index volume: left hippocampus (17) at small x, left ventricle (4) elsewhere, right amygdala."""
    vol = np.zeros((8, 6, 6), np.uint8)
    vol[1, 2, 3] = C[17]
    vol[2, 4, 1] = C[4]
    vol[6, 1, 2] = C[54]
    return torch.from_numpy(np.stack([vol, vol]))[:, None]


def test_flip_mirrors_axis_zero_and_swaps_hemisphere_labels():
    batch = _asymmetric_batch()
    out = random_hemisphere_flip(batch, probability=1.0, swap=torch.from_numpy(hemisphere_swap()))
    vol = out[0, 0].numpy()
    assert vol[8 - 1 - 1, 2, 3] == C[53]  # left hippocampus → right hippocampus, mirrored position
    assert vol[8 - 1 - 2, 4, 1] == C[43]
    assert vol[8 - 1 - 6, 1, 2] == C[18]
    assert (vol > 0).sum() == 3
    assert C[17] not in vol
    twice = random_hemisphere_flip(out, probability=1.0, swap=torch.from_numpy(hemisphere_swap()))
    assert torch.equal(twice, batch)


def test_flip_probability_zero_and_partial_batches():
    batch = _asymmetric_batch()
    assert torch.equal(random_hemisphere_flip(batch, 0.0, torch.from_numpy(hemisphere_swap())), batch)
    many = batch.repeat(200, 1, 1, 1, 1)
    out = random_hemisphere_flip(many, 0.5, torch.from_numpy(hemisphere_swap()), torch.Generator().manual_seed(0))
    flipped = (out[:, 0, 6, 2, 3] == C[53]).float().mean().item()
    assert 0.4 < flipped < 0.6


def test_flip_of_intensity_is_a_plain_mirror():
    image = torch.arange(2 * 4 * 3 * 3, dtype=torch.float32).reshape(2, 1, 4, 3, 3)
    assert torch.equal(random_hemisphere_flip(image, 1.0), image.flip(2))


def test_to_channels_one_hot():
    batch = _asymmetric_batch()
    table = torch.from_numpy(channel_lookup({"hippocampus": (17, 53), "ventricle": (4, 43)}))
    channels = to_channels(batch, table)
    assert channels.shape == (2, 2, 8, 6, 6) and channels.dtype == torch.float32
    assert channels[0, 0, 1, 2, 3] == 1 and channels[0, 0].sum() == 1
    assert channels[0, 1, 2, 4, 1] == 1 and channels[0, 1].sum() == 1


def test_to_channels_is_the_tables_rows_moved_to_the_channel_axis():
    table = torch.from_numpy(channel_lookup(Preprocessing().channel_map))
    index = torch.randint(0, len(table), (3, 1, 5, 7, 4), dtype=torch.uint8, generator=torch.Generator().manual_seed(0))
    channels = to_channels(index, table)
    assert channels.is_contiguous() and channels.shape == (3, table.shape[1], 5, 7, 4)
    assert torch.equal(channels, table[index[:, 0].long()].permute(0, 4, 1, 2, 3))
    assert torch.equal(to_channels(index[1:2], table), channels[1:2])


def test_random_shift_translates_and_pads_with_background():
    batch = _asymmetric_batch()
    assert torch.equal(random_shift(batch, 0), batch)
    shifted = random_shift(batch, 2, torch.Generator().manual_seed(1))
    assert shifted.shape == batch.shape and shifted.dtype == batch.dtype
    for original, moved in zip(batch, shifted):
        kept = moved[moved > 0]
        assert set(kept.tolist()) <= set(original[original > 0].tolist())  # only existing labels, maybe cut
        offsets = torch.nonzero(moved[0] == C[17]) - torch.nonzero(original[0] == C[17])
        assert offsets.numel() == 0 or offsets.abs().max() <= 2
    many = random_shift(batch.repeat(30, 1, 1, 1, 1), 2, torch.Generator().manual_seed(0))
    assert len({tuple(torch.nonzero(v[0] == C[54])[0].tolist()) for v in many if (v[0] == C[54]).any()}) > 3


def _context(labelmap: bool = True, seed: int = 0) -> AugmentContext:
    swap = torch.from_numpy(hemisphere_swap()) if labelmap else None
    return AugmentContext(torch.Generator().manual_seed(seed), labelmap, swap)


def _brain() -> torch.Tensor:
    """A blocky two-hemisphere label map with a left hippocampus, (2, 1, 20, 24, 16), RAS."""
    vol = torch.zeros(20, 24, 16, dtype=torch.uint8)
    vol[2:10, 4:20, 3:13] = int(C[2])  # left white matter
    vol[10:18, 4:20, 3:13] = int(C[41])
    vol[5:8, 8:12, 5:8] = int(C[17])  # left hippocampus only: the map is asymmetric
    return torch.stack([vol, vol])[:, None]


def test_random_affine_keeps_only_the_input_label_ids_and_moves_voxels():
    batch = _brain()
    out = RandomAffine(degrees=10, scale=0.1)(batch, _context())
    assert out.shape == batch.shape and out.dtype == torch.uint8
    assert set(out.unique().tolist()) <= set(batch.unique().tolist())  # nearest neighbour: no blended ids
    assert 0.01 < (out != batch).float().mean() < 0.5
    assert not torch.equal(out[0], out[1])  # each volume draws its own transform
    assert torch.equal(RandomAffine(degrees=0, scale=0)(batch, _context()), batch)  # identity is exact
    assert torch.equal(RandomAffine(probability=0)(batch, _context()), batch)


def test_random_affine_of_intensities_is_trilinear_and_keeps_the_dtype():
    image = torch.rand(2, 1, 12, 12, 12).half()
    out = RandomAffine(degrees=10, scale=0.1)(image, _context(labelmap=False))
    assert out.dtype == torch.float16
    assert len(out.unique()) > len(image.unique()) // 2  # interpolated values, not a relabelling


def test_affine_rotates_about_the_volume_centre_without_shear():
    """90° about the superior axis of a non-cubic volume turns an A–P line through the centre into an L–R line."""
    vol = torch.zeros(1, 1, 9, 15, 9, dtype=torch.uint8)
    vol[0, 0, 4, 2:13, 4] = 1  # along H (anterior–posterior) through the centre (4, 7, 4)
    out = affine_resample(vol, torch.tensor([[math.pi / 2, 0.0, 0.0]]), torch.ones(1), labelmap=True)
    line = torch.nonzero(out[0, 0])
    assert line[:, 0].tolist() == list(range(9))  # now along D (left–right), cut by the 9-voxel width
    assert (line[:, 1] == 7).all() and (line[:, 2] == 4).all()  # through the same centre, in the same plane
    zoomed = affine_resample(vol, torch.zeros(1, 3), torch.tensor([0.5]), labelmap=True)
    assert torch.nonzero(zoomed[0, 0])[:, 1].tolist() == list(range(5, 10))  # halved about the centre: 11 → 5


def test_flip_of_a_label_map_needs_the_swap_table():
    with pytest.raises(ValueError, match="swap table"):
        HemisphereFlip(1.0)(_brain(), AugmentContext(torch.Generator(), labelmap=True, swap=None))
    flipped = HemisphereFlip(1.0)(_brain(), _context())
    assert flipped[0, 0, 12, 10, 6] == C[53] and flipped[0, 0, 6, 10, 6] == C[2]  # mirrored and relabelled
    assert C[17] not in flipped and C[41] not in flipped[:, :, :10]
