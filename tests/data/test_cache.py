import os
import shutil
import signal
import subprocess
import sys
import tempfile
import time
from pathlib import Path

import nibabel as nib
import numpy as np
import pytest

from adni_lightning.data.cache import CacheBuildError, CacheDirError, VolumeCache
from adni_lightning.data.labels import KNOWN_LABELS
from adni_lightning.data.manifest import ManifestSpec, build_manifest
from adni_lightning.data.preprocess import Preprocessing
from tests.conftest import LIA_1MM, write_mgz
from tests.helpers import as_nobody

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


def test_entries_record_their_source_geometry_and_entries_of_older_formats_are_rebuilt(tmp_path, monkeypatch):
    import json

    import adni_lightning.data.cache as cache_module

    source = write_mgz(tmp_path / "a.mgz", _brain())
    cache = VolumeCache(tmp_path / "cache", Preprocessing("labelmap", (8, 8, 8)))
    entry = cache.build([("I1", source)])["I1"]
    geometry = cache.geometry(entry)
    assert geometry.shape == (32, 32, 32) and geometry.canonical_shape == (32, 32, 32)
    np.testing.assert_array_equal(np.asarray(geometry.affine), LIA_1MM)
    np.testing.assert_array_equal(np.asarray(geometry.to_file), [[0, -1], [2, 1], [1, -1]])  # R→L, A→A, S→I
    assert geometry.start == (0.0, 0.0, 0.0) and geometry.extent == (32.0, 32.0, 32.0)  # 24 brain voxels + 2 × 4 mm

    sidecar = entry.with_suffix(".json")
    meta = json.loads(sidecar.read_text())
    sidecar.write_text(json.dumps({k: v for k, v in meta.items() if k != "source"}))  # a sidecar of format 2
    assert not cache.is_valid(entry)
    with pytest.raises(FileNotFoundError, match=f"no source geometry recorded in {sidecar}"):
        cache.geometry(entry)
    cache.build([("I1", source)])
    assert cache.geometry(entry) == geometry
    monkeypatch.setattr(cache_module, "_CACHE_FORMAT", 2)
    assert cache.entry_path("I1", source) != entry  # an entry written by format 2 has another name: never read


def test_intensity_inputs_get_no_volumes_and_no_error(tmp_path):
    import json

    rng = np.random.default_rng(0)
    source = tmp_path / "orig.mgz"
    nib.save(nib.MGHImage((rng.random((16, 16, 16)) * 200).astype(np.float32), np.eye(4)), source)
    cache = VolumeCache(tmp_path / "cache", Preprocessing("intensity", (8, 8, 8)))
    entry = cache.build([("I1", source)])["I1"]
    assert set(json.loads(entry.with_suffix(".json").read_text())) == {"crc32", "source"}
    assert cache.is_valid(entry)
    with pytest.raises(ValueError, match="label maps only"):
        cache.volumes("I1", source)


def _corrupt_crc(path) -> None:
    """Flip the gzip trailer's CRC32: the header reads, the body no longer decodes to what was written."""
    blob = bytearray(path.read_bytes())
    blob[-8] ^= 0xFF
    path.write_bytes(bytes(blob))


def _damaged_sources(tmp_path):
    """(image_id, source) of a good file and of one of each fault found only when the voxels are decoded."""
    good = write_mgz(tmp_path / "good.mgz", _brain())
    empty = tmp_path / "empty.mgz"
    empty.write_bytes(b"")
    body = write_mgz(tmp_path / "body.mgz", _brain())
    _corrupt_crc(body)
    fractional = tmp_path / "fractional.mgz"
    nib.save(nib.MGHImage(_brain().astype(np.float32) + 0.5, LIA_1MM), fractional)
    foreign = _brain()
    foreign[15, 17, 19] = 9999
    return [
        ("I1", good),
        ("I2", empty),
        ("I3", body),
        ("I4", fractional),
        ("I5", write_mgz(tmp_path / "f.mgz", foreign)),
    ]


INTENSITY = "this is an intensity image, not a label map"


