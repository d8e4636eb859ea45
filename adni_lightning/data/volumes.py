"""Regional volumes of FreeSurfer label maps, counted at full resolution while the cache decodes them.

Volumetry is the strong, cheap reference for an image model (hippocampal volume alone separates CN from AD
with an AUC near 0.9), and it is quality control: a failed segmentation shows as an implausible volume. The
counts come free with the cache: :func:`structure_volumes` runs on the full-resolution voxels the cache has
just decoded, never on the downsampled array it stores (nearest-neighbour resampling drops and repeats voxels,
so its counts are not volumes), and rejects ids outside the FreeSurfer table there, where a single foreign voxel
is still visible.
"""

from __future__ import annotations

from collections.abc import Mapping
from typing import TYPE_CHECKING

import numpy as np
import pandas as pd

from adni_lightning.data.labels import FASTSURFER_DEEP, FREESURFER_LUT, compact_lookup, label_ids
from adni_lightning.data.preprocess import UnknownLabelError
from adni_lightning.vocabulary import LabelId

if TYPE_CHECKING:
    from adni_lightning.data.cache import VolumeCache

_TO_COMPACT = compact_lookup()
_STRUCTURE_NAMES = frozenset(name for label, (name, _) in FREESURFER_LUT.items() if label != 0)

#: Labels that are not brain tissue: ventricles (lateral, inferior lateral, 3rd, 4th, 5th), CSF, choroid plexus
#: and vessels. :data:`TOTAL_BRAIN` is every other non-zero label: white and grey matter, cerebellum, brain stem,
#: deep grey nuclei, white-matter hypointensities (damaged tissue, still tissue) and the optic chiasm.
NON_TISSUE: frozenset[LabelId] = frozenset(label_ids(4, 43, 5, 44, 14, 15, 72, 24, 31, 63, 30, 62))

#: Brain tissue volume (mm³): the sum of every label but background and :data:`NON_TISSUE`.
TOTAL_BRAIN = "TotalBrainVolume"

#: Every non-zero label (mm³), the intracranial-volume proxy a label map offers. FastSurfer's deep label map
#: has no eTIV (FreeSurfer derives it from the Talairach transform), and this proxy misses the unlabelled
#: sulcal and extracerebral CSF, so it shrinks a little as the cortex atrophies: use it to normalise head size,
#: not as an ICV measurement.
LABELLED = "LabelledVolume"

#: Per-image columns of :func:`regional_volumes` before the structures.
ID_COLUMNS = ("image_id", "subject", "group", "age", "sex", "visit")

#: Ids FastSurfer writes into ``aparc.DKTatlas+aseg.deep.mgz`` (background excluded); one missing from an
#: image suggests a failed or different segmentation.
FASTSURFER_DEEP_LABELS: tuple[LabelId, ...] = tuple(label for label in FASTSURFER_DEEP if label != 0)


#: Why a label map without a labelled voxel is refused: it holds no brain, and no head size to normalise by.
EMPTY_LABEL_MAP = "label map is empty (no labelled voxel)"


def _ml(mm3: float) -> str:
    """A volume in ml, to 0.1 ml, and to three significant digits below 1 ml (a few voxels)."""
    ml = mm3 / 1000
    return f"{ml:.1f} ml" if ml >= 1 else f"{ml:.3g} ml"


def small_label_maps(labelled: Mapping[str, float], fraction: float) -> dict[str, str]:
    """Image id → reason, for each labelled volume (mm³) below ``fraction`` of the median of ``labelled``.

    A segmentation that failed part-way, or a scan that missed most of the head, still has a few labelled voxels:
    no id is foreign and no file is damaged, but its ICV proxy is a fraction of a head's and every structure's
    share of it is meaningless. The median of the cohort is the reference: it needs no assumption about voxel
    size or field of view, and a few failures do not move it.
    """
    if not labelled or fraction <= 0:
        return {}
    median = float(np.median(list(labelled.values())))
    return {
        image_id: (
            f"label map nearly empty: labelled volume {_ml(volume)} is below {fraction:g} of the cohort's median "
            f"{_ml(median)} (data.manifest.min_labelled_fraction)"
        )
        for image_id, volume in labelled.items()
        if volume < fraction * median
    }


def voxel_volume(affine: np.ndarray) -> float:
    """mm³ of one voxel: the absolute determinant of the affine's 3×3 part, to 10 significant digits (the
    determinant of an 8 mm grid's rotation-free affine comes out as 511.9999999999995).
    """
    return float(f"{abs(np.linalg.det(np.asarray(affine, dtype=np.float64)[:3, :3])):.10g}")


def _foreign_ids(ids: np.ndarray, counts: np.ndarray) -> list[int]:
    """Ids with voxels that are not in the table: beyond it, or a hole in it."""
    beyond_or_hole = {int(i) for i in np.flatnonzero(counts) if i >= len(_TO_COMPACT) or _TO_COMPACT[i] < 0}
    return sorted({int(i) for i in ids[ids < 0]} | beyond_or_hole)


