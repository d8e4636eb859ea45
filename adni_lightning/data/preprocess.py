"""From a decoded volume to the array the cache stores: canonical orientation, brain crop, resampling.

Label maps hold FreeSurfer ids, which are names, not intensities: they are resampled by nearest neighbour and
stored as a compact uint8 index (see :mod:`adni_lightning.data.labels`), or, with ``label_encoding: occupancy``,
stored as each structure channel's occupancy fraction of every output voxel (:func:`occupancy`): nearest neighbour
keeps or drops a structure's voxels by where the output voxel centres fall, so at 48³ a small structure's volume is
biased and may vanish, while the fractions sum to its full-resolution volume at any size. Intensity volumes are
resampled trilinearly and normalised with robust statistics of the head. :func:`preprocess_recorded` also returns
the :class:`SourceGeometry` of the result (the file's grid, its reorientation and the crop box), which the cache
stores with each entry so that a map at network resolution can be put back on the file's voxels from the record.
"""

from __future__ import annotations

import hashlib
import json
from collections.abc import Mapping
from dataclasses import asdict, dataclass
from typing import Any, Literal

import nibabel as nib
import numpy as np
import torch
import torch.nn.functional as F

from adni_lightning.data.labels import DEFAULT_CHANNELS, channel_lookup, compact_lookup, label_ids
from adni_lightning.data.volume_io import to_canonical
from adni_lightning.errors import OptionError
from adni_lightning.vocabulary import LabelId

InputKind = Literal["labelmap", "intensity"]
LabelEncoding = Literal["nearest", "occupancy"]
Normalisation = Literal["robust", "zscore"]

_TO_COMPACT = compact_lookup()
#: The uint8 value of a whole voxel in an occupancy cache (a fraction f is stored as round(255·f)).
FULL = 255


class UnknownLabelError(ValueError):
    """A label map holds ids that no aseg/DKT map has (e.g. an intensity image passed as ``labelmap``)."""


def as_size(size: int | tuple[int, int, int] | list[int]) -> tuple[int, int, int]:
    """Normalise an int or a (D, H, W) sequence to a 3-tuple of positive ints."""
    dims = (size,) * 3 if isinstance(size, int) else tuple(int(s) for s in size)
    if len(dims) != 3 or min(dims) < 1:
        raise OptionError(f"data.preprocessing.image_size must be a positive int or three positive ints, got {size!r}")
    return dims