@pytest.mark.parametrize("num_workers", [0, 2])
def test_decode_faults_come_back_as_data_all_of_them_and_are_recorded(tmp_path, num_workers):
    items = _damaged_sources(tmp_path)
    cache = VolumeCache(tmp_path / "cache", Preprocessing("labelmap", (8, 8, 8)))
    entries, faults = cache.collect(items, num_workers=num_workers)
    assert list(entries) == ["I1"]
    reasons = {f.image_id: (f.path, f.reason, f.kind) for f in faults}
    assert reasons == {
        "I2": (str(items[1][1]), "empty file (0 bytes)", "content"),
        "I3": (str(items[2][1]), reasons["I3"][1], "content"),
        "I4": (
            str(items[3][1]),
            "voxel values are not integers: this is an intensity image, not a label map",
            "content",
        ),
        "I5": (str(items[4][1]), "label ids not in the FreeSurfer aseg/DKT table: 9999", "content"),
    }
    assert "checksum" in reasons["I3"][1]
    again = VolumeCache(tmp_path / "cache", Preprocessing("labelmap", (8, 8, 8)))  # another process, a later run
    assert sorted(again.recorded_faults(items), key=lambda f: f.image_id) == sorted(faults, key=lambda f: f.image_id)


def test_a_recorded_fault_is_forgotten_when_the_file_changes_or_decodes(tmp_path):
    items = _damaged_sources(tmp_path)
    cache = VolumeCache(tmp_path / "cache", Preprocessing("labelmap", (8, 8, 8)))
    cache.collect(items)
    write_mgz(items[2][1], _brain())  # the corrupt body replaced by a good file: another identity, another key
    assert {f.image_id for f in cache.recorded_faults(items)} == {"I2", "I4", "I5"}
    entries, faults = cache.collect(items)
    assert set(entries) == {"I1", "I3"} and {f.image_id for f in faults} == {"I2", "I4", "I5"}


def test_a_file_that_cannot_be_opened_is_reported_but_not_recorded(tmp_path):
    folder = tmp_path / "I9.mgz"
    folder.mkdir()  # opening it fails, as a permission error would: not a fault of its bytes
    cache = VolumeCache(tmp_path / "cache", PARAMS)
    _, [fault] = cache.collect([("I9", folder)])
    assert fault.kind == "unreadable" and fault.reason.startswith("cannot read (Is a directory")
    assert cache.recorded_faults([("I9", folder)]) == []


def test_build_lists_every_fault_one_line_each(tmp_path):
    items = _damaged_sources(tmp_path)
    with pytest.raises(CacheBuildError) as err:
        VolumeCache(tmp_path / "cache", Preprocessing("labelmap", (8, 8, 8))).build(items, num_workers=2)
    heading, *lines = str(err.value).splitlines()
    assert heading == "4 volume(s) could not be preprocessed:"
    assert [line.split(":")[0] for line in lines] == ["image I2", "image I3", "image I4", "image I5"]


def test_a_read_only_cache_directory_is_named_with_the_option_that_moves_it(cohort):
    base = Path(tempfile.mkdtemp())  # outside pytest's root-only folders, so that nobody may look in
    try:
        base.chmod(0o755)
        (base / "src").mkdir()
        items = [(image_id, Path(shutil.copy(path, base / "src"))) for image_id, path in _items(cohort)[:2]]
        root = base / "cache"
        root.mkdir()
        root.chmod(0o555)
        message = as_nobody(lambda: VolumeCache(root, PARAMS).build(items, num_workers=2))
    finally:
        shutil.rmtree(base)
    assert message == (
        f"cache directory {root} cannot be written (Permission denied): point data.cache_dir at a writable folder"
    )


def test_a_cache_directory_that_cannot_be_created_is_named_before_any_decoding(cohort, tmp_path, monkeypatch):
    import adni_lightning.data.cache as cache_module

    (tmp_path / "file").write_text("not a folder")
    root = tmp_path / "file" / "cache"
    monkeypatch.setattr(cache_module, "read_volume", lambda path: pytest.fail("decoded before the check"))
    with pytest.raises(CacheDirError) as err:
        VolumeCache(root, PARAMS).build(_items(cohort)[:2])
    assert str(err.value) == (
        f"cache directory {root} cannot be written (Not a directory): point data.cache_dir at a writable folder"
    )


def _dead_pid() -> int:
    child = subprocess.Popen([sys.executable, "-c", "pass"])
    child.wait()
    return child.pid


