import gzip
from pathlib import Path

import nibabel as nib
import numpy as np
import pytest

from adni_lightning.data.volume_io import VolumeError, read_header, read_volume, to_canonical
from tests.conftest import LIA_1MM, write_mgz

NIBABEL_DATA = Path(nib.__file__).parent / "tests" / "data"


def _asymmetric_labels(size: int = 16) -> np.ndarray:
    """LIA label map: left hippocampus (17) only, low on the inferior axis, anterior."""
    data = np.zeros((size,) * 3, dtype=np.int16)
    data[2:5, 10:12, 11:14] = 17
    data[8:12, 4:8, 3:6] = 4
    return data


def test_read_header_of_a_fastsurfer_like_file(tmp_path):
    path = write_mgz(tmp_path / "I1.nii_aseg_deep.mgz", _asymmetric_labels(16))
    header = read_header(path)
    assert header.shape == (16, 16, 16)
    assert header.dtype == np.dtype(">i2")
    assert header.zooms == (1.0, 1.0, 1.0)
    assert nib.aff2axcodes(header.affine) == ("L", "I", "A")


def test_read_volume_is_a_view_of_the_stored_int16_identical_to_nibabel(tmp_path):
    data = _asymmetric_labels(16)
    path = write_mgz(tmp_path / "a.mgz", data)
    decoded, affine = read_volume(path)
    assert decoded.dtype == np.dtype(">i2")  # as MGH stores it: no copy, no byte swap yet
    assert not decoded.flags.writeable and decoded.base is not None
    np.testing.assert_array_equal(decoded, data)
    np.testing.assert_array_equal(decoded, np.asarray(nib.load(path).dataobj))
    np.testing.assert_allclose(affine, nib.load(path).affine)


def test_truncated_unreadable_and_missing_files_are_named(tmp_path):
    path = write_mgz(tmp_path / "t.mgz", np.random.default_rng(0).integers(0, 60, (24, 24, 24)))
    blob = path.read_bytes()
    path.write_bytes(blob[: len(blob) // 2])
    with pytest.raises(VolumeError, match="truncated") as err:
        read_header(path)
    assert err.value.path == str(path)
    garbage = tmp_path / "g.mgz"
    garbage.write_bytes(b"this is not gzip at all")
    with pytest.raises(VolumeError, match="unreadable header"):
        read_header(garbage)
    with pytest.raises(VolumeError, match="file not found"):
        read_header(tmp_path / "missing.mgz")
    with pytest.raises(VolumeError, match="unsupported file type"):
        read_header(tmp_path / "x.png")


def test_an_empty_file_and_a_header_cut_short_inside_gzip_are_named_not_a_type_error(tmp_path):
    empty = tmp_path / "empty.mgz"
    empty.write_bytes(b"")
    for read in (read_header, read_volume):
        with pytest.raises(VolumeError, match="empty file \\(0 bytes\\)") as err:
            read(empty)
        assert err.value.path == str(empty)
    short = tmp_path / "short.mgz"
    short.write_bytes(gzip.compress(b"\x00" * 10))  # a valid gzip stream holding 10 of the header's 284 bytes
    with pytest.raises(VolumeError, match="truncated: the file ends inside its header"):
        read_header(short)
    with pytest.raises(VolumeError, match="cannot decode voxels"):
        read_volume(short)


def test_a_corrupt_gzip_body_passes_the_header_check_and_fails_when_decoded(tmp_path):
    path = write_mgz(tmp_path / "b.mgz", np.random.default_rng(0).integers(0, 60, (24, 24, 24)))
    blob = bytearray(path.read_bytes())
    blob[-8] ^= 0xFF  # the gzip trailer's CRC32 of the body: a body that does not decompress to what was written
    path.write_bytes(bytes(blob))
    assert read_header(path).shape == (24, 24, 24)  # size field and header intact: only decoding can tell
    with pytest.raises(VolumeError, match="cannot decode voxels .*checksum"):
        read_volume(path)


def test_truncated_uncompressed_nifti(tmp_path):
    path = tmp_path / "a.nii"
    nib.save(nib.Nifti1Image(np.ones((8, 8, 8), np.float32), np.eye(4)), path)
    path.write_bytes(path.read_bytes()[:-100])
    with pytest.raises(VolumeError, match="truncated"):
        read_header(path)


def test_nibabel_shipped_mgz_a_file_we_did_not_write():
    """nibabel's own test.mgz: 3x4x5 with two frames of float32, SAR orientation."""
    path = NIBABEL_DATA / "test.mgz"
    with pytest.raises(VolumeError, match=r"expected a 3D volume, header says shape \(3, 4, 5, 2\)"):
        read_header(path)
    with gzip.open(path) as f:
        assert len(f.read()) > 284 + 3 * 4 * 5 * 2 * 4  # complete file: our size check must not fire on it
    img = nib.load(path)
    frame = np.asarray(img.dataobj)[..., 0]
    canonical, zooms = to_canonical(frame, img.affine)
    reference = nib.as_closest_canonical(nib.Nifti1Image(frame, img.affine))
    np.testing.assert_array_equal(canonical, reference.get_fdata(dtype=np.float32))
    assert zooms == pytest.approx(tuple(float(z) for z in reference.header.get_zooms()), rel=1e-6)


def test_nibabel_shipped_nifti_headers_read_and_match():
    for name, shape in (("anatomical.nii", (33, 41, 25)), ("standard.nii.gz", (4, 5, 7))):
        header = read_header(NIBABEL_DATA / name)
        assert header.shape == shape
        np.testing.assert_allclose(header.affine, nib.load(NIBABEL_DATA / name).affine)


def test_mgz_lia_and_nifti_ras_of_the_same_brain_agree(tmp_path):
    data = _asymmetric_labels(16)
    mgz = write_mgz(tmp_path / "a.mgz", data)
    ras = nib.as_closest_canonical(nib.MGHImage(data, LIA_1MM))
    nii = tmp_path / "a.nii.gz"
    nib.save(nib.Nifti1Image(np.asarray(ras.dataobj), ras.affine), nii)
    a, zooms_a = to_canonical(*read_volume(mgz))
    b, zooms_b = to_canonical(*read_volume(nii))
    np.testing.assert_array_equal(a, b)
    assert zooms_a == zooms_b == (1.0, 1.0, 1.0)
    # LIA axis 0 runs towards Left, RAS axis 0 towards Right: LIA indices 2..4 become 13..11, and the
    # other two axes are swapped (LIA's I→S flip lands on RAS axis 2, A on axis 1).
    assert sorted(set(np.nonzero(a == 17)[0].tolist())) == [11, 12, 13]
    assert sorted(set(np.nonzero(a == 17)[2].tolist())) == [15 - 11, 15 - 10]
    assert sorted(set(np.nonzero(a == 17)[1].tolist())) == [11, 12, 13]