@dataclass(frozen=True)
class Preprocessing:
    """What the network sees of a volume (the ``data.preprocessing`` config group).

    Args:
        input_kind: ``labelmap`` (FreeSurfer ids, nearest neighbour) or ``intensity`` (trilinear, normalised).
        image_size: cached and network size, an int or (D, H, W) in RAS order.
        crop: crop to the brain's bounding box (+ ``margin_mm``) before resizing.
        margin_mm: margin kept around the brain when cropping.
        normalise: intensity only: ``robust`` (head percentiles → [0, 1]) or ``zscore`` (the seed's, whole volume).
        channels: label maps only: channel name → FreeSurfer ids one-hot encoded in that channel
            (default :data:`~adni_lightning.data.labels.DEFAULT_CHANNELS`).
        label_encoding: label maps only: ``nearest`` caches the compact label index resampled by nearest neighbour,
            and the channels are one-hot on the device; ``occupancy`` caches per channel the fraction of each output
            voxel its ids fill at full resolution (uint8, round(255·f), shape (C, D, H, W)), so a channel's sum is
            the structure's volume at any size; the network sees f as float.

    Every other field changes the cached array and so enters :meth:`key`. With ``nearest`` the channels are made on
    the device from the cached label index, so changing them reuses the cache, and the key is the one it was before
    ``label_encoding`` existed; with ``occupancy`` the channels are baked into the cache and enter the key with the
    encoding.
    """

    input_kind: InputKind = "labelmap"
    image_size: int | tuple[int, int, int] = 128
    crop: bool = True
    margin_mm: float = 4.0
    normalise: Normalisation = "robust"
    channels: dict[str, list[int]] | None = None
    label_encoding: LabelEncoding = "nearest"

    def __post_init__(self) -> None:
        as_size(self.image_size)
        if self.label_encoding == "occupancy" and not self.labelmap:
            raise OptionError(
                f"data.preprocessing.label_encoding occupancy needs label maps, not input_kind {self.input_kind}: "
                "set data.preprocessing.label_encoding nearest"
            )

    @property
    def size(self) -> tuple[int, int, int]:
        """``image_size`` as (D, H, W)."""
        return as_size(self.image_size)

    @property
    def channel_map(self) -> dict[str, tuple[LabelId, ...]]:
        """``channels``, else the default structure groups."""
        return {name: label_ids(*ids) for name, ids in (self.channels or DEFAULT_CHANNELS).items()}

    @property
    def labelmap(self) -> bool:
        return self.input_kind == "labelmap"

    @property
    def occupancy(self) -> bool:
        """Whether the cache holds occupancy fractions per channel rather than a compact label index."""
        return self.labelmap and self.label_encoding == "occupancy"

    @property
    def cached_shape(self) -> tuple[int, ...]:
        """Shape of a cache entry: (C, D, H, W) occupancy fractions, else (D, H, W)."""
        return (self.in_channels, *self.size) if self.occupancy else self.size

    @property
    def in_channels(self) -> int:
        """Channels of the network input: one per structure group for label maps, one for intensities."""
        return len(self.channel_map) if self.labelmap else 1

    @property
    def dtype(self) -> np.dtype:
        return np.dtype(np.uint8 if self.labelmap else np.float16)

    def contract(self) -> dict[str, object]:
        """What a checkpoint stores of this group: each field as it acts (size as (D, H, W), channels resolved,
        ``None`` for intensities, which have none).
        """
        return {
            "input_kind": self.input_kind,
            "image_size": list(self.size),
            "crop": self.crop,
            "margin_mm": self.margin_mm,
            "normalise": self.normalise,
            "channels": {name: list(ids) for name, ids in self.channel_map.items()} if self.labelmap else None,
            "label_encoding": self.label_encoding if self.labelmap else None,
        }

    def key(self) -> str:
        """The fields that change the cached array; ``nearest`` label maps and intensities keep the key they had
        before ``label_encoding`` existed (their bytes did not change).
        """
        cached = {k: v for k, v in asdict(self).items() if k not in ("channels", "label_encoding")}
        cached["image_size"] = list(self.size)
        if self.occupancy:
            channels = {name: list(ids) for name, ids in self.channel_map.items()}
            cached.update(label_encoding=self.label_encoding, channels=channels)
        return hashlib.sha1(json.dumps(cached, sort_keys=True).encode()).hexdigest()[:12]


def to_compact(data: np.ndarray) -> np.ndarray:
    """FreeSurfer ids → compact uint8 index; raises :class:`UnknownLabelError` listing foreign ids."""
    if not np.issubdtype(data.dtype, np.integer):
        if not np.array_equal(data, np.round(data)):
            raise UnknownLabelError("voxel values are not integers: this is an intensity image, not a label map")
        data = data.astype(np.int64)
    if data.size and (data.min() < 0 or data.max() >= len(_TO_COMPACT)):
        raise _unknown_labels(data)
    compact = _TO_COMPACT[data]
    if (compact < 0).any():
        raise _unknown_labels(data)
    return compact.astype(np.uint8)


def _unknown_labels(data: np.ndarray) -> UnknownLabelError:
    ids = np.unique(data)
    known = (ids >= 0) & (ids < len(_TO_COMPACT))
    known[known] = _TO_COMPACT[ids[known]] >= 0
    shown = ", ".join(str(int(i)) for i in ids[~known][:10])
    return UnknownLabelError(f"label ids not in the FreeSurfer aseg/DKT table: {shown}")


def _foreground(data: np.ndarray, input_kind: InputKind) -> np.ndarray:
    if input_kind == "labelmap":
        # Zero is zero in either byte order: compare the stored bytes without swapping them.
        return data.view(data.dtype.newbyteorder("=")) != 0
    positive = data[data > 0]
    if positive.size == 0:
        return np.zeros(data.shape, dtype=bool)
    return data > 0.1 * np.percentile(positive, 99)


