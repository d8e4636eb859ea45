import os
import time

import nibabel as nib
import numpy as np
import pytest

from adni_lightning.data.cache import CacheBuildError, VolumeCache
from adni_lightning.data.labels import KNOWN_LABELS
from adni_lightning.data.manifest import ManifestSpec, build_manifest
from adni_lightning.data.preprocess import Preprocessing
from tests.conftest import write_mgz

PARAMS = Preprocessing("labelmap", (16, 16, 16))


def _items(cohort):
    manifest = build_manifest(ManifestSpec(data_dir=cohort))
    return list(zip(manifest["image_id"], manifest["path"]))


def test_build_writes_compact_entries_and_reuses_them(cohort, tmp_path):
    cache = VolumeCache(tmp_path / "cache", PARAMS)
    items = _items(cohort)[:6]
    entries = cache.build(items)
    for (_, source), entry in zip(items, entries.values()):
        array = np.load(entry, mmap_mode="r")
        assert isinstance(array, np.memmap) and array.dtype == np.uint8 and array.shape == (16, 16, 16)
        assert set(KNOWN_LABELS[np.unique(array)]) <= set(np.unique(np.asarray(nib.load(source).dataobj)))
    stamps = {e: e.stat().st_mtime_ns for e in entries.values()}
    time.sleep(0.01)
    assert cache.build(items) == entries
    assert {e: e.stat().st_mtime_ns for e in entries.values()} == stamps  # nothing rebuilt
    assert not list((tmp_path / "cache").glob("*.tmp"))


@pytest.mark.parametrize("damage", ["truncate", "flip_byte", "drop_sidecar"])
def test_a_corrupt_entry_is_rebuilt_not_trusted(cohort, tmp_path, damage):
    cache = VolumeCache(tmp_path / "cache", PARAMS)
    items = _items(cohort)[:2]
    entry = cache.build(items)[items[0][0]]
    good = np.array(np.load(entry, mmap_mode="r"))
    blob = bytearray(entry.read_bytes())
    if damage == "truncate":
        entry.write_bytes(bytes(blob[: len(blob) - 100]))
    elif damage == "flip_byte":
        blob[-50] ^= 0xFF
        entry.write_bytes(bytes(blob))
    else:
        entry.with_suffix(".json").unlink()
    assert not cache.is_valid(entry)
    cache.build(items)
    assert cache.is_valid(entry)
    np.testing.assert_array_equal(np.load(entry, mmap_mode="r"), good)


def test_changed_source_or_parameters_get_new_entries(cohort, tmp_path):
    items = _items(cohort)[:1]
    cache = VolumeCache(tmp_path / "cache", PARAMS)
    first = cache.build(items)[items[0][0]]
    other = VolumeCache(tmp_path / "cache", Preprocessing("labelmap", (12, 12, 12))).build(items)[items[0][0]]
    assert other != first
    source = items[0][1]
    os.utime(source, ns=(time.time_ns(), time.time_ns() + 10**9))
    assert cache.entry_path(*items[0]) != first  # stale: keyed by the source's identity


def test_parallel_build_matches_in_process_build(cohort, tmp_path):
    items = _items(cohort)[:6]
    serial = VolumeCache(tmp_path / "a", PARAMS).build(items, num_workers=0)
    parallel = VolumeCache(tmp_path / "b", PARAMS).build(items, num_workers=2)
    for image_id in serial:
        np.testing.assert_array_equal(np.load(serial[image_id]), np.load(parallel[image_id]))


def test_failures_are_collected_and_name_image_file_and_reason(tmp_path):
    good = write_mgz(tmp_path / "good.mgz", np.full((8, 8, 8), 17))
    foreign = write_mgz(tmp_path / "foreign.mgz", np.full((8, 8, 8), 999))
    with pytest.raises(CacheBuildError) as err:
        VolumeCache(tmp_path / "cache", Preprocessing("labelmap", (4, 4, 4))).build(
            [("I1", good), ("I2", foreign), ("I3", tmp_path / "gone.mgz")]
        )
    message = str(err.value)
    assert "2 volume(s)" in message
    assert "image I2" in message and "foreign.mgz" in message and "999" in message
    assert "image I3" in message and "gone.mgz" in message


