"""Reading FastSurfer/FreeSurfer volumes (.mgz, .mgh, .nii, .nii.gz) with nibabel.

Two entry points with different costs: :func:`read_header` reads a few hundred bytes (used to validate a
whole cohort up front), :func:`read_volume` decodes the voxels once (used to build the cache). ``nib.load``
on an ``.mgz`` decompresses the file to reach its footer and again to read the voxels; here the file is
decompressed once, with ISA-L's inflate (about 1.9x zlib's on these files), and the voxels are a view of it.
"""

from __future__ import annotations

import errno
import gzip
import io
import os
import stat
import struct
import zlib
from dataclasses import dataclass
from pathlib import Path
from typing import cast

import nibabel as nib
import numpy as np
from isal import isal_zlib
from nibabel.arrayproxy import ArrayProxy
from nibabel.freesurfer.mghformat import MGHHeader
from nibabel.spatialimages import SpatialImage

#: Suffixes this module can read, longest first so ``.nii.gz`` wins over ``.gz``.
SUPPORTED_SUFFIXES = (".nii.gz", ".nii", ".mgz", ".mgh")

# Bytes that may follow the voxels in the decompressed stream (MGH optional tags), so the gzip size field
# of an intact file lies in [end of voxels, end of voxels + this].
_MAX_TRAILER = 1 << 20


class VolumeError(ValueError):
    """A volume file that cannot be used; the message names the file and the reason."""

    def __init__(self, path: str | Path, reason: str) -> None:
        super().__init__(f"{path}: {reason}")
        self.path = str(path)
        self.reason = reason


@dataclass(frozen=True)
class VolumeHeader:
    """What the header says about the voxels, without reading them."""

    shape: tuple[int, ...]
    dtype: np.dtype
    zooms: tuple[float, ...]
    affine: np.ndarray


def _suffix(path: Path) -> str:
    name = path.name.lower()
    for suffix in SUPPORTED_SUFFIXES:
        if name.endswith(suffix):
            return suffix
    raise VolumeError(path, f"unsupported file type (expected one of {', '.join(SUPPORTED_SUFFIXES)})")


def file_problem(path: str | Path) -> str | None:
    """Why ``path`` cannot be opened as a volume file, or ``None`` for a regular file.

    ``Path.is_file`` answers ``False`` alike for a missing file, a folder, a symbolic link loop or a link to
    nothing, and a user who is told "file not found" looks for the wrong fault; this names each.
    """
    path = Path(path)
    try:
        mode = path.stat().st_mode
    except OSError as err:
        if err.errno == errno.ELOOP:
            return "symbolic link loop"
        if err.errno == errno.ENOENT and path.is_symlink():
            return f"broken symbolic link (to {os.readlink(path)}, which does not exist)"
        if err.errno == errno.ENOENT:
            return "file not found"
        return f"cannot read ({err.strerror})"
    if stat.S_ISDIR(mode):
        return "is a directory"
    if not stat.S_ISREG(mode):
        return "not a regular file"
    return None


def _gzip_isize(path: Path) -> int:
    """Uncompressed size modulo 2**32, from the last four bytes of a gzip member."""
    with open(path, "rb") as f:
        f.seek(-4, 2)
        return struct.unpack("<I", f.read(4))[0]


def _check_complete(path: Path, data_end: int, compressed: bool) -> None:
    """Detect a truncated file from its size alone (gzip: the trailer's size field)."""
    if compressed:
        isize = _gzip_isize(path)
        if not data_end % 2**32 <= isize <= data_end % 2**32 + _MAX_TRAILER:
            raise VolumeError(path, "truncated or corrupt gzip stream (size field does not match the header)")
    elif path.stat().st_size < data_end:
        raise VolumeError(path, f"truncated: {path.stat().st_size} bytes, header needs {data_end}")


#: isal's stub declares ``error`` an instance of Exception; at run time it is the exception class raised.
_ISAL_ERROR = cast("type[Exception]", isal_zlib.error)


def _load_spatial(path: Path) -> SpatialImage:
    """``nib.load``, typed as what it returns for the suffixes read here (NIfTI): an image with voxels and an affine."""
    return cast(SpatialImage, nib.load(path))


