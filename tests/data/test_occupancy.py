"""Partial-volume (occupancy) input channels: exact fractions, their cache, augmentation and contract."""

from __future__ import annotations

import numpy as np
import pandas as pd
import pytest
import torch

from adni_lightning.data.augment import (
    AugmentContext,
    HemisphereFlip,
    RandomAffine,
    RandomShift,
    channel_mirror,
    dominant_labels,
    random_hemisphere_flip,
)
from adni_lightning.data.cache import VolumeCache
from adni_lightning.data.contract import ContractError, check_contract, data_contract
from adni_lightning.data.labels import LEFT_RIGHT_PAIRS
from adni_lightning.data.preprocess import (
    FULL,
    Preprocessing,
    crop_box,
    footprint_means,
    fractions,
    occupancy,
    preprocess_recorded,
)
from adni_lightning.data.tabular import TabularEncoder
from adni_lightning.data.volume_io import to_canonical
from adni_lightning.errors import OptionError
from tests.conftest import write_mgz

#: Left and right hippocampus in channels of their own, so that a flip must swap them.
LATERAL = {"left_hippocampus": [17], "right_hippocampus": [53], "amygdala": [18, 54], "white_matter": [2, 41]}


def _label_map(shape: tuple[int, int, int] = (40, 34, 38)) -> np.ndarray:
    """An RAS label map with a large structure, small ones on either side and single voxels (partial at any size)."""
    rng = np.random.default_rng(0)
    data = np.zeros(shape, np.int16)
    data[6:34, 5:30, 6:33] = 2
    data[20:34, 5:30, 6:33] = 41
    data[10:13, 12:16, 14:19] = 17
    data[25:29, 14:17, 15:18] = 53
    data[15, 20, 20] = 18
    data[26, 21, 11] = 54
    speckle = rng.random(shape) < 0.01
    data[speckle & (data > 0)] = 53
    return data


def _counts(data: np.ndarray, channels: dict[str, list[int]]) -> np.ndarray:
    return np.array([np.isin(data, ids).sum() for ids in channels.values()], dtype=float)


@pytest.mark.parametrize("size", [(16, 16, 16), (13, 11, 15)])
def test_channels_sum_to_the_full_resolution_voxel_counts_times_the_voxel_volume(size):
    data = _label_map()
    params = Preprocessing(image_size=size, margin_mm=3.0, channels=LATERAL, label_encoding="occupancy")
    cached, geometry = preprocess_recorded(data, np.eye(4), params)
    assert cached.shape == params.cached_shape == (4, *size) and cached.dtype == np.uint8
    ratio = np.asarray(geometry.extent) / np.asarray(size)  # source voxels per output voxel, along each axis
    assert np.all(np.abs(ratio - np.round(ratio)) > 0.05)  # every axis cuts source voxels
    voxel = float(np.prod(ratio))
    start = np.asarray(geometry.start)
    for c, ids in enumerate(LATERAL.values()):
        exact = fractions(np.isin(data, ids), start, np.asarray(geometry.extent), params.size)
        count = np.isin(data, ids).sum()
        assert exact.sum(dtype=np.float64) * voxel == pytest.approx(count, rel=1e-6)  # float32 fractions
        assert ((exact > 0) & (exact < 1)).any()  # partial volumes, not a block copy
        np.testing.assert_array_equal(cached[c], np.rint(exact * FULL))
        half_steps = (exact > 0).sum() * 0.5 / FULL * voxel  # rounding moves each voxel by at most half a step
        assert abs(cached[c].sum(dtype=np.int64) / FULL * voxel - count) <= half_steps
    assert cached[2].sum() > 0  # the amygdala's single voxels are kept


def test_footprint_means_are_overlap_weighted_for_any_box():
    values = np.random.default_rng(1).random((9, 4, 5))
    for start, extent, n_out in [(0.0, 9.0, 4), (-2.3, 13.1, 7), (1.7, 5.05, 3)]:
        means = footprint_means(values, start, extent, n_out)
        cells = start + np.arange(n_out + 1) * extent / n_out
        for k in range(n_out):  # the overlap of each source voxel with cell k, by brute force
            overlap = np.clip(np.minimum(np.arange(1, 10), cells[k + 1]) - np.maximum(np.arange(9), cells[k]), 0, 1)
            expected = np.tensordot(overlap, values, axes=1) / (extent / n_out)
            np.testing.assert_allclose(means[k], expected, rtol=1e-12, atol=1e-12)
    mask = np.zeros((10, 2, 2), bool)
    mask[3:6] = True
    np.testing.assert_allclose(footprint_means(mask, 0.0, 10.0, 4)[:, 0, 0], [0.0, 0.8, 0.4, 0.0])


