"""Attribution maps: from the network's grid back to the source file's voxels, and per-class means.

The cache's array is the source volume reoriented to RAS (:func:`~adni_lightning.data.volume_io.to_canonical`),
cropped to a box around the brain (:func:`~adni_lightning.data.preprocess.crop_box`) and resampled to
``image_size`` by nearest neighbour; the cache entry records how
(:class:`~adni_lightning.data.preprocess.SourceGeometry`). :func:`to_source_grid` inverts the two steps for a map
at network resolution from that record alone, without reading the source file or deriving the box again: each
source voxel takes the value of the network voxel whose cell holds its centre (nearest neighbour, so a map shows
the network's own resolution, blocks and all), voxels outside the box are 0, and the axes are permuted and flipped
back to the file's order. Saved with the file's affine and shape, the map overlays on the subject's own label map
in Freeview or FSLeyes. Where the network is finer than the source (upsampling), the round trip of the cached
label map itself reproduces the source exactly.

Per-class means (:class:`ClassMaps`) stay at network resolution: the crop box normalises position and size
only crudely, so they are a rough template space, drawn over the class's voxel-wise most frequent label (or
its mean intensity) at the same resolution. Their NIfTI files carry an identity affine: voxel units, RAS
axis order, no physical space.
"""

from __future__ import annotations

from pathlib import Path

import nibabel as nib
import numpy as np
import torch

from adni_lightning.data.preprocess import SourceGeometry


def to_source_grid(values: np.ndarray, geometry: SourceGeometry) -> np.ndarray:
    """A ``(D, H, W)`` map at network resolution → the source file's voxel grid (nearest neighbour, 0 outside)."""
    size = values.shape
    indices, inside = [], []
    for axis in range(3):
        centres = np.arange(geometry.canonical_shape[axis]) + 0.5
        cell = np.floor((centres - geometry.start[axis]) * size[axis] / geometry.extent[axis]).astype(np.int64)
        inside.append((cell >= 0) & (cell < size[axis]))
        indices.append(np.clip(cell, 0, size[axis] - 1))
    canonical = values[np.ix_(*indices)]
    canonical[~(inside[0][:, None, None] & inside[1][None, :, None] & inside[2][None, None, :])] = 0
    return nib.orientations.apply_orientation(canonical, np.asarray(geometry.to_file))


def save_on_source_grid(values: np.ndarray, geometry: SourceGeometry, path: Path) -> Path:
    """Write a network-resolution map as float32 NIfTI on the source file's grid, with its affine."""
    mapped = np.ascontiguousarray(to_source_grid(values, geometry), dtype=np.float32)
    nib.save(nib.Nifti1Image(mapped, np.asarray(geometry.affine)), path)
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