def crop_box(
    mask: np.ndarray, zooms: tuple[float, float, float], size: tuple[int, int, int], margin_mm: float
) -> tuple[np.ndarray, np.ndarray]:
    """Voxel box (start, extent) around the mask whose physical aspect matches ``size``.

    The box is enlarged on its short axes rather than stretched, so output voxels are isotropic and a
    structure keeps its shape; it may reach beyond the array (padded with background).
    """
    zooms_arr = np.asarray(zooms)
    if not mask.any():
        return np.zeros(3), np.asarray(mask.shape, dtype=float)
    nonzero = [np.flatnonzero(mask.any(axis=tuple(a for a in range(3) if a != axis))) for axis in range(3)]
    lo = np.array([n[0] for n in nonzero], dtype=float)
    hi = np.array([n[-1] + 1 for n in nonzero], dtype=float)
    extent_mm = (hi - lo) * zooms_arr + 2 * margin_mm
    mm_per_out = float(np.max(extent_mm / np.asarray(size)))
    box_vox = mm_per_out * np.asarray(size) / zooms_arr
    centre = (lo + hi) / 2
    return centre - box_vox / 2, box_vox


def _nearest_indices(start: float, extent: float, n_out: int, n_in: int) -> tuple[np.ndarray, np.ndarray]:
    """Source voxel of each output voxel centre (nearest neighbour) and whether it lies inside the array."""
    src = np.floor(start + (np.arange(n_out) + 0.5) * extent / n_out).astype(np.int64)
    inside = (src >= 0) & (src < n_in)
    return np.clip(src, 0, n_in - 1), inside


def resample_nearest(data: np.ndarray, start: np.ndarray, extent: np.ndarray, size: tuple[int, int, int]) -> np.ndarray:
    """Nearest-neighbour resampling of the box: every output value is a value of the input (or 0 outside).

    Gathers one axis at a time, the one with the largest memory stride first, so a strided view of the file's
    buffer (see ``to_canonical``) is read in few passes; the result is small, contiguous and native-endian.
    """
    axes = [_nearest_indices(start[a], extent[a], size[a], data.shape[a]) for a in range(3)]
    memory_order = sorted(range(3), key=lambda a: -abs(data.strides[a]))
    out = data.transpose(memory_order)  # view whose axes run in memory order: whole planes, then rows
    for position, axis in enumerate(memory_order):
        out = np.take(out, axes[axis][0], axis=position)
    out = out.transpose(np.argsort(memory_order))
    out = np.ascontiguousarray(out, dtype=out.dtype.newbyteorder("="))
    outside = ~(axes[0][1][:, None, None] & axes[1][1][None, :, None] & axes[2][1][None, None, :])
    out[outside] = 0
    return out


def resample_linear(data: np.ndarray, start: np.ndarray, extent: np.ndarray, size: tuple[int, int, int]) -> np.ndarray:
    """Trilinear resampling of the box (float32), background 0 outside the array."""
    lo = np.floor(start).astype(int)
    hi = np.ceil(start + extent).astype(int)
    pad = [(max(0, -lo[a]), max(0, hi[a] - data.shape[a])) for a in range(3)]
    padded = np.pad(data.astype(np.float32, copy=False), pad)
    box = padded[tuple(slice(lo[a] + pad[a][0], hi[a] + pad[a][0]) for a in range(3))]
    tensor = torch.from_numpy(np.ascontiguousarray(box))[None, None]
    return F.interpolate(tensor, size=size, mode="trilinear", align_corners=False)[0, 0].numpy()


def footprint_means(values: np.ndarray, start: float, extent: float, n_out: int) -> np.ndarray:
    """Mean of ``values`` along axis 0 over each of ``n_out`` equal cells tiling [start, start + extent) (source
    voxel units, may reach past the array: background 0 there), counting partly covered voxels by their overlap.

    Exact for any ratio: a voxel's weights over the cells sum to its overlap with the box, so the sum of the means
    times the cell length is the sum of the values inside the box. A cell holds the whole voxels from the one its
    lower bound cuts up to the one its upper bound cuts (a slice sum per cell: integer counts for a mask, and
    several times faster than ``np.add.reduceat``), plus the part of the upper voxel below its bound, less the part
    of the lower voxel below its bound.
    """
    n_in = len(values)
    bounds = np.clip(start + np.arange(n_out + 1) * (extent / n_out), 0.0, n_in)
    voxel = np.minimum(np.floor(bounds).astype(np.int64), n_in - 1)
    # A mask's counts fit int16 (a cell spans at most n_in voxels), whose sums run 2.5x faster than int32's.
    dtype = (np.int16 if n_in < 2**15 else np.int32) if values.dtype == bool else np.float64
    whole = np.stack([values[a:b].sum(axis=0, dtype=dtype) for a, b in zip(voxel[:-1], voxel[1:])])
    within = (bounds - voxel).reshape(-1, *[1] * (values.ndim - 1))  # how far into its voxel each bound lies
    cut = within * values[voxel]  # the part of each bound's voxel below the bound
    return (whole + np.diff(cut, axis=0)) / (extent / n_out)