def _mirror_ids(data: np.ndarray) -> np.ndarray:
    """The label map flipped across axis 0 with every left id exchanged for its right id."""
    swap = np.arange(int(data.max()) + 1)
    for left, right in LEFT_RIGHT_PAIRS:
        if max(left, right) < len(swap):
            swap[left], swap[right] = right, left
    return swap[data[::-1]].astype(data.dtype)


@pytest.mark.parametrize("channels", [LATERAL, None])
def test_a_flip_of_the_fractions_is_the_fractions_of_the_flipped_and_swapped_label_map(channels):
    data = _label_map()
    params = Preprocessing(image_size=(13, 11, 15), channels=channels, label_encoding="occupancy")
    extent = np.array([34.3, 28.9, 33.1])
    start = (np.asarray(data.shape) - extent) / 2  # centred on axis 0, so the mirror box is the box
    before = occupancy(data, start, extent, params.size, params.channel_map)
    after = occupancy(_mirror_ids(data), start, extent, params.size, params.channel_map)
    order = channel_mirror(params.channel_map)
    assert order.tolist() == ([1, 0, 2, 3] if channels else list(range(9)))
    flipped = random_hemisphere_flip(torch.from_numpy(before)[None], 1.0, channel_swap=order)[0].numpy()
    assert np.abs(flipped.astype(int) - after.astype(int)).max() <= 1  # summed in the other order: rounding only
    assert (flipped != after).mean() < 0.01
    if channels:  # the left hippocampus moved to the right hemisphere and into the right hippocampus channel
        assert before[0, :6].sum() > 0 and flipped[1, 7:].sum() == before[0, :6].sum()


def test_a_channel_without_its_mirror_is_refused_for_flips():
    with pytest.raises(OptionError) as refused:
        channel_mirror({"left_hippocampus": [17], "amygdala": [18, 54]})
    assert str(refused.value) == (
        "HemisphereFlip of data.preprocessing.label_encoding occupancy: channel 'left_hippocampus' has no mirror "
        "channel (ids [53]): add it to data.preprocessing.channels, merge left and right, or leave HemisphereFlip "
        "out of data.augment"
    )


def _fractions(batch: int = 2) -> torch.Tensor:
    """Occupancy fractions of a blob well inside a 12³ volume, in two channels."""
    grid = torch.stack(torch.meshgrid(*[torch.arange(12.0)] * 3, indexing="ij"))
    blob = ((grid - 5.5).pow(2).sum(0).sqrt() < 3.2).float()
    shell = ((grid - 5.5).pow(2).sum(0).sqrt() < 4.2).float() - blob
    return (torch.stack([blob * 0.6, shell]) * FULL).round().to(torch.uint8)[None].repeat(batch, 1, 1, 1, 1)


def test_shift_and_affine_keep_each_channels_sum():
    volume = _fractions()
    context = AugmentContext(torch.Generator().manual_seed(0), labelmap=False)
    sums = volume.sum(dim=(2, 3, 4), dtype=torch.int64).double()
    shifted = RandomShift(max_voxels=1)(volume, context)
    assert shifted.dtype == torch.uint8 and not torch.equal(shifted, volume)
    assert torch.equal(shifted.sum(dim=(2, 3, 4), dtype=torch.int64).double(), sums)
    turned = RandomAffine(degrees=20.0, scale=0.0)(volume, context)
    assert turned.dtype == torch.uint8 and not torch.equal(turned, volume)
    assert set(turned.unique().tolist()) - {0, 153, 255}  # interpolated: fractions between the input's values
    ratio = turned.sum(dim=(2, 3, 4), dtype=torch.int64).double() / sums
    assert torch.all((ratio - 1).abs() < 0.03), ratio


def test_hemisphere_flip_of_fractions_permutes_the_mirror_channels():
    volume = _fractions(1)
    volume[:, 0, :6] = 0  # channel 0 on the left only
    context = AugmentContext(torch.Generator().manual_seed(0), labelmap=False, channel_swap=torch.tensor([1, 0]))
    out = HemisphereFlip(probability=1.0)(volume, context)
    assert torch.equal(out[:, 1], volume[:, 0].flip(1)) and torch.equal(out[:, 0], volume[:, 1].flip(1))


