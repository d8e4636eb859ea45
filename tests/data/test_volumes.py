"""Regional volumes: counted on the full-resolution file, to the voxel, and robust outlier scores."""

import nibabel as nib
import numpy as np
import pytest

from adni_lightning.data.cache import VolumeCache
from adni_lightning.data.labels import FREESURFER_LUT
from adni_lightning.data.manifest import ManifestSpec, build_manifest
from adni_lightning.data.preprocess import Preprocessing, UnknownLabelError
from adni_lightning.data.volume_io import read_volume
from adni_lightning.data.volumes import (
    ID_COLUMNS,
    LABELLED,
    NON_TISSUE,
    TOTAL_BRAIN,
    label_counts,
    regional_volumes,
    robust_z,
    structure_columns,
    volume_outliers,
)
from tests.conftest import write_mgz


def _direct_counts(path) -> dict[int, int]:
    """Voxels per id, read by nibabel alone."""
    ids, counts = np.unique(np.asarray(nib.load(path).dataobj), return_counts=True)
    return {int(i): int(n) for i, n in zip(ids, counts, strict=True)}


def test_label_counts_of_the_big_endian_fortran_view_match_nibabel(cohort):
    path = next(cohort.glob("*/*.mgz"))
    data, _ = read_volume(path)
    assert data.dtype == np.dtype(">i2") and data.flags.f_contiguous and not data.flags.c_contiguous
    counts = label_counts(data)
    assert {i: int(n) for i, n in enumerate(counts) if n} == _direct_counts(path)


@pytest.mark.parametrize(
    ("value", "dtype", "message"),
    [(-3, np.int16, "-3"), (9999, np.int16, "9999"), (6, np.int16, ": 6$"), (17.5, np.float32, "not integers")],
)
def test_label_counts_reject_what_no_label_map_holds(value, dtype, message):
    data = np.full((6, 6, 6), 2, dtype=dtype)
    data[1, 2, 3] = value
    with pytest.raises(UnknownLabelError, match=message):
        label_counts(data)


def test_integral_floats_are_counted():
    data = np.zeros((4, 4, 4), dtype=np.float32)
    data[0, :2] = 17
    assert label_counts(data)[[0, 17]].tolist() == [56, 8]


def test_regional_volumes_equal_a_direct_count_of_each_file(cohort, tmp_path):
    manifest = build_manifest(ManifestSpec(data_dir=cohort))
    cache = VolumeCache(tmp_path / "cache", Preprocessing("labelmap", (8, 8, 8)))
    cache.build(zip(manifest["image_id"], manifest["path"], strict=True))
    volumes = regional_volumes(manifest, cache)
    assert list(volumes.columns[: len(ID_COLUMNS)]) == list(ID_COLUMNS)
    assert volumes["group"].tolist() == manifest["label"].tolist()
    present = set().union(*(_direct_counts(p) for p in manifest["path"])) - {0}
    assert structure_columns(volumes) == [FREESURFER_LUT[i][0] for i in sorted(present)]
    for row in (0, 7, len(manifest) - 1):
        path = manifest.at[row, "path"]
        voxel = 8.0**3  # 256 mm field of view on 32 voxels
        assert abs(np.linalg.det(nib.load(path).affine[:3, :3])) == pytest.approx(voxel, rel=1e-12)
        counts = _direct_counts(path)
        for label in sorted(present):
            assert volumes.at[row, FREESURFER_LUT[label][0]] == counts.get(label, 0) * voxel
        labelled = sum(n for i, n in counts.items() if i != 0)
        assert volumes.at[row, LABELLED] == labelled * voxel
        assert volumes.at[row, TOTAL_BRAIN] == (labelled - sum(counts.get(i, 0) for i in NON_TISSUE)) * voxel


def test_one_mm_volumes_are_voxel_counts(tmp_path):
    data = np.zeros((10, 10, 10), dtype=np.int16)
    data[2:5, 2:6, 2:7], data[6, 6, 6] = 17, 4
    path = write_mgz(tmp_path / "g" / "I1.mgz", data)
    cache = VolumeCache(tmp_path / "cache", Preprocessing("labelmap", (4, 4, 4)))
    cache.build([("I1", path)])
    assert cache.volumes("I1", path) == {17: 60.0, 4: 1.0}


def test_robust_z_removes_age_and_flags_only_the_outlier():
    rng = np.random.default_rng(0)
    age = np.linspace(60, 90, 30)
    trend = 4000 - 30 * age + rng.normal(0, 20, 30)
    trend[11] += 400
    constant = np.full(30, 512.0)
    z = robust_z(np.column_stack([trend, constant]), age)
    assert np.flatnonzero(np.abs(z[:, 0]) > 4).tolist() == [11]
    assert np.abs(np.delete(z[:, 0], 11)).max() < 3.5
    assert not z[:, 1].any()
    # without the age fit the old images' volumes would be far off the median
    assert np.abs(robust_z(trend[:, None], np.zeros(30))).max() < np.abs(z[11, 0]) / 2


def test_volume_outliers_name_image_structure_volume_and_z():
    import pandas as pd

    rng = np.random.default_rng(1)
    n = 20
    frame = pd.DataFrame(
        {
            "image_id": [f"I{i}" for i in range(n)],
            "subject": [f"S{i}" for i in range(n)],
            "group": "CN",
            "age": rng.uniform(60, 90, n),
            "sex": "F",
            "visit": "sc",
            "Left-Hippocampus": rng.normal(4000, 300, n),
            "Left-Amygdala": rng.normal(1500, 100, n),
        }
    )
    frame.loc[5, "Left-Hippocampus"] = 20000.0
    frame[TOTAL_BRAIN] = frame[LABELLED] = frame["Left-Hippocampus"] + frame["Left-Amygdala"]
    found = volume_outliers(frame, threshold=4)
    assert set(found["image_id"]) == {"I5"}
    assert set(found["structure"]) == {"Left-Hippocampus", TOTAL_BRAIN, LABELLED}
    assert found.loc[found["structure"] == "Left-Hippocampus", "volume_mm3"].item() == 20000.0
    assert (found["z"] > 4).all()