def fractions(mask: np.ndarray, start: np.ndarray, extent: np.ndarray, size: tuple[int, int, int]) -> np.ndarray:
    """The fraction of each output voxel of the box (``start``, ``extent`` in ``mask``'s voxels) that ``mask``
    fills, before rounding (float32, ``size``).

    :func:`footprint_means` along the first axis (integer sums over the full-resolution mask, one pass), then
    along the two others, now a few times smaller, as products with its weights (the means of the identity).
    """
    out = footprint_means(mask, float(start[0]), float(extent[0]), size[0]).astype(np.float32)
    _, height, width = mask.shape
    rows = footprint_means(np.eye(height, dtype=np.float32), float(start[1]), float(extent[1]), size[1])
    columns = footprint_means(np.eye(width, dtype=np.float32), float(start[2]), float(extent[2]), size[2])
    return np.matmul(rows.astype(np.float32), out @ columns.T.astype(np.float32))


def occupancy(
    canonical: np.ndarray,
    start: np.ndarray,
    extent: np.ndarray,
    size: tuple[int, int, int],
    channels: Mapping[str, tuple[LabelId, ...]],
) -> np.ndarray:
    """``(C, D, H, W)`` uint8 round(255·f): f the fraction of each output voxel of the box that channel c's ids
    fill at full resolution (the mean of the full-resolution one-hot over the voxel's footprint).

    The box's voxels are compacted once (raising :class:`UnknownLabelError` for foreign ids, as the nearest path
    does for the voxels it picks); each channel is then one bool mask, reduced one axis at a time by
    :func:`footprint_means`, so memory holds one channel at full resolution.
    """
    lo = np.clip(np.floor(start).astype(np.int64), 0, canonical.shape)
    hi = np.clip(np.ceil(start + extent).astype(np.int64), lo, canonical.shape)
    # In C order (the file's view is strided): each cell of the first axis then sums whole contiguous planes.
    box = np.ascontiguousarray(to_compact(canonical[tuple(slice(a, b) for a, b in zip(lo, hi))]))
    table = channel_lookup(channels) > 0
    out = np.zeros((len(channels), *size), dtype=np.uint8)
    if box.size == 0:
        return out
    # Channels that share no id: one gather of each voxel's channel, then a cheap comparison per channel.
    disjoint = bool((table.sum(axis=1) <= 1).all())
    owner = np.where(table.any(axis=1), table.argmax(axis=1) + 1, 0).astype(np.uint8)[box] if disjoint else None
    for c in range(len(channels)):
        mask = owner == c + 1 if owner is not None else table[:, c][box]
        filled = fractions(mask, start - lo, extent, size)
        out[c] = np.clip(np.rint(filled * FULL), 0, FULL).astype(np.uint8)
    return out


def robust_normalise(data: np.ndarray) -> np.ndarray:
    """Map the head's 0.5–99.5th percentiles to [0, 1]; background stays 0. Robust to bright vessels/fat."""
    mask = _foreground(data, "intensity")
    if not mask.any():
        return np.zeros_like(data, dtype=np.float32)
    low, high = np.percentile(data[mask], [0.5, 99.5])
    scaled = np.clip((data - low) / max(float(high - low), 1e-6), 0.0, 1.0)
    return np.where(mask, scaled, 0.0).astype(np.float32)


def zscore(data: np.ndarray) -> np.ndarray:
    """The seed's normalisation: the whole volume's mean and std, background included (kept for comparison)."""
    return ((data - data.mean()) / max(float(data.std()), 1e-6)).astype(np.float32)