def read_header(path: str | Path) -> VolumeHeader:
    """Read and check the header; raise :class:`VolumeError` for a missing, unreadable or truncated file."""
    path = Path(path)
    suffix = _suffix(path)
    problem = file_problem(path)
    if problem:
        raise VolumeError(path, problem)
    if path.stat().st_size == 0:
        raise VolumeError(path, "empty file (0 bytes)")
    try:
        if suffix in (".mgz", ".mgh"):
            opener = gzip.open if suffix == ".mgz" else open
            with opener(path, "rb") as f:
                header = MGHHeader.from_fileobj(f)
            shape = tuple(int(n) for n in header.get_data_shape())
            offset = header.get_data_offset()
        else:
            img = _load_spatial(path)
            header = img.header
            shape = tuple(int(n) for n in header.get_data_shape())
            offset = int(cast(ArrayProxy, img.dataobj).offset)  # a proxy: nib.load reads no voxels
        dtype = np.dtype(header.get_data_dtype())
        zooms = tuple(float(z) for z in header.get_zooms()[:3])
        affine = np.asarray(header.get_best_affine() if hasattr(header, "get_best_affine") else header.get_affine())
    except VolumeError:
        raise
    except (EOFError, TypeError) as err:  # nibabel: TypeError when the buffer is shorter than a header
        raise VolumeError(path, "truncated: the file ends inside its header") from err
    except (OSError, zlib.error, nib.filebasedimages.ImageFileError, ValueError) as err:
        raise VolumeError(path, f"unreadable header ({type(err).__name__}: {err})") from err
    if len(shape) == 4 and shape[3] == 1:
        shape = shape[:3]
    if len(shape) != 3:
        raise VolumeError(path, f"expected a 3D volume, header says shape {shape}")
    _check_complete(path, offset + int(np.prod(shape)) * dtype.itemsize, suffix in (".mgz", ".nii.gz"))
    return VolumeHeader(shape=shape, dtype=dtype, zooms=zooms, affine=affine)


def read_volume(path: str | Path) -> tuple[np.ndarray, np.ndarray]:
    """The voxels as stored (dtype and byte order of the file, possibly a read-only view) and the voxel→RAS affine.

    For ``.mgz`` the file is decompressed once and the voxels are a view of that buffer: no copy of the
    256³ grid is made before :func:`~adni_lightning.data.preprocess.preprocess` picks the voxels it keeps.
    Callers that hand the array to torch must convert it to native byte order first.
    """
    path = Path(path)
    suffix = _suffix(path)
    if path.is_file() and path.stat().st_size == 0:
        raise VolumeError(path, "empty file (0 bytes)")
    try:
        if suffix == ".mgz":
            buffer = isal_zlib.decompress(path.read_bytes(), wbits=31)  # one gzip member, as FreeSurfer writes
            header = MGHHeader.from_fileobj(io.BytesIO(buffer))
            shape = tuple(int(n) for n in header.get_data_shape())
            count = int(np.prod(shape))
            data = np.frombuffer(buffer, header.get_data_dtype(), count, header.get_data_offset()).reshape(
                shape, order="F"
            )
            affine = header.get_affine()
        else:
            img = _load_spatial(path)
            data, affine = np.asanyarray(img.dataobj), img.affine
    except (
        OSError,
        EOFError,
        TypeError,
        zlib.error,
        _ISAL_ERROR,
        nib.filebasedimages.ImageFileError,
        ValueError,
    ) as err:
        raise VolumeError(path, f"cannot decode voxels ({type(err).__name__}: {err})") from err
    if data.ndim == 4 and data.shape[3] == 1:
        data = data[..., 0]
    if data.ndim != 3:
        raise VolumeError(path, f"expected a 3D volume, got shape {data.shape}")
    return data, np.asarray(affine, dtype=np.float64)


def to_canonical(data: np.ndarray, affine: np.ndarray) -> tuple[np.ndarray, tuple[float, float, float]]:
    """Permute/flip axes (no resampling) so axis 0 → Right, 1 → Anterior, 2 → Superior, as RAS+.

    FastSurfer writes LIA, most NIfTI files LPS/RAS: after this, the same brain gives the same array whatever
    the file format, and axis 0 is always the left–right axis. Returns a view (nothing is copied) and the voxel
    sizes in the new axis order.
    """
    ornt = nib.orientations.io_orientation(affine)
    transform = nib.orientations.ornt_transform(ornt, nib.orientations.axcodes2ornt("RAS"))
    canonical = nib.orientations.apply_orientation(data, transform)
    zooms = np.sqrt((affine[:3, :3] ** 2).sum(axis=0))
    order = transform[:, 0].astype(int)
    new_zooms = np.empty(3)
    new_zooms[order] = zooms
    return canonical, (float(new_zooms[0]), float(new_zooms[1]), float(new_zooms[2]))