def label_counts(data: np.ndarray) -> np.ndarray:
    """Voxels per FreeSurfer id (index = id, up to the largest id present) of a full-resolution label map.

    ``data`` may be a big-endian, Fortran-ordered view of the file's buffer (see
    :func:`~adni_lightning.data.volume_io.read_volume`): nothing is copied before the background is dropped.
    Background is most of a conformed grid (about 90 %), so the non-zero voxels are selected on the stored bytes
    (zero is zero in either byte order) and only they are converted and counted, which is about 10x faster than
    one ``np.bincount`` over the whole grid. Raises :class:`UnknownLabelError` for ids not in the FreeSurfer table.
    """
    flat = data.ravel(order="K")  # a view for any contiguous layout
    if np.issubdtype(flat.dtype, np.integer):
        values = flat[flat.view(flat.dtype.newbyteorder("=")) != 0]
    else:
        values = flat[flat != 0]
        if not np.array_equal(values, np.round(values)):
            raise UnknownLabelError("voxel values are not integers: this is an intensity image, not a label map")
    ids = values.astype(np.int64)
    negative = ids < 0
    counts = np.bincount(ids[~negative] if negative.any() else ids, minlength=1)
    counts[0] = flat.size - ids.size
    foreign = _foreign_ids(ids[negative], counts)
    if foreign:
        shown = ", ".join(str(i) for i in foreign[:10])
        raise UnknownLabelError(f"label ids not in the FreeSurfer aseg/DKT table: {shown}")
    return counts


def structure_volumes(data: np.ndarray, affine: np.ndarray) -> dict[LabelId, float]:
    """FreeSurfer id → volume in mm³ (voxel count × voxel volume) of every non-zero id present."""
    counts = label_counts(data)
    size = voxel_volume(affine)
    return {LabelId(int(i)): float(counts[i] * size) for i in np.flatnonzero(counts) if i != 0}


def regional_volumes(manifest: pd.DataFrame, cache: VolumeCache) -> pd.DataFrame:
    """One row per manifest image: :data:`ID_COLUMNS`, then a column per structure, in mm³ (0 where absent).

    ``group`` is the image's class (the CSV group after ``group_map``, as in ``split.csv``). Structure columns are
    named as in FreeSurferColorLUT and ordered by id, one for every id present in at least one image; then
    :data:`TOTAL_BRAIN` and :data:`LABELLED`. The cache must hold every image (``cache.build`` first).
    """
    per_image = [cache.volumes(i, p) for i, p in zip(manifest["image_id"], manifest["path"], strict=True)]
    ids = sorted({LabelId(i) for volumes in per_image for i in volumes})  # the sidecars' keys are FreeSurfer ids
    table = np.zeros((len(per_image), len(ids)))
    for row, volumes in enumerate(per_image):
        table[row] = [volumes.get(i, 0.0) for i in ids]
    structures = pd.DataFrame(table, columns=[FREESURFER_LUT[i][0] for i in ids])
    tissue = [FREESURFER_LUT[i][0] for i in ids if i not in NON_TISSUE]
    structures[TOTAL_BRAIN] = structures[tissue].sum(axis=1)
    structures[LABELLED] = table.sum(axis=1)
    front = manifest.rename(columns={"group": "csv_group", "label": "group"})[list(ID_COLUMNS)].reset_index(drop=True)
    return pd.concat([front, structures], axis=1)


def structure_columns(volumes: pd.DataFrame) -> list[str]:
    """The columns of a frame named after a FreeSurfer structure, in order (not the ids, nor the two totals)."""
    return [c for c in volumes.columns if c in _STRUCTURE_NAMES]


def robust_z(values: np.ndarray, age: np.ndarray) -> np.ndarray:
    """Robust z-scores of each column of ``values`` (images × structures) after regressing age out.

    Per column: volume ~ 1 + age by least squares over all images, then the residual's distance to its median in
    units of the larger of 1.4826·MAD and 1.2533·mean absolute deviation (each the sd of a normal sample). The
    MAD alone collapses where most residuals are nearly equal (a structure absent from most images, volumes
    quantised by coarse voxels) and would flag every other image; the mean deviation moves little for one failed
    image among many. A column with no spread at all scores 0.
    """
    design = np.column_stack([np.ones(len(age)), np.asarray(age, dtype=np.float64)])
    coef, *_ = np.linalg.lstsq(design, values, rcond=None)
    residual = values - design @ coef
    deviation = residual - np.median(residual, axis=0)
    absolute = np.abs(deviation)
    scale = np.maximum(1.4826 * np.median(absolute, axis=0), 1.2533 * absolute.mean(axis=0))
    rounding = 1e-9 * np.abs(values).max(axis=0, initial=0.0)  # spread of a constant column after the fit
    return np.divide(deviation, scale, out=np.zeros_like(deviation), where=scale > rounding)


def volume_outliers(volumes: pd.DataFrame, threshold: float) -> pd.DataFrame:
    """Images whose volume of a structure (or of a total) has a :func:`robust_z` beyond ``threshold``.

    The age fit is pooled over all images, not per group: quality control should not use the diagnosis, groups
    may be too small for a median and a MAD, and the disease spread widens the pooled MAD, so real atrophy stays
    below the threshold while a failed segmentation (many MADs away) does not. Columns ``image_id, subject,
    group, structure, volume_mm3, z``, largest ``|z|`` first.
    """
    columns = [*structure_columns(volumes), TOTAL_BRAIN, LABELLED]
    z = robust_z(volumes[columns].to_numpy(np.float64), volumes["age"].to_numpy(np.float64))
    rows, cols = np.nonzero(np.abs(z) > threshold)
    found = volumes.iloc[rows][["image_id", "subject", "group"]].reset_index(drop=True)
    found["structure"] = [columns[c] for c in cols]
    found["volume_mm3"] = volumes[columns].to_numpy(np.float64)[rows, cols]
    found["z"] = z[rows, cols]
    return found.sort_values("z", key=np.abs, ascending=False, kind="stable", ignore_index=True)