def test_the_drawn_volume_is_each_voxels_dominant_structure():
    fractions = torch.tensor([[100, 0], [40, 200], [100, 30]], dtype=torch.uint8).T.reshape(1, 2, 3, 1, 1)
    labels = torch.tensor([0, 7, 9], dtype=torch.uint8)
    # unfilled 155 > 100 · channel 1's 200 > 40 and the unfilled 15 · unfilled 125 > 100 > 30
    np.testing.assert_array_equal(dominant_labels(fractions, labels).flatten().tolist(), [0, 9, 0])
    fractions[0, 0, 2] = 200
    assert dominant_labels(fractions, labels).flatten().tolist()[2] == 7


def test_the_nearest_encoding_keeps_its_cache_key_and_occupancy_has_its_own():
    # The keys of these configurations before label_encoding existed: their cache entries stay valid.
    assert Preprocessing().key() == "149046083382"
    assert Preprocessing(image_size=48).key() == "0abb665f2ca0"
    assert Preprocessing(input_kind="intensity").key() == "4e807b28a98a"
    occupancy_key = Preprocessing(label_encoding="occupancy").key()
    assert occupancy_key not in {"149046083382", Preprocessing(label_encoding="occupancy", channels=LATERAL).key()}
    with pytest.raises(OptionError) as refused:
        Preprocessing(input_kind="intensity", label_encoding="occupancy")
    assert str(refused.value) == (
        "data.preprocessing.label_encoding occupancy needs label maps, not input_kind intensity: "
        "set data.preprocessing.label_encoding nearest"
    )


@pytest.mark.parametrize("size", [16, 48])
def test_a_cache_entry_holds_one_byte_per_channel_and_voxel(tmp_path, size):
    data = np.zeros((64, 64, 64), np.int16)
    data[10:50, 12:52, 8:56] = 2
    data[30:34, 30:34, 30:34] = 17
    source = write_mgz(tmp_path / "I1.mgz", data)
    cache = VolumeCache(tmp_path / "cache", Preprocessing(image_size=size, label_encoding="occupancy"))
    entry = cache.build([("I1", source)])["I1"]
    assert np.load(entry).shape == (9, size, size, size)
    assert entry.stat().st_size == 128 + 9 * size**3  # the .npy header, then the fractions
    assert cache.is_valid(entry)
    nearest = VolumeCache(tmp_path / "cache", Preprocessing(image_size=size))
    assert not nearest.is_valid(entry)  # another shape: never read as a label index


def _contract(**preprocessing) -> dict:
    encoder = TabularEncoder(()).fit([70.0, 80.0], [[], []])
    return data_contract(("CN", "AD"), Preprocessing(**preprocessing), encoder, None)


def test_a_checkpoint_of_the_other_encoding_is_refused():
    with pytest.raises(ContractError) as refused:
        check_contract(_contract(), _contract(label_encoding="occupancy"), "model.ckpt")
    assert str(refused.value) == (
        "model.ckpt does not fit this configuration: data.preprocessing.label_encoding: checkpoint nearest, config "
        "occupancy"
    )
    older = _contract()
    del older["preprocessing"]["label_encoding"]  # written before the option: nearest neighbour
    check_contract(older, _contract(), "old.ckpt")
    with pytest.raises(ContractError, match="label_encoding: checkpoint nearest, config occupancy"):
        check_contract(older, _contract(label_encoding="occupancy"), "old.ckpt")


def test_a_scoring_command_takes_the_checkpoints_encoding():
    from adni_lightning.checkpoint import adoption_lines, checkpoint_preprocessing

    trained = _contract(label_encoding="occupancy")
    adopted = checkpoint_preprocessing(Preprocessing(), trained)
    assert adopted == {"data.preprocessing.label_encoding": "occupancy"}
    assert adoption_lines(Preprocessing(), adopted) == [
        "data.preprocessing.label_encoding occupancy taken from the checkpoint (the config says nearest)"
    ]
    intensity = _contract(input_kind="intensity")  # no encoding: only the input kind is taken
    assert checkpoint_preprocessing(Preprocessing(), intensity) == {"data.preprocessing.input_kind": "intensity"}


