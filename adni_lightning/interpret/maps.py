"""Attribution maps: from the network's grid back to the source file's voxels, and per-class means.

The cache's array is the source volume reoriented to RAS (:func:`~adni_lightning.data.volume_io.to_canonical`),
cropped to a box around the brain (:func:`~adni_lightning.data.preprocess.crop_box`) and resampled to
``image_size`` by nearest neighbour. :func:`to_source_grid` inverts the two steps for a map at network
resolution: each source voxel takes the value of the network voxel whose cell holds its centre (nearest
neighbour, so a map shows the network's own resolution, blocks and all), voxels outside the box are 0, and the
axes are permuted and flipped back to the file's order. Saved with the file's affine and shape, the map overlays
on the subject's own label map in Freeview or FSLeyes. Where the network is finer than the source (upsampling),
the round trip of the cached label map itself reproduces the source exactly.

Per-class means (:class:`ClassMaps`) stay at network resolution: the crop box normalises position and size
only crudely, so they are a rough template space, drawn over the class's voxel-wise most frequent label (or
its mean intensity) at the same resolution. Their NIfTI files carry an identity affine: voxel units, RAS
axis order, no physical space.
"""

from __future__ import annotations

from dataclasses import dataclass
from pathlib import Path

import nibabel as nib
import numpy as np
import torch

from adni_lightning.data.preprocess import Preprocessing, _foreground, crop_box
from adni_lightning.data.volume_io import read_volume, to_canonical


@dataclass(frozen=True)
class SourceGrid:
    """Where a cached volume's voxels came from: the source file's grid and the crop box (canonical voxels)."""

    shape: tuple[int, int, int]
    affine: np.ndarray
    canonical_shape: tuple[int, int, int]
    start: np.ndarray
    extent: np.ndarray
    to_file: np.ndarray  # nibabel orientation transform from the canonical (RAS) axes back to the file's


def source_grid(path: str | Path, params: Preprocessing) -> SourceGrid:
    """Recompute, as :func:`~adni_lightning.data.preprocess.preprocess` did, the box a file's cache entry covers."""
    data, affine = read_volume(path)
    canonical, zooms = to_canonical(data, affine)
    if params.crop:
        start, extent = crop_box(_foreground(canonical, params.input_kind), zooms, params.size, params.margin_mm)
    else:
        start, extent = np.zeros(3), np.asarray(canonical.shape, dtype=float)
    ras = nib.orientations.axcodes2ornt("RAS")
    to_file = nib.orientations.ornt_transform(ras, nib.orientations.io_orientation(affine))
    return SourceGrid(tuple(data.shape), affine, tuple(canonical.shape), start, extent, to_file)


def to_source_grid(values: np.ndarray, grid: SourceGrid) -> np.ndarray:
    """A ``(D, H, W)`` map at network resolution → the source file's voxel grid (nearest neighbour, 0 outside)."""
    size = values.shape
    indices, inside = [], []
    for axis in range(3):
        centres = np.arange(grid.canonical_shape[axis]) + 0.5
        cell = np.floor((centres - grid.start[axis]) * size[axis] / grid.extent[axis]).astype(np.int64)
        inside.append((cell >= 0) & (cell < size[axis]))
        indices.append(np.clip(cell, 0, size[axis] - 1))
    canonical = values[np.ix_(*indices)]
    canonical[~(inside[0][:, None, None] & inside[1][None, :, None] & inside[2][None, None, :])] = 0
    return nib.orientations.apply_orientation(canonical, grid.to_file)


def save_on_source_grid(values: np.ndarray, grid: SourceGrid, path: Path) -> Path:
    """Write a network-resolution map as float32 NIfTI on the source file's grid, with its affine."""
    mapped = np.ascontiguousarray(to_source_grid(values, grid), dtype=np.float32)
    nib.save(nib.Nifti1Image(mapped, grid.affine), path)
    return path


def save_network_grid(values: np.ndarray, path: Path) -> Path:
    """Write a network-resolution array as NIfTI in voxel units (identity affine, RAS axis order)."""
    nib.save(nib.Nifti1Image(np.ascontiguousarray(values), np.eye(4)), path)
    return path


class ClassMaps:
    """Running per-class mean of attribution maps at network resolution, with the images they came from.

    ``reference(k)`` is what the mean is drawn over: the voxel-wise most frequent compact label of class ``k``'s
    images for label maps, their mean intensity otherwise.
    """

    def __init__(self, num_classes: int, labelmap: bool) -> None:
        self.labelmap = labelmap
        self.sums: dict[int, torch.Tensor] = {}
        self.counts = [0] * num_classes
        self.volumes: dict[int, list[torch.Tensor]] = {k: [] for k in range(num_classes)}
        self.intensity: dict[int, torch.Tensor] = {}

    def add(self, klass: int, attribution: torch.Tensor, volume: torch.Tensor) -> None:
        """One image's ``(D, H, W)`` map and its compact ``(D, H, W)`` volume."""
        attribution, volume = attribution.detach().cpu().double(), volume.cpu()
        self.sums[klass] = self.sums.get(klass, torch.zeros_like(attribution)) + attribution
        self.counts[klass] += 1
        if self.labelmap:
            self.volumes[klass].append(volume)
        else:
            self.intensity[klass] = self.intensity.get(klass, torch.zeros_like(attribution)) + volume.double()

    def mean(self, klass: int) -> np.ndarray | None:
        if not self.counts[klass]:
            return None
        return (self.sums[klass] / self.counts[klass]).float().numpy()

    def reference(self, klass: int) -> np.ndarray | None:
        if not self.counts[klass]:
            return None
        if not self.labelmap:
            return (self.intensity[klass] / self.counts[klass]).float().numpy()
        stacked = torch.stack(self.volumes[klass])
        return np.concatenate(
            [torch.mode(part.long(), dim=0).values.to(torch.uint8).numpy() for part in stacked.split(8, dim=1)]
        )