def test_real_size_256_fastsurfer_file(tmp_path):
    """A conformed 256³ int16 LIA label map, the size FastSurfer writes, through header check and cache."""
    from adni_lightning.synth import generate_cohort

    generate_cohort(tmp_path / "K1data", subjects=1, size=256, seed=0, second_visit_fraction=0.0, workers=1)
    manifest = build_manifest(ManifestSpec(data_dir=tmp_path / "K1data"))
    [path] = manifest["path"]
    img = nib.load(path)
    assert img.shape == (256, 256, 256) and img.get_data_dtype() == np.dtype(">i2")
    entry = VolumeCache(tmp_path / "cache", Preprocessing("labelmap", (96, 96, 96))).build([("I", path)])["I"]
    cached = np.load(entry)
    ids = KNOWN_LABELS[np.unique(cached)]
    assert {17, 53, 4, 43} <= set(ids.tolist())
    assert set(ids.tolist()) <= set(np.unique(np.asarray(img.dataobj)).tolist())


def _brain(size: int = 32) -> np.ndarray:
    """A blocky label map: white matter with both hippocampi inside, background around."""
    data = np.zeros((size,) * 3, dtype=np.int16)
    data[4:-4, 4:-4, 4:-4] = 2
    data[8:12, 8:14, 8:12], data[20:24, 8:14, 8:12] = 17, 53
    return data


def test_one_voxel_of_an_unknown_id_is_caught_at_full_resolution(tmp_path):
    from adni_lightning.data.preprocess import preprocess
    from adni_lightning.data.volume_io import read_volume

    normal = write_mgz(tmp_path / "normal.mgz", _brain())
    damaged = _brain()
    damaged[15, 17, 19] = 9999
    foreign = write_mgz(tmp_path / "one_voxel.mgz", damaged)
    params = Preprocessing("labelmap", (8, 8, 8))
    preprocess(*read_volume(foreign), params)  # the downsampled grid alone misses the voxel
    with pytest.raises(CacheBuildError) as err:
        VolumeCache(tmp_path / "cache", params).build([("I1", normal), ("I2", foreign)])
    lines = str(err.value).splitlines()[1:]
    assert lines == [f"image I2: {foreign}: label ids not in the FreeSurfer aseg/DKT table: 9999"]
    assert VolumeCache(tmp_path / "cache", params).volumes("I1", normal)[17] == 4 * 6 * 4


def test_label_map_entries_carry_volumes_and_entries_without_are_rebuilt(tmp_path):
    import json

    source = write_mgz(tmp_path / "a.mgz", _brain())
    cache = VolumeCache(tmp_path / "cache", Preprocessing("labelmap", (8, 8, 8)))
    entry = cache.build([("I1", source)])["I1"]
    meta = json.loads(entry.with_suffix(".json").read_text())
    assert meta["voxel_mm3"] == 1.0 and meta["volumes_mm3"] == {"2": 24**3 - 2 * 96.0, "17": 96.0, "53": 96.0}
    entry.with_suffix(".json").write_text(json.dumps({"crc32": meta["crc32"]}))  # a sidecar of format 1
    assert not cache.is_valid(entry)
    cache.build([("I1", source)])
    assert cache.volumes("I1", source) == {2: 24**3 - 192.0, 17: 96.0, 53: 96.0}


def test_intensity_inputs_get_no_volumes_and_no_error(tmp_path):
    import json

    rng = np.random.default_rng(0)
    source = tmp_path / "orig.mgz"
    nib.save(nib.MGHImage((rng.random((16, 16, 16)) * 200).astype(np.float32), np.eye(4)), source)
    cache = VolumeCache(tmp_path / "cache", Preprocessing("intensity", (8, 8, 8)))
    entry = cache.build([("I1", source)])["I1"]
    assert set(json.loads(entry.with_suffix(".json").read_text())) == {"crc32"}
    assert cache.is_valid(entry)
    with pytest.raises(ValueError, match="label maps only"):
        cache.volumes("I1", source)