def test_occupancy_reads_the_same_voxels_as_the_crop():
    data = _label_map()
    canonical, zooms = to_canonical(data, np.eye(4))
    start, extent = crop_box(canonical != 0, zooms, (16, 16, 16), 3.0)
    params = Preprocessing(image_size=16, margin_mm=3.0, label_encoding="occupancy")
    cached, geometry = preprocess_recorded(data, np.eye(4), params)
    assert np.allclose(geometry.start, start) and np.allclose(geometry.extent, extent)
    np.testing.assert_array_equal(cached, occupancy(canonical, start, extent, params.size, params.channel_map))


@pytest.mark.slow
def test_fit_with_occupancy_channels_runs_end_to_end_and_its_checkpoint_keeps_the_encoding(cohort, tmp_path, capsys):
    from adni_lightning.main import main
    from tests.helpers import tiny_args

    root = tmp_path / "run"
    extra = ["--trainer.max_epochs", "1", "--data.preprocessing.label_encoding", "occupancy"]
    main(tiny_args("fit", root, cohort, *extra, "--data.loader.device_cache", "true"))
    entries = sorted((tmp_path / "cache").glob("*.npy"))
    assert entries and all(np.load(e, mmap_mode="r").shape == (9, 16, 16, 16) for e in entries)
    checkpoint = torch.load(root / "checkpoints" / "last.ckpt", weights_only=False)
    assert checkpoint["data"]["preprocessing"]["label_encoding"] == "occupancy"
    from tensorboard.backend.event_processing.event_accumulator import EventAccumulator

    events = EventAccumulator(str(root / "tensorboard")).Reload()
    drawn = [tag for tag in events.Tags()["images"] if tag.startswith("val/volumes/")]
    assert drawn  # mid-slices of each voxel's dominant structure, in FreeSurfer colours
    with pytest.raises(ContractError) as refused:  # a resume must train on the inputs it started with
        main(tiny_args("fit", root, cohort, "--ckpt_path", "last", "--trainer.max_epochs", "2"))
    assert str(refused.value).endswith("data.preprocessing.label_encoding: checkpoint occupancy, config nearest")
    main(tiny_args("validate", root, cohort, "--ckpt_path", str(root / "checkpoints" / "last.ckpt")))
    assert "data.preprocessing.label_encoding occupancy taken from the checkpoint" in capsys.readouterr().out


def test_occluding_a_channel_zeroes_its_fractions_and_nothing_else():
    from adni_lightning.interpret.occlusion import occlude_channels

    image = _fractions(1)[0].float() / FULL
    copies = occlude_channels(image, torch.tensor([1, 0]))
    assert copies.shape == (2, *image.shape)
    assert torch.equal(copies[0, 0], image[0]) and not copies[0, 1].any()
    assert torch.equal(copies[1, 1], image[1]) and not copies[1, 0].any()


def test_the_datamodule_refuses_a_flip_it_cannot_mirror_before_any_work(tmp_path):
    from adni_lightning.data.datamodule import ADNIDataModule

    lateral = {"left_hippocampus": [17], "amygdala": [18, 54]}
    flip = [HemisphereFlip()]
    ADNIDataModule(preprocessing=Preprocessing(channels=lateral), augment=flip)  # a label index swaps ids itself
    ADNIDataModule(preprocessing=Preprocessing(channels=lateral, label_encoding="occupancy"))  # no flip, no mirror
    with pytest.raises(OptionError, match="channel 'left_hippocampus' has no mirror channel"):
        ADNIDataModule(preprocessing=Preprocessing(channels=lateral, label_encoding="occupancy"), augment=flip)


def test_inspect_counts_the_same_volumes_with_occupancy_channels(cohort, tmp_path):
    from adni_lightning.main import main
    from tests.helpers import tiny_args

    outs = {}
    for encoding in ("nearest", "occupancy"):
        outs[encoding] = tmp_path / encoding
        extra = ("--out", str(outs[encoding]), "--data.preprocessing.label_encoding", encoding)
        main(tiny_args("inspect", tmp_path / f"run-{encoding}", cohort, *extra))
    nearest, occupancy = (pd.read_csv(outs[e] / "volumes.csv") for e in ("nearest", "occupancy"))
    assert len(nearest) > 0
    pd.testing.assert_frame_equal(nearest, occupancy)  # counted at full resolution, whatever the cache holds