Triple = tuple[float, float, float]
Rows = tuple[tuple[float, ...], ...]


def _rows(values: object) -> Rows:
    """A 2-D array as a tuple of float tuples (hashable, comparable, exact in JSON)."""
    return tuple(tuple(float(v) for v in row) for row in np.asarray(values, dtype=float))


def _ints(values: object) -> tuple[int, int, int]:
    a, b, c = (int(v) for v in np.asarray(values).tolist())
    return a, b, c


def _floats(values: object) -> Triple:
    a, b, c = (float(v) for v in np.asarray(values).tolist())
    return a, b, c


@dataclass(frozen=True)
class SourceGeometry:
    """Where a cached array's voxels came from in its source file, as :func:`preprocess_recorded` cut it.

    The file's ``shape`` and ``affine``; the shape of its voxels reoriented to RAS (``canonical_shape``) and the
    nibabel orientation transform from those axes back to the file's (``to_file``, 3 × (axis, flip)); the crop box
    in canonical voxels (``start``, ``extent``; the whole array without ``crop``), which the cached array resamples.
    Stored in the cache entry's sidecar (:meth:`record`), so the inversion needs neither the file nor the crop again.
    """

    shape: tuple[int, int, int]
    affine: Rows
    canonical_shape: tuple[int, int, int]
    to_file: Rows
    start: Triple
    extent: Triple

    def record(self) -> dict[str, list[Any]]:
        """The geometry as JSON-ready lists (floats round-trip exactly through ``json``)."""
        return {key: np.asarray(value).tolist() for key, value in asdict(self).items()}

    @classmethod
    def from_record(cls, record: Mapping[str, Any]) -> SourceGeometry:
        """The geometry :meth:`record` wrote; ``KeyError``, ``TypeError`` or ``ValueError`` for anything else."""
        affine, to_file = _rows(record["affine"]), _rows(record["to_file"])
        if np.shape(affine) != (4, 4) or np.shape(to_file) != (3, 2):
            raise ValueError(
                f"a recorded affine {np.shape(affine)} or orientation {np.shape(to_file)} of another shape"
            )
        return cls(
            shape=_ints(record["shape"]),
            affine=affine,
            canonical_shape=_ints(record["canonical_shape"]),
            to_file=to_file,
            start=_floats(record["start"]),
            extent=_floats(record["extent"]),
        )


def preprocess_recorded(
    data: np.ndarray, affine: np.ndarray, params: Preprocessing
) -> tuple[np.ndarray, SourceGeometry]:
    """Decoded volume + affine → cached array of shape ``params.cached_shape`` and dtype ``params.dtype``, and where
    its voxels came from.
    """
    canonical, zooms = to_canonical(data, affine)
    if params.crop:
        start, extent = crop_box(_foreground(canonical, params.input_kind), zooms, params.size, params.margin_mm)
    else:
        start, extent = np.zeros(3), np.asarray(canonical.shape, dtype=float)
    ras = nib.orientations.axcodes2ornt("RAS")
    geometry = SourceGeometry(
        shape=_ints(data.shape[:3]),
        affine=_rows(affine),
        canonical_shape=_ints(canonical.shape[:3]),
        to_file=_rows(nib.orientations.ornt_transform(ras, nib.orientations.io_orientation(affine))),
        start=_floats(start),
        extent=_floats(extent),
    )
    if params.occupancy:
        return occupancy(canonical, start, extent, params.size, params.channel_map), geometry
    if params.input_kind == "labelmap":
        # Ids are checked and compacted after resampling: 8-60x fewer voxels than the conformed grid.
        return to_compact(resample_nearest(canonical, start, extent, params.size)), geometry
    resampled = resample_linear(canonical, start, extent, params.size)
    normalise = robust_normalise if params.normalise == "robust" else zscore
    return normalise(resampled).astype(np.float16), geometry


def preprocess(data: np.ndarray, affine: np.ndarray, params: Preprocessing) -> np.ndarray:
    """Decoded volume + affine → cached array of shape ``params.cached_shape`` and dtype ``params.dtype``."""
    return preprocess_recorded(data, affine, params)[0]
