import numpy as np
import pytest

from adni_lightning.data.labels import KNOWN_LABELS, compact_lookup
from adni_lightning.data.preprocess import (
    Preprocessing,
    UnknownLabelError,
    as_size,
    crop_box,
    preprocess,
    resample_nearest,
    to_compact,
)
from tests.conftest import LIA_1MM


def _random_labels(shape, seed=0):
    ids = np.array([0, 2, 4, 17, 18, 41, 43, 53, 54, 1006, 2006, 1035])
    return ids[np.random.default_rng(seed).integers(0, len(ids), shape)].astype(np.int16)


@pytest.mark.parametrize("size", [(7, 9, 11), (40, 40, 40), (16, 24, 32)])
def test_nearest_resampling_only_produces_input_ids(size):
    data = _random_labels((32, 30, 28))
    out = resample_nearest(data, np.zeros(3), np.asarray(data.shape, float), size)
    assert out.shape == size and out.dtype == data.dtype
    assert set(np.unique(out)) <= set(np.unique(data))


def test_nearest_resampling_of_a_big_endian_strided_view_is_native_and_exact():
    data = _random_labels((20, 22, 24), seed=3)
    view = data.astype(">i2")[::-1].transpose(2, 0, 1)  # as to_canonical returns a flipped, permuted file buffer
    out = resample_nearest(view, np.zeros(3), np.asarray(view.shape, float), (12, 10, 11))
    assert out.dtype == np.int16 and out.dtype.isnative and out.flags.c_contiguous and out.shape == (12, 10, 11)
    expected = resample_nearest(
        np.ascontiguousarray(view, dtype=np.int16), np.zeros(3), np.asarray(view.shape, float), (12, 10, 11)
    )
    np.testing.assert_array_equal(out, expected)
    np.testing.assert_array_equal(out, view[1::2, 1::2, 1::2])


def test_nearest_resampling_by_two_picks_voxels_not_averages():
    data = _random_labels((8, 8, 8))
    out = resample_nearest(data, np.zeros(3), np.full(3, 8.0), (4, 4, 4))
    np.testing.assert_array_equal(out, data[1::2, 1::2, 1::2])


def test_labelmap_preprocessing_is_compact_uint8_and_never_interpolates():
    data = _random_labels((48, 48, 48), seed=1)
    out = preprocess(data, LIA_1MM, Preprocessing("labelmap", (20, 20, 20), crop=False))
    assert out.dtype == np.uint8 and out.shape == (20, 20, 20)
    assert set(KNOWN_LABELS[np.unique(out)]) <= set(np.unique(data))
    # seed path for contrast: trilinear on ids invents labels that exist nowhere in the brain
    import torch

    seed = torch.nn.functional.interpolate(
        torch.from_numpy(data.astype(np.float32))[None, None], size=20, mode="trilinear"
    )
    assert not set(np.unique(seed.round().numpy())) <= set(np.unique(data))


def test_to_compact_rejects_foreign_ids_and_floats():
    with pytest.raises(UnknownLabelError, match="6, 1036"):
        to_compact(np.array([[[0, 17, 1036, 6]]], dtype=np.int16))
    with pytest.raises(UnknownLabelError, match="intensity image"):
        to_compact(np.array([[[0.5, 17.0]]], dtype=np.float32))
    assert to_compact(np.array([[[17.0, 0.0]]], dtype=np.float32)).tolist() == [[[compact_lookup()[17], 0]]]


def test_crop_box_keeps_isotropic_voxels_and_the_whole_brain():
    mask = np.zeros((100, 100, 100), bool)
    mask[20:80, 10:90, 30:70] = True  # 60 x 80 x 40 mm brain at 1 mm
    start, extent = crop_box(mask, (1.0, 1.0, 1.0), (32, 32, 32), margin_mm=2.0)
    assert np.allclose(extent, 84.0)  # the longest axis + margins, same on every axis
    assert (start <= [18, 8, 28]).all() and (start + extent >= [82, 92, 72]).all()
    start, extent = crop_box(mask, (2.0, 1.0, 1.0), (32, 32, 32), margin_mm=0.0)  # anisotropic voxels
    assert np.allclose(extent * [2.0, 1.0, 1.0], 120.0)


def test_crop_centres_the_brain_and_fills_the_grid():
    data = np.zeros((64, 64, 64), np.int16)
    data[5:25, 40:60, 10:30] = 17  # a cube off centre
    out = preprocess(data, np.eye(4), Preprocessing("labelmap", (16, 16, 16), crop=True, margin_mm=0.0))
    assert (out == compact_lookup()[17]).all()


def test_intensity_preprocessing_trilinear_normalised_float16():
    rng = np.random.default_rng(0)
    data = np.zeros((40, 40, 40), np.float32)
    data[8:32, 8:32, 8:32] = rng.normal(100, 10, (24, 24, 24))
    data[20, 20, 20] = 5000  # a bright outlier must not squash the range
    out = preprocess(data, np.eye(4), Preprocessing("intensity", (24, 24, 24), crop=True, margin_mm=0.0))
    assert out.dtype == np.float16 and out.shape == (24, 24, 24)
    assert float(out.min()) >= 0.0 and float(out.max()) <= 1.0
    assert 0.35 < float(out[4:20, 4:20, 4:20].astype(np.float32).mean()) < 0.65


def test_as_size():
    assert as_size(64) == (64, 64, 64)
    assert as_size([32, 48, 40]) == (32, 48, 40)
    with pytest.raises(ValueError):
        as_size((1, 2))


def test_preprocessing_key_changes_with_every_parameter():
    base = Preprocessing()
    keys = {
        base.key(),
        Preprocessing(image_size=(64, 64, 64)).key(),
        Preprocessing(crop=False).key(),
        Preprocessing(margin_mm=1.0).key(),
        Preprocessing(input_kind="intensity").key(),
        Preprocessing(input_kind="intensity", normalise="zscore").key(),
    }
    assert len(keys) == 6


def test_seed_path_zscore_of_a_label_map_reproduces_the_blog():
    data = np.zeros((32, 32, 32), np.int16)
    data[8:24, 8:24, 8:24] = 17
    data[12:20, 12:20, 12:20] = 2035
    out = preprocess(data, np.eye(4), Preprocessing("intensity", (10, 10, 10), crop=False, normalise="zscore"))
    values = out.astype(np.float32)
    assert abs(values.mean()) < 1e-2 and abs(values.std() - 1) < 1e-2
    assert len(np.unique(values)) > 3  # trilinear on ids: values between 0, 17 and 2035 appear
