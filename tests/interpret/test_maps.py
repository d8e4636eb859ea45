"""Maps back on the source grid: same shape and affine as the file, exact where the network is finer."""

from __future__ import annotations

from pathlib import Path

import nibabel as nib
import numpy as np
import pytest
import torch

from adni_lightning.data.manifest import ManifestSpec, build_manifest
from adni_lightning.data.preprocess import Preprocessing, preprocess, to_compact
from adni_lightning.data.volume_io import read_volume
from adni_lightning.interpret.maps import ClassMaps, save_on_source_grid, source_grid, to_source_grid


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


@pytest.mark.parametrize("kind", ["mgz", "nifti", "nifti_psr"])
def test_cached_label_map_goes_back_onto_its_file_exactly(cohort, tmp_path, kind):
    """At 40³ the network grid is finer than the 8 mm source, so the nearest-neighbour round trip is exact."""
    path = _copies(cohort, tmp_path)[kind]
    params = Preprocessing(image_size=40)
    data, affine = read_volume(path)
    cached = preprocess(data, affine, params)
    back = to_source_grid(cached.astype(np.float32), source_grid(path, params))
    assert back.shape == data.shape
    np.testing.assert_array_equal(back, to_compact(np.asarray(data)))


@pytest.mark.parametrize("kind", ["mgz", "nifti", "nifti_psr"])
def test_saved_attribution_has_the_source_files_shape_and_affine(cohort, tmp_path, kind):
    path = _copies(cohort, tmp_path)[kind]
    params = Preprocessing(image_size=16)
    source = nib.load(path)
    values = np.random.default_rng(0).normal(size=params.size).astype(np.float32)
    saved = nib.load(save_on_source_grid(values, source_grid(path, params), tmp_path / f"{kind}_ig.nii.gz"))
    assert saved.shape == source.shape
    np.testing.assert_allclose(saved.affine, source.affine, atol=1e-5)
    # Coarser network than file: every source voxel still takes a value of the map (or 0 outside the box).
    assert set(np.unique(saved.get_fdata(dtype=np.float32))) <= set(values.ravel()) | {0.0}
    brain = np.asarray(source.dataobj) != 0
    assert (saved.get_fdata()[brain] != 0).all()


def test_class_means_and_their_reference_label_map():
    maps = ClassMaps(num_classes=3, labelmap=True)
    ones, twos = np.ones((4, 4, 4), np.float32), 2 * np.ones((4, 4, 4), np.float32)
    labels = [np.full((4, 4, 4), v, np.uint8) for v in (5, 5, 7)]
    for values, volume in zip((ones, twos, twos), labels):
        maps.add(2, torch.from_numpy(values), torch.from_numpy(volume))
    np.testing.assert_allclose(maps.mean(2), np.full((4, 4, 4), 5 / 3), rtol=1e-6)
    assert (maps.reference(2) == 5).all() and maps.counts == [0, 0, 3]
    assert maps.mean(0) is None and maps.reference(0) is None
