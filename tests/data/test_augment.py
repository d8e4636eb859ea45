import numpy as np
import torch

from adni_lightning.data.augment import random_hemisphere_flip, random_shift, to_channels
from adni_lightning.data.labels import channel_lookup, compact_lookup, hemisphere_swap

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