def test_temporaries_of_dead_writers_are_removed_and_never_read(cohort, tmp_path):
    cache = VolumeCache(tmp_path / "cache", PARAMS)
    items = _items(cohort)[:2]
    entries = cache.build(items)
    entry = entries[items[0][0]]
    good = np.load(entry)
    dead = entry.parent / f".{entry.name}.{_dead_pid()}.abc123_x.tmp"
    dead.write_bytes(b"\x93NUMPY half written")
    alive = entry.parent / f".{entry.name}.{os.getpid()}.def456_y.tmp"  # a writer still at work
    alive.write_bytes(b"\x93NUMPY being written")
    entry.write_bytes(entry.read_bytes()[:-10])  # torn under the real name (no fsync)
    assert cache.build(items)[items[0][0]] == entry
    np.testing.assert_array_equal(np.load(entry), good)
    assert not dead.exists() and alive.exists()


def test_a_worker_polls_for_its_parent_where_the_kernel_cannot_kill_it(tmp_path):
    code = f"from adni_lightning.data.cache import _exit_when_gone; _exit_when_gone({_dead_pid()}, 0.01); print('x')"
    done = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, timeout=60, env=_env())
    assert done.returncode == 1 and done.stdout == ""


_SLOW_BUILD = """
import sys
import tempfile
import time
from pathlib import Path

import adni_lightning.data.cache as cache
from adni_lightning.data.preprocess import Preprocessing

_read = cache.read_volume


def slow_read(path):  # at module level, so the pool's workers read slowly too
    time.sleep(0.3)
    return _read(path)


cache.read_volume = slow_read

if __name__ == "__main__":
    items = [tuple(line.split("\\t")) for line in Path(sys.argv[2]).read_text().splitlines()]
    cache.VolumeCache(sys.argv[1], Preprocessing("labelmap", (16, 16, 16))).build(items, num_workers=2)
"""


def _env() -> dict[str, str]:
    return {**os.environ, "PYTHONPATH": str(Path(__file__).parents[2])}


def _live_processes_of_session(session: int) -> list[int]:
    """Pids of the processes (zombies aside) in session ``session``, read from /proc."""
    pids = []
    for stat in Path("/proc").glob("[0-9]*/stat"):
        try:
            fields = stat.read_text().rsplit(")", 1)[1].split()
        except OSError:
            continue
        if int(fields[3]) == session and fields[0] not in "ZX":
            pids.append(int(stat.parent.name))
    return pids


@pytest.mark.skipif(not Path("/proc/self/stat").exists(), reason="reads processes from /proc")
@pytest.mark.parametrize("sig", [signal.SIGKILL, signal.SIGTERM, signal.SIGINT], ids=lambda s: s.name)
def test_an_interrupted_build_leaves_no_process_and_no_trusted_half_entry(cohort, tmp_path, sig):
    items = _items(cohort)
    listing = tmp_path / "items.tsv"
    listing.write_text("\n".join(f"{i}\t{p}" for i, p in items))
    script = tmp_path / "slow_build.py"
    script.write_text(_SLOW_BUILD)
    root = tmp_path / "cache"
    child = subprocess.Popen(
        [sys.executable, str(script), str(root), str(listing)],
        start_new_session=True,  # its session holds it and every process it starts
        # Ctrl-C as in an interactive shell, also when this suite runs as a background job (SIGINT ignored there,
        # and inherited as ignored).
        preexec_fn=lambda: signal.signal(signal.SIGINT, signal.SIG_DFL),
        env=_env(),
        stderr=subprocess.DEVNULL,
    )
    try:
        deadline = time.monotonic() + 120
        while not list(root.glob("*.npy")) or len(_live_processes_of_session(child.pid)) < 3:
            assert child.poll() is None and time.monotonic() < deadline, "the build never ran with its 2 workers"
            time.sleep(0.02)
        os.kill(child.pid, sig)  # the parent alone, as a scheduler or the OOM killer would
        child.wait(timeout=60)
        deadline = time.monotonic() + 10
        while _live_processes_of_session(child.pid) and time.monotonic() < deadline:
            time.sleep(0.05)
        assert _live_processes_of_session(child.pid) == []
    finally:
        for pid in _live_processes_of_session(child.pid):
            os.kill(pid, signal.SIGKILL)
    assert 0 < len(list(root.glob("*.npy"))) < len(items)  # interrupted mid-build
    cache = VolumeCache(root, PARAMS)
    entries = cache.build(items)
    reference = VolumeCache(tmp_path / "reference", PARAMS).build(items)
    for image_id, entry in entries.items():
        np.testing.assert_array_equal(np.load(entry), np.load(reference[image_id]))
    assert not list(root.glob(".*.tmp"))
