"""Maps back on the source grid, from the geometry the cache entry recorded: same shape and affine as the file, exact
where the network is finer, and the source file never read again.
"""

from __future__ import annotations

from pathlib import Path

import nibabel as nib
import numpy as np
import pytest
import torch

from adni_lightning.data.cache import VolumeCache
from adni_lightning.data.manifest import ManifestSpec, build_manifest
from adni_lightning.data.preprocess import Preprocessing, SourceGeometry, crop_box, preprocess_recorded, to_compact
from adni_lightning.data.volume_io import read_volume
from adni_lightning.interpret.maps import ClassMaps, save_on_source_grid, to_source_grid
from tests.conftest import LIA_1MM, write_mgz


def _copies(cohort: Path, tmp_path: Path) -> dict[str, Path]:
    """One cohort MGZ (LIA), a NIfTI copy of it, and a NIfTI copy reoriented to PSR (other axis order and signs)."""
    mgz = Path(build_manifest(ManifestSpec(data_dir=cohort)).at[3, "path"])
    img = nib.load(mgz)
    data = np.asarray(img.dataobj)
    nifti = tmp_path / "copy.nii.gz"
    nib.save(nib.Nifti1Image(data, img.affine), nifti)
    transform = nib.orientations.ornt_transform(nib.io_orientation(img.affine), nib.orientations.axcodes2ornt("PSR"))
    reoriented = tmp_path / "psr.nii"
    nib.save(nib.Nifti1Image(data, img.affine).as_reoriented(transform), reoriented)
    return {"mgz": mgz, "nifti": nifti, "nifti_psr": reoriented}


def _cached_then_gone(path: Path, params: Preprocessing, cache_dir: Path) -> tuple[np.ndarray, SourceGeometry]:
    """Build ``path``'s cache entry, then move the file away: the entry and its recorded geometry, read back."""
    cache = VolumeCache(cache_dir, params)
    entry = cache.build([("I1", path)])["I1"]
    path.rename(path.with_name(f"gone-{path.name}"))
    return np.load(entry), cache.geometry(entry)


@pytest.mark.parametrize("kind", ["mgz", "nifti", "nifti_psr"])
def test_cached_label_map_goes_back_onto_its_file_exactly(cohort, tmp_path, kind):
    """At 40³ the network grid is finer than the 8 mm source, so the nearest-neighbour round trip is exact."""
    path = _copies(cohort, tmp_path)[kind]
    data, _ = read_volume(path)
    expected = to_compact(np.asarray(data))
    cached, geometry = _cached_then_gone(path, Preprocessing(image_size=40), tmp_path / "cache")
    back = to_source_grid(cached.astype(np.float32), geometry)
    assert back.shape == data.shape
    np.testing.assert_array_equal(back, expected)


@pytest.mark.parametrize("kind", ["mgz", "nifti", "nifti_psr"])
def test_saved_attribution_has_the_source_files_shape_and_affine(cohort, tmp_path, kind):
    path = _copies(cohort, tmp_path)[kind]
    source = nib.load(path)
    brain = np.asarray(source.dataobj) != 0
    params = Preprocessing(image_size=16)
    _, geometry = _cached_then_gone(path, params, tmp_path / "cache")
    values = np.random.default_rng(0).normal(size=params.size).astype(np.float32)
    saved = nib.load(save_on_source_grid(values, geometry, tmp_path / f"{kind}_ig.nii.gz"))
    assert saved.shape == source.shape
    np.testing.assert_allclose(saved.affine, source.affine, atol=1e-5)
    # Coarser network than file: every source voxel still takes a value of the map (or 0 outside the box).
    assert set(np.unique(saved.get_fdata(dtype=np.float32))) <= set(values.ravel()) | {0.0}
    assert (saved.get_fdata()[brain] != 0).all()


def test_ones_inside_the_network_grid_land_exactly_on_the_crop_box(tmp_path):
    """A label map off-centre in an LIA file of unequal sides, cropped to a box smaller than the file: a map of ones
    goes back onto exactly the source voxels whose centres lie in the recorded box, found here by hand from LIA
    (file axis 0 = canonical x reversed, 1 = z reversed, 2 = y), from the record alone (the file is gone).
    """
    data = np.zeros((40, 48, 36), dtype=np.int16)
    data[5:17, 20:41, 9:20] = 2  # white matter, off-centre on every axis
    data[8:12, 25:30, 12:15] = 17
    path = write_mgz(tmp_path / "I1.mgz", data, LIA_1MM)
    params = Preprocessing(image_size=(8, 12, 10), margin_mm=2.0)
    _, geometry = _cached_then_gone(path, params, tmp_path / "cache")

    canonical_mask = np.transpose(data[::-1, ::-1, :], (0, 2, 1)) != 0  # LIA → RAS by hand
    start, extent = crop_box(canonical_mask, (1.0, 1.0, 1.0), params.size, params.margin_mm)
    np.testing.assert_array_equal(geometry.start, start)
    np.testing.assert_array_equal(geometry.extent, extent)
    assert geometry.shape == (40, 48, 36) and geometry.canonical_shape == (40, 36, 48)
    np.testing.assert_array_equal(np.asarray(geometry.affine), LIA_1MM)

    inside = [
        (start[a] <= np.arange(n) + 0.5) & (np.arange(n) + 0.5 < start[a] + extent[a])
        for a, n in enumerate((40, 36, 48))
    ]
    x, y, z = inside
    expected = x[::-1][:, None, None] & z[::-1][None, :, None] & y[None, None, :]
    assert 0 < expected.sum() < expected.size  # the box leaves part of the file out
    assert expected[data != 0].all()  # and holds the whole brain

    back = to_source_grid(np.ones(params.size, dtype=np.float32), geometry)
    assert back.shape == data.shape
    np.testing.assert_array_equal(back, expected.astype(np.float32))


def test_the_geometry_round_trips_through_its_record(tmp_path):
    data = np.zeros((20, 24, 18), dtype=np.int16)
    data[3:9, 10:20, 4:12] = 2
    _, geometry = preprocess_recorded(data, LIA_1MM, Preprocessing(image_size=8))
    assert SourceGeometry.from_record(geometry.record()) == geometry
    broken = {**geometry.record(), "affine": [[1.0, 0.0], [0.0, 1.0]]}
    with pytest.raises(ValueError, match="affine"):
        SourceGeometry.from_record(broken)


def test_class_means_and_their_reference_label_map():
    maps = ClassMaps(num_classes=3, labelmap=True)
    ones, twos = np.ones((4, 4, 4), np.float32), 2 * np.ones((4, 4, 4), np.float32)
    labels = [np.full((4, 4, 4), v, np.uint8) for v in (5, 5, 7)]
    for values, volume in zip((ones, twos, twos), labels):
        maps.add(2, torch.from_numpy(values), torch.from_numpy(volume))
    np.testing.assert_allclose(maps.mean(2), np.full((4, 4, 4), 5 / 3), rtol=1e-6)
    assert (maps.reference(2) == 5).all() and maps.counts == [0, 0, 3]
    assert maps.mean(0) is None and maps.reference(0) is None
