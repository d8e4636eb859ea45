"""Synthetic ADNI cohort in exactly the format of a real ADNI download, for tests and demos without data.

Real label maps cannot be shared (ADNI data use agreement), so this module draws a cohort of FastSurfer-like
``aparc.DKTatlas+aseg.deep`` label maps plus the IDA collection CSV that goes with them. The files look like
the real thing down to the details a loader can trip over: ``I``-prefixed image ids (or bare numbers),
``{Group}/{id}.nii_aseg_deep.mgz`` paths, int16 MGH volumes on the conformed LIA grid, several visits per
subject. The anatomy is a cartoon built from ellipsoids in MNI-like millimetres, but the disease signal sits
where it does in real brains (hippocampus, amygdala, ventricles, temporal cortex), graded CN < MCI < AD with
overlap, confounded by age, head size and pose, so a classifier has to learn something real to beat chance.
``synthetic_truth.csv`` keeps the generating parameters so tests can check what a model picked up.

Every random draw comes from a generator seeded by ``(seed, subject, visit)``, so the output is byte-identical
for a seed whatever the number of worker processes.

A few options make the cohort of another "site", for checks of how a model travels: ids from one site number, older
or younger subjects, larger or smaller heads, and the marks of another segmentation (a thicker cortex label,
small labels it does not produce). They change what is measured, never the disease: the same seed draws the same
people with the same latent severity and the same severity → structure effects (:data:`PRESETS`).
"""

from __future__ import annotations

import csv
import logging
import operator
import os
from collections.abc import Iterable, Sequence
from concurrent.futures import ProcessPoolExecutor
from dataclasses import dataclass
from datetime import date, timedelta
from functools import partial, reduce
from pathlib import Path
from typing import Any

import nibabel as nib
import numpy as np
import pandas as pd
from tqdm.auto import tqdm

from adni_lightning.data.labels import LEFT_RIGHT_PAIRS
from adni_lightning.data.manifest import ADNI1_GROUPS, CSV_NAME, ManifestError
from adni_lightning.errors import OptionError

log = logging.getLogger(__name__)

TRUTH_NAME = "synthetic_truth.csv"
#: Written into every generated cohort: only a folder holding it (or no folder) may be (re)generated into.
MARKER_NAME = ".adni_lightning_synthetic"
FILE_SUFFIX = ".nii_aseg_deep.mgz"
CSV_COLUMNS = (
    "Image Data ID",
    "Subject",
    "Group",
    "Sex",
    "Age",
    "Visit",
    "Modality",
    "Description",
    "Type",
    "Acq Date",
    "Format",
    "Downloaded",
)
GROUPS = ADNI1_GROUPS

_RIGHT: dict[int, int] = dict(LEFT_RIGHT_PAIRS)

# --- cohort statistics (ADNI-1-like) ----------------------------------------------------------------------
_GROUP_SHARE = {"CN": 0.35, "MCI": 0.40, "AD": 0.25}
_AGE = {"CN": (75.9, 6.0), "MCI": (74.7, 7.2), "AD": (75.3, 7.4)}
_MALE = {"CN": 0.52, "MCI": 0.64, "AD": 0.53}
#: Beta(a, b) of the latent disease severity: overlapping groups, so diagnosis is not a threshold on one volume.
_SEVERITY = {"CN": (2.0, 9.0), "MCI": (4.0, 5.0), "AD": (7.0, 3.0)}
#: Yearly progression added at the m12 visit (CN stays put).
_PROGRESSION = {"CN": (0.0, 0.01), "MCI": (0.02, 0.08), "AD": (0.03, 0.10)}
#: The ADNIMERGE-like table of a cohort generated with ``clinical``, beside the image CSV.
CLINICAL_NAME = "ADNIMERGE.csv"
CLINICAL_COLUMNS = ("RID", "PTID", "VISCODE", "EXAMDATE", "DX_bl", "DX", "AGE", "PTGENDER", "MMSE", "CDRSB")
#: Months of the clinical visits (bl, m06, m12, m24, m36) and the chance that each is a subject's last (dropouts).
CLINICAL_VISITS = (0, 6, 12, 24, 36)
_LAST_VISIT_P = (0.04, 0.04, 0.07, 0.10, 0.75)
#: Share of MCI subjects that read CN at one visit (m06 or m12) before any conversion.
_REVERTER_SHARE = 0.06
#: The third seed word of a subject's clinical generator (the images use 1 and 2: baseline and follow-up).
_CLINICAL_STREAM = 1000
_DESCRIPTIONS = (
    "MPR; GradWarp; B1 Correction; N3; Scaled",
    "MPR-R; GradWarp; B1 Correction; N3; Scaled",
    "MPR; ; N3; Scaled",
)
_DESCRIPTION_P = (0.7, 0.2, 0.1)

# --- anatomy -----------------------------------------------------------------------------------------------
#: Structure name → (change per unit severity, change per decade of age past 75, subject-to-subject sd).
#: Volume factor = (1 + a·severity)(1 + b·age) · jitter. CSF spaces vary more between people than tissue.
_EFFECTS: dict[str, tuple[float, float, float]] = {
    "hippocampus": (-0.35, -0.05, 0.08),
    "amygdala": (-0.30, -0.04, 0.08),
    "lateral_ventricle": (1.2, 0.30, 0.15),
    "inf_lat_vent": (3.0, 0.30, 0.15),
    "third_ventricle": (0.6, 0.20, 0.10),
}
_CORTEX_MM = 2.5
_CORTEX_THINNING = 0.3  # relative thinning at severity 1 of a parcel with weight 1
_GAP_MM = 0.75  # half-width of the interhemispheric fissure

#: Centre of the cerebrum ellipsoid in MNI-like coordinates; it is put at the scanner origin.
_BRAIN_CENTRE = np.array([0.0, -17.0, 14.0])
_BRAIN_SEMI = np.array([70.0, 85.0, 60.0])  # 140 × 170 × 120 mm
#: Callosum and diencephalon (y, z centre and half-axes): white matter crosses the midline there, no cortex.
_CORE = (-6.0, 6.0, 40.0, 22.0)
_CEREBELLUM_CENTRE = np.array([0.0, -60.0, -34.0])
_CEREBELLUM_SEMI = np.array([50.0, 27.0, 19.0])
#: Template box holding the whole brain (cerebrum, cerebellum, brain stem), MNI-like mm.
_BRAIN_LO = np.array([-72.0, -104.0, -66.0])
_BRAIN_HI = np.array([72.0, 70.0, 76.0])

#: DKT parcel → (left-hemisphere anchor on the cortex, MNI-like mm; thinning weight). Each cortical voxel takes
#: the parcel of the nearest anchor; weights make medial temporal cortex thin first, as in AD.
_PARCELS: dict[int, tuple[tuple[float, float, float], float]] = {
    2: ((-5, 20, 30), 0.25),  # caudal anterior cingulate
    3: ((-38, 10, 52), 0.25),  # caudal middle frontal
    5: ((-6, -85, 20), 0.25),  # cuneus
    6: ((-25, -8, -40), 1.0),  # entorhinal
    7: ((-38, -50, -25), 0.8),  # fusiform
    8: ((-48, -70, 30), 0.5),  # inferior parietal
    9: ((-58, -30, -25), 0.8),  # inferior temporal
    10: ((-8, -48, 12), 0.5),  # isthmus cingulate
    11: ((-35, -95, 0), 0.25),  # lateral occipital
    12: ((-30, 32, -18), 0.25),  # lateral orbitofrontal
    13: ((-12, -78, -8), 0.25),  # lingual
    14: ((-6, 45, -15), 0.25),  # medial orbitofrontal
    15: ((-68, -30, -8), 0.8),  # middle temporal
    16: ((-24, -32, -30), 1.0),  # parahippocampal
    17: ((-6, -25, 70), 0.25),  # paracentral
    18: ((-55, 12, 15), 0.25),  # pars opercularis
    19: ((-45, 40, -10), 0.25),  # pars orbitalis
    20: ((-50, 32, 5), 0.25),  # pars triangularis
    21: ((-5, -88, 6), 0.25),  # pericalcarine
    22: ((-48, -30, 58), 0.25),  # postcentral
    23: ((-5, -15, 38), 0.5),  # posterior cingulate
    24: ((-42, -12, 58), 0.25),  # precentral
    25: ((-6, -62, 45), 0.5),  # precuneus
    26: ((-5, 38, 2), 0.25),  # rostral anterior cingulate
    27: ((-35, 50, 22), 0.25),  # rostral middle frontal
    28: ((-18, 30, 62), 0.25),  # superior frontal
    29: ((-25, -65, 62), 0.5),  # superior parietal
    30: ((-62, -12, 5), 0.8),  # superior temporal
    31: ((-58, -42, 35), 0.5),  # supramarginal
    34: ((-66, -24, 14), 0.8),  # transverse temporal
}
_INSULA = 35  # lies under the surface, drawn as a blob below
_SURFACE_PARCELS = np.array(sorted(_PARCELS), dtype=np.int64)
_ANCHORS = np.array([_PARCELS[p][0] for p in _SURFACE_PARCELS], dtype=np.float32)
_WEIGHTS = np.array([_PARCELS[p][1] for p in _SURFACE_PARCELS])


@dataclass(frozen=True)
class _Blob:
    """An ellipsoid (optionally bent) in MNI-like mm; left-hemisphere geometry, mirrored for the right."""

    label: int
    centre: tuple[float, float, float]
    semi: tuple[float, float, float]
    yaw: float = 0.0  # degrees about z: positive turns the anterior end lateral (left side)
    pitch: float = 0.0  # degrees about x: positive lifts the anterior end
    bend: float = 0.0  # 1/mm: the ends curve up by bend·u², u along the long (y) axis
    marker: str | None = None  # key of the volume factor that scales it
    within: tuple[int, ...] | None = None  # paint only over these (left) labels
    paired: bool = True  # False: one midline structure


#: Painted in this order over cerebrum and cerebellum; later structures win where they overlap, so the
#: ventricles grow into their neighbours and the hippocampus keeps exactly its own volume.
_BLOBS: tuple[_Blob, ...] = (
    _Blob(1000 + _INSULA, (-37, 2, 4), (2.0, 16, 12), within=(2,)),
    _Blob(16, (0, -28, -40), (10, 12, 24), paired=False),  # brain stem
    _Blob(15, (0, -42, -33), (3, 4, 6), paired=False),  # 4th ventricle
    _Blob(28, (-12, -16, -8), (6, 9, 5)),  # ventral DC
    _Blob(10, (-11, -18, 7), (7, 14, 8)),  # thalamus
    _Blob(11, (-18, 12, 11), (5, 12, 8), pitch=-15),  # caudate
    _Blob(12, (-27, 3, 0), (5, 14, 9)),  # putamen
    _Blob(13, (-19, -2, -1), (3.5, 8, 5.5)),  # pallidum
    _Blob(26, (-10, 10, -8), (4, 5, 4)),  # accumbens
    _Blob(24, (0, 2, -17), (6, 5, 3), paired=False),  # CSF
    _Blob(14, (0, -14, 2), (2, 13, 8), marker="third_ventricle", paired=False),
    _Blob(4, (-9, 14, 12), (5, 13, 9), marker="lateral_ventricle"),  # frontal horn
    _Blob(4, (-12, -10, 18), (5.5, 24, 6), yaw=-15, marker="lateral_ventricle"),  # body
    _Blob(4, (-22, -38, 12), (7, 11, 8), yaw=-20, marker="lateral_ventricle"),  # atrium
    _Blob(31, (-24, -38, 12), (2.5, 5, 2.5), within=(4,)),  # choroid plexus
    _Blob(5, (-34, -18, -7), (2.5, 13, 2.5), pitch=-20, yaw=15, marker="inf_lat_vent"),  # temporal horn
    _Blob(18, (-22, 3, -18), (7, 7.5, 6), marker="amygdala"),
    _Blob(17, (-28, -22, -14), (6.5, 19, 7), pitch=-20, yaw=15, bend=0.01, marker="hippocampus"),
)


@dataclass(frozen=True)
class ImageSpec:
    """Everything needed to draw one label map; the worker function is a pure function of it."""

    image_id: str  # with the ``I``: the file name
    subject: str
    group: str
    sex: str
    age: int
    visit: str
    severity: float
    head_scale: float
    rotation_deg: tuple[float, float, float]
    translation_mm: tuple[float, float, float]
    volumes: dict[str, tuple[float, float]]  # marker → (left, right) volume factor
    cortex_mm: float  # thickness before disease thinning
    wmh: tuple[tuple[float, float, float, float], ...] = ()  # (x, y, z, radius) mm
    cortex_thickening: int = 0  # voxels of white matter the segmentation calls cortex
    missing_labels: tuple[int, ...] = ()  # ids the segmentation does not produce
    effect_scale: float = 1.0  # factor on the disease effects (volume changes per severity, cortical thinning)


# --- geometry ----------------------------------------------------------------------------------------------
def conformed_affine(size: int) -> np.ndarray:
    """Vox→RAS of FreeSurfer's conformed grid (LIA, 256 mm field of view) centred at the origin."""
    v, half = 256.0 / size, 128.0
    return np.array([[-v, 0, 0, half], [0, 0, v, -half], [0, -v, 0, half], [0, 0, 0, 1]], dtype=np.float64)


def _rotation(yaw: float = 0.0, pitch: float = 0.0, roll: float = 0.0) -> np.ndarray:
    """Rz(yaw) · Rx(pitch) · Ry(roll), angles in degrees."""
    a, b, c = np.deg2rad([yaw, pitch, roll])
    rz = np.array([[np.cos(a), -np.sin(a), 0], [np.sin(a), np.cos(a), 0], [0, 0, 1]])
    rx = np.array([[1, 0, 0], [0, np.cos(b), -np.sin(b)], [0, np.sin(b), np.cos(b)]])
    ry = np.array([[np.cos(c), 0, np.sin(c)], [0, 1, 0], [-np.sin(c), 0, np.cos(c)]])
    return rz @ rx @ ry


def _voxel_to_template(spec: ImageSpec, size: int) -> tuple[np.ndarray, np.ndarray]:
    """(M, b) with template = M·ijk + b: undoes the pose and head size so anatomy is defined once."""
    affine = conformed_affine(size)
    rot = _rotation(*spec.rotation_deg)
    m = rot.T @ affine[:3, :3] / spec.head_scale
    b = rot.T @ (affine[:3, 3] - np.asarray(spec.translation_mm)) / spec.head_scale + _BRAIN_CENTRE
    return m, b


def _box(m: np.ndarray, b: np.ndarray, lo: np.ndarray, hi: np.ndarray, size: int) -> tuple[slice, ...] | None:
    """Voxel slices covering a template box, so each structure is evaluated only where it can be."""
    corners = np.array(np.meshgrid(*zip(lo, hi), indexing="ij")).reshape(3, -1)
    ijk = np.linalg.solve(m, corners - b[:, None])
    start = np.clip(np.floor(ijk.min(axis=1)).astype(int), 0, size)
    stop = np.clip(np.ceil(ijk.max(axis=1)).astype(int) + 1, 0, size)
    if np.any(stop <= start):
        return None
    return tuple(slice(s, e) for s, e in zip(start, stop))


def _grid(m: np.ndarray, b: np.ndarray, box: tuple[slice, ...]) -> list[np.ndarray]:
    """Template coordinates (x, y, z) of the voxel centres in a box, float32."""
    i, j, k = (np.arange(s.start, s.stop, dtype=np.float32) for s in box)
    m32 = m.astype(np.float32)
    return [
        m32[a, 0] * i[:, None, None] + m32[a, 1] * j[None, :, None] + m32[a, 2] * k[None, None, :] + np.float32(b[a])
        for a in range(3)
    ]


def _total(terms: Iterable[np.ndarray]) -> np.ndarray:
    """``sum`` of arrays, typed as the array it is (``sum`` starts from the int 0; adding it changes no value)."""
    return reduce(operator.add, terms)


def _ellipsoid_q(
    xyz: list[np.ndarray],
    centre: Sequence[float] | np.ndarray,
    semi: Sequence[float] | np.ndarray,
    rot: np.ndarray,
    bend: float = 0.0,
) -> np.ndarray:
    """Squared normalised radius in the ellipsoid's own frame: < 1 inside."""
    d = [c - np.float32(o) for c, o in zip(xyz, centre)]
    u = [_total(np.float32(rot[r, a]) * d[r] for r in range(3)) for a in range(3)]
    if bend:
        u[2] = u[2] - np.float32(bend) * u[1] ** 2
    return _total((ua / np.float32(s)) ** 2 for ua, s in zip(u, semi))


# --- drawing -----------------------------------------------------------------------------------------------
def _parcel_thickness(spec: ImageSpec) -> np.ndarray:
    """Cortical thickness per surface parcel: thinner with disease, temporal lobe first."""
    return spec.cortex_mm * (1.0 - _CORTEX_THINNING * spec.effect_scale * spec.severity * _WEIGHTS)


def _nearest_parcel(x: np.ndarray, y: np.ndarray, z: np.ndarray) -> np.ndarray:
    """Index into ``_SURFACE_PARCELS`` of the nearest anchor, right hemisphere mirrored onto the left."""
    p = np.stack([-np.abs(x), y, z], axis=1)
    d2 = (p**2).sum(axis=1, keepdims=True) - 2 * p @ _ANCHORS.T + (_ANCHORS**2).sum(axis=1)
    return np.argmin(d2, axis=1)


def _paint_cerebrum(labels: np.ndarray, m: np.ndarray, b: np.ndarray, spec: ImageSpec) -> None:
    """White matter inside the brain ellipsoid, a parcellated cortical ribbon on its outer, medial and
    cerebellar faces, and the cerebellum (cortex round a white-matter core) tucked under it.
    """
    box = _box(m, b, _BRAIN_LO, _BRAIN_HI, labels.shape[0])
    assert box is not None, "the brain lies inside any grid the generator draws"
    x, y, z = xyz = _grid(m, b, box)
    rel = [c - np.float32(o) for c, o in zip(xyz, _BRAIN_CENTRE)]
    dist = np.sqrt(_total(c**2 for c in rel))
    r = np.sqrt(_total((c / np.float32(s)) ** 2 for c, s in zip(rel, _BRAIN_SEMI)))
    depth = dist * (1 / np.maximum(r, 1e-3) - 1)  # radial distance to the outer surface
    rcb = np.sqrt(_ellipsoid_q(xyz, _CEREBELLUM_CENTRE, _CEREBELLUM_SEMI, np.eye(3)))
    dist_cb = np.sqrt(_total((c - np.float32(o)) ** 2 for c, o in zip(xyz, _CEREBELLUM_CENTRE)))
    depth = np.minimum(depth, dist_cb * (1 - 1 / np.maximum(rcb, 1e-3)))
    cy, cz, sy, sz = _CORE
    core = ((y - cy) / sy) ** 2 + ((z - cz) / sz) ** 2 < 1
    medial = np.where(core, np.inf, np.abs(x) - _GAP_MM)
    depth = np.minimum(depth, medial)
    left = x < 0
    cerebrum = (r < 1) & (rcb >= 1) & (medial >= 0)
    out = np.where(cerebrum, np.where(left, 2, 41), 0).astype(np.int16)

    thickness = _parcel_thickness(spec)
    ribbon = cerebrum & (depth < thickness.max())
    parcel = _nearest_parcel(x[ribbon], y[ribbon], z[ribbon])
    ribbon_labels = out[ribbon]
    cortex = depth[ribbon] < thickness[parcel]
    ids = np.where(left[ribbon], 1000, 2000) + _SURFACE_PARCELS[parcel]
    ribbon_labels[cortex] = ids[cortex]
    out[ribbon] = ribbon_labels

    cerebellum = rcb < 1
    cb_wm = _ellipsoid_q([np.abs(x), y, z], (18, -58, -30), (14, 16, 10), np.eye(3)) < 1
    out[cerebellum] = np.where(left, np.where(cb_wm, 7, 8), np.where(cb_wm, 46, 47))[cerebellum]
    labels[box] = out


def _paint_blob(labels: np.ndarray, m: np.ndarray, b: np.ndarray, blob: _Blob, right: bool, factor: float) -> None:
    """Paint one (possibly mirrored) ellipsoid, its volume scaled by ``factor``, inside its bounding box."""
    semi = np.asarray(blob.semi) * factor ** (1 / 3)
    centre = np.array([-blob.centre[0] if right else blob.centre[0], *blob.centre[1:]])
    rot = _rotation(-blob.yaw if right else blob.yaw, blob.pitch)
    reach = semi.max() + blob.bend * semi.max() ** 2 + 1.0
    box = _box(m, b, centre - reach, centre + reach, labels.shape[0])
    if box is None:
        return
    inside = _ellipsoid_q(_grid(m, b, box), centre, semi, rot, blob.bend) < 1
    label = _RIGHT[blob.label] if right else blob.label
    target = labels[box]
    if blob.within is not None:
        inside &= np.isin(target, [_RIGHT[w] if right else w for w in blob.within])
    target[inside] = label


def _paint_wmh(labels: np.ndarray, m: np.ndarray, b: np.ndarray, spec: ImageSpec) -> None:
    """Small periventricular white-matter hypointensities (77), only where there is white matter."""
    for *centre, radius in spec.wmh:
        lo, hi = np.asarray(centre) - radius - 1, np.asarray(centre) + radius + 1
        box = _box(m, b, lo, hi, labels.shape[0])
        if box is None:
            continue
        inside = _ellipsoid_q(_grid(m, b, box), centre, (radius,) * 3, np.eye(3)) < 1
        target = labels[box]
        target[inside & np.isin(target, (2, 41))] = 77


# --- another site's segmentation ---------------------------------------------------------------------------
#: Ids a shifted site's segmentation may leave out: the structures that carry no disease effect (the markers of
#: ``_EFFECTS`` stay, so a model's target is the default cohort's) and the WM hypointensities, never cortex or WM.
MISSABLE_LABELS: tuple[int, ...] = tuple(
    sorted(
        {77}
        | {b.label for b in _BLOBS if b.marker is None and b.label < 1000}
        | {_RIGHT[b.label] for b in _BLOBS if b.marker is None and b.label < 1000 and b.paired}
    )
)


def _neighbours(a: np.ndarray, fill: bool | int) -> list[np.ndarray]:
    """``a`` as seen from each voxel's six face neighbours, in a fixed order; ``fill`` past the edge."""
    seen = []
    for axis in range(3):
        for near, far in ((slice(1, None), slice(None, -1)), (slice(None, -1), slice(1, None))):
            out = np.full_like(a, fill)
            dst, src = [slice(None)] * 3, [slice(None)] * 3
            dst[axis], src[axis] = near, far
            out[tuple(dst)] = a[tuple(src)]
            seen.append(out)
    return seen


def _grow(labels: np.ndarray, sources: np.ndarray, targets: np.ndarray, steps: int | None = None) -> None:
    """Move a segmentation boundary in place: layer by layer, each ``targets`` voxel beside a ``sources`` voxel takes
    that voxel's label (the first neighbour in a fixed order wins a tie) and becomes a source; ``steps`` layers, or
    (None) until no target touches a source. Only the box round the targets is touched, so small structures are cheap.
    """
    if not targets.any():
        return
    box = tuple(slice(max(int(i.min()) - 1, 0), int(i.max()) + 2) for i in np.nonzero(targets))
    view, sources, targets = labels[box], sources[box].copy(), targets[box].copy()
    layers = 0
    while steps is None or layers < steps:
        taken = np.zeros_like(targets)
        grown = view.copy()
        for near_source, near_label in zip(_neighbours(sources, False), _neighbours(view, 0)):
            claim = targets & near_source & ~taken
            grown[claim] = near_label[claim]
            taken |= claim
        if not taken.any():
            return
        view[...] = grown
        sources |= taken
        targets &= ~taken
        layers += 1


def _thicken_cortex(labels: np.ndarray, voxels: int) -> None:
    """Grow each hemisphere's cortex labels into its own cerebral white matter by ``voxels`` layers."""
    for white_matter, first in ((2, 1000), (41, 2000)):
        cortex = (labels >= first) & (labels < first + 1000)
        _grow(labels, cortex, labels == white_matter, voxels)


def _leave_out(labels: np.ndarray, ids: tuple[int, ...]) -> None:
    """Relabel the voxels of ``ids`` as the tissue round them, as a segmentation without those labels would."""
    missing = np.isin(labels, ids)
    _grow(labels, ~missing, missing)


def render(spec: ImageSpec, size: int) -> np.ndarray:
    """The int16 label map of one image on the ``size``³ conformed LIA grid (voxel ``256/size`` mm)."""
    labels = np.zeros((size, size, size), dtype=np.int16)
    m, b = _voxel_to_template(spec, size)
    _paint_cerebrum(labels, m, b, spec)
    for blob in _BLOBS:
        for right in (False, True) if blob.paired else (False,):
            factor = spec.volumes[blob.marker][int(right)] if blob.marker else 1.0
            _paint_blob(labels, m, b, blob, right, factor)
    _paint_wmh(labels, m, b, spec)
    if spec.missing_labels:
        _leave_out(labels, spec.missing_labels)
    if spec.cortex_thickening:
        _thicken_cortex(labels, spec.cortex_thickening)
    return labels


def _voxel_counts(labels: np.ndarray) -> dict[str, int]:
    """Voxel counts of the AD markers, the truth a model's saliency can be checked against."""
    counts = np.bincount(labels.ravel().astype(np.intp), minlength=3000)
    return {
        "hippocampus_voxels": int(counts[17] + counts[53]),
        "amygdala_voxels": int(counts[18] + counts[54]),
        "lateral_ventricle_voxels": int(counts[4] + counts[43]),
        "inf_lat_vent_voxels": int(counts[5] + counts[44]),
        "cortex_voxels": int(counts[1000:].sum()),
        "brain_voxels": int(counts[1:].sum()),
    }


def _write_image(spec: ImageSpec, size: int, out: Path) -> dict[str, int]:
    """Worker: draw, save as the MGH FastSurfer writes, return the voxel counts for the truth table."""
    labels = render(spec, size)
    nib.save(nib.MGHImage(labels, conformed_affine(size)), out / spec.group / f"{spec.image_id}{FILE_SUFFIX}")
    return _voxel_counts(labels)


# --- cohort ------------------------------------------------------------------------------------------------
@dataclass(frozen=True)
class _Subject:
    """Traits that stay fixed across a subject's visits."""

    index: int
    subject: str
    group: str
    sex: str
    age: int
    severity: float
    head_scale: float
    jitter: dict[str, tuple[float, float]]
    cortex_mm: float
    first_scan: date
    visits: int


def _groups(n: int, rng: np.random.Generator) -> list[str]:
    """Group per subject in the ADNI-1 proportions, exact up to rounding so small cohorts hold every group."""
    counts = {g: round(n * _GROUP_SHARE[g]) for g in ("CN", "AD")}
    counts["MCI"] = n - counts["CN"] - counts["AD"]
    return [str(g) for g in rng.permutation([g for g in GROUPS for _ in range(counts[g])])]


def _draw_subject(cohort: SyntheticCohort, index: int, subject: str, group: str, visits: int) -> _Subject:
    """A subject's own generator makes the traits independent of cohort size and worker count; the site's shifts
    move the drawn age and head size, not the draws, so the same seed gives the same people at every site.
    """
    rng = np.random.default_rng([cohort.seed, index])
    sex = "M" if rng.random() < _MALE[group] else "F"
    mean, sd = _AGE[group]
    jitter: dict[str, tuple[float, float]] = {}
    for name, (_, _, spread) in _EFFECTS.items():
        shared = rng.normal(1.0, spread)
        left, right = (float(max(0.3, shared * rng.normal(1.0, 0.03))) for _ in range(2))
        jitter[name] = (left, right)
    return _Subject(
        index=index,
        subject=subject,
        group=group,
        sex=sex,
        age=int(np.clip(round(rng.normal(mean, sd) + cohort.age_shift), 55, 92)),
        severity=float(rng.beta(*_SEVERITY[group])),
        head_scale=float(rng.normal(1.03 if sex == "M" else 0.97, 0.03)) * cohort.head_scale,
        jitter=jitter,
        cortex_mm=float(_CORTEX_MM * rng.normal(1.0, 0.05)),
        first_scan=date(2005, 9, 1) + timedelta(days=int(rng.integers(0, 820))),
        visits=visits,
    )


def _volume_factors(
    severity: float, age: int, jitter: dict[str, tuple[float, float]], effect_scale: float = 1.0
) -> dict[str, tuple[float, float]]:
    """Disease × age × individual volume factor per structure and side; ``effect_scale`` scales the change per
    unit severity (exactly: at 1.0 every factor keeps its bits), never the age effect.
    """
    decades = (age - 75) / 10
    factors = {}
    for name, (per_severity, per_decade, _) in _EFFECTS.items():
        base = max(0.2, (1 + per_severity * effect_scale * severity) * (1 + per_decade * decades))
        factors[name] = (base * jitter[name][0], base * jitter[name][1])
    return factors


def _xyz(values: np.ndarray) -> tuple[float, float, float]:
    """Three draws as the (x, y, z) floats an :class:`ImageSpec` holds."""
    x, y, z = (float(v) for v in values)
    return x, y, z


def _image_spec(subject: _Subject, cohort: SyntheticCohort, visit: int, image_id: str) -> ImageSpec:
    """One scan: later visits are a year older and (MCI/AD) more atrophied; every scan has its own pose."""
    rng = np.random.default_rng([cohort.seed, subject.index, visit + 1])
    lo, hi = _PROGRESSION[subject.group]
    severity = min(1.0, subject.severity + visit * rng.uniform(lo, hi))
    age = subject.age + visit
    decades = (age - 75) / 10
    wmh = tuple(
        (
            float(side * rng.uniform(14, 30)),
            float(rng.uniform(-35, 20)),
            float(rng.uniform(8, 28)),
            float(rng.uniform(1.5, 3.5)),
        )
        for side in rng.choice((-1, 1), size=rng.poisson(0.5 + max(decades, 0) + 1.5 * severity))
    )
    return ImageSpec(
        image_id=image_id,
        subject=subject.subject,
        group=subject.group,
        sex=subject.sex,
        age=age,
        visit="sc" if visit == 0 else f"m{12 * visit:02d}",
        severity=float(severity),
        head_scale=subject.head_scale,
        rotation_deg=_xyz(rng.uniform(-4, 4, 3)),
        translation_mm=_xyz(rng.uniform(-3, 3, 3)),
        volumes=_volume_factors(severity, age, subject.jitter, cohort.effect_scale),
        cortex_mm=subject.cortex_mm * (1 - 0.02 * decades),
        wmh=wmh,
        cortex_thickening=cohort.cortex_thickening,
        missing_labels=cohort.missing_labels,
        effect_scale=cohort.effect_scale,
    )


def _us_date(d: date) -> str:
    """ADNI's M/D/YYYY without leading zeros."""
    return f"{d.month}/{d.day}/{d.year}"


def _plan(cohort: SyntheticCohort) -> tuple[list[ImageSpec], list[dict], list[_Subject]]:
    """Draw the cohort: image specs for the workers, the matching CSV rows, and the people scanned."""
    subjects = cohort.subjects
    rng = np.random.default_rng(cohort.seed)
    groups = _groups(subjects, rng)
    rids = rng.choice(np.arange(1, min(10_000, max(1500, 3 * subjects))), size=subjects, replace=False)
    sites = rng.integers(2, 142, size=subjects)  # drawn for one site too: the later draws stay the same
    if cohort.site is not None:
        sites[:] = cohort.site
    repeat = set(rng.choice(subjects, size=round(cohort.second_visit_fraction * subjects), replace=False).tolist())
    people = [
        _draw_subject(cohort, k, f"{sites[k]:03d}_S_{rids[k]:04d}", groups[k], 2 if k in repeat else 1)
        for k in range(subjects)
    ]
    scans = [(p, v) for v in range(2) for p in people if v < p.visits]  # baseline ids precede follow-ups
    numbers = np.sort(rng.choice(np.arange(10_000, 1_000_000), size=len(scans), replace=False))
    descriptions = rng.choice(len(_DESCRIPTIONS), size=len(scans), p=_DESCRIPTION_P)
    downloaded = _us_date(date(2023, 1, 1) + timedelta(days=int(rng.integers(0, 700))))
    specs, rows = [], []
    for (person, visit), number, description in zip(scans, numbers, descriptions):
        spec = _image_spec(person, cohort, visit, f"I{number}")
        acquired = person.first_scan + timedelta(days=visit * int(365 + rng.integers(-30, 31)))
        specs.append(spec)
        rows.append(
            {
                "Image Data ID": spec.image_id,
                "Subject": spec.subject,
                "Group": spec.group,
                "Sex": spec.sex,
                "Age": spec.age,
                "Visit": spec.visit,
                "Modality": "MRI",
                "Description": _DESCRIPTIONS[description],
                "Type": "Processed",
                "Acq Date": _us_date(acquired),
                "Format": "NiFTI",
                "Downloaded": downloaded,
            }
        )
    return specs, rows, people


def _clinical_visits(person: _Subject, cohort: SyntheticCohort, scans: dict[int, date]) -> list[dict]:
    """One subject's rows of the clinical table: visits from baseline to a drawn last one (never before its last
    scan), the diagnosis from the subject's conversion times, MMSE and CDR-SB from its severity at each visit.

    Conversion comes sooner with a higher baseline severity: MCI → AD after ``exp(N(log 3 − 4·(s − 0.44), 0.45))``
    years, CN → MCI after ``exp(N(log 12 − 5·(s − 0.18), 0.5))`` years (the groups' mean severities), so about half
    the MCI subjects convert within three years and few CN subjects do. A few MCI subjects read CN at one visit before
    any conversion (reverters). Its own generator leaves every draw of the images as it was.
    """
    rng = np.random.default_rng([cohort.seed, person.index, _CLINICAL_STREAM])
    last = int(rng.choice(len(CLINICAL_VISITS), p=_LAST_VISIT_P))
    last = max(last, max(CLINICAL_VISITS.index(12 * v) for v in scans))
    to_mci = to_ad = np.inf
    if person.group == "CN":
        to_mci = 12 * float(np.exp(rng.normal(np.log(12.0) - 5.0 * (person.severity - 0.18), 0.5)))
    elif person.group == "MCI":
        to_ad = 12 * float(np.exp(rng.normal(np.log(3.0) - 4.0 * (person.severity - 0.44), 0.45)))
    reverts_at = CLINICAL_VISITS[int(rng.integers(1, 3))] if rng.random() < _REVERTER_SHARE else None
    rate = sum(_PROGRESSION[person.group]) / 2
    rows = []
    for months in CLINICAL_VISITS[: last + 1]:
        if person.group == "AD" or months >= to_ad:
            diagnosis = "Dementia"
        elif person.group == "MCI":
            diagnosis = "CN" if months == reverts_at and months < to_ad else "MCI"
        else:
            diagnosis = "MCI" if months >= to_mci else "CN"
        severity = min(1.0, person.severity + rate * months / 12)
        planned = person.first_scan + timedelta(days=round(months * 30.44))
        scanned = scans.get(months // 12) if months % 12 == 0 else None
        exam = (scanned or planned) + timedelta(days=int(rng.integers(-14, 15)))
        rows.append(
            {
                "RID": int(person.subject[-4:]),
                "PTID": person.subject,
                "VISCODE": "bl" if months == 0 else f"m{months:02d}",
                "EXAMDATE": exam.isoformat(),
                "DX_bl": {"CN": "CN", "MCI": "LMCI", "AD": "AD"}[person.group],
                "DX": diagnosis,
                "AGE": person.age,
                "PTGENDER": "Male" if person.sex == "M" else "Female",
                "MMSE": int(np.clip(round(31.5 - 13 * severity + rng.normal(0, 1.2)), 0, 30)),
                "CDRSB": float(np.clip(round(2 * (9 * severity - 2 + rng.normal(0, 0.6))) / 2, 0, 18)),
            }
        )
    return rows


def clinical_table(cohort: SyntheticCohort) -> pd.DataFrame:
    """The cohort's ADNIMERGE-like table (:data:`CLINICAL_NAME`), drawn without rendering an image: the same people
    and scan dates as :func:`generate_cohort` writes, so every image joins its visit (``sc`` → ``bl``, ``m12``).
    """
    _, rows, people = _plan(cohort)
    scans: dict[str, dict[int, date]] = {}
    for row in rows:
        visit = 0 if row["Visit"] == "sc" else int(row["Visit"][1:]) // 12
        month, day, year = (int(x) for x in row["Acq Date"].split("/"))
        scans.setdefault(row["Subject"], {})[visit] = date(year, month, day)
    visits = [row for person in people for row in _clinical_visits(person, cohort, scans[person.subject])]
    return pd.DataFrame(visits, columns=list(CLINICAL_COLUMNS)).sort_values(["PTID"], kind="stable", ignore_index=True)


def write_clinical_table(path: Path, cohort: SyntheticCohort) -> None:
    """Write :func:`clinical_table` at ``path`` (for a cohort generated without it, or with it)."""
    clinical_table(cohort).to_csv(path, index=False, lineterminator="\n")


def _truth_row(spec: ImageSpec, counts: dict[str, int]) -> dict:
    """The generating parameters of one image next to what ended up in its label map."""
    return {
        "image_id": spec.image_id,
        "subject": spec.subject,
        "group": spec.group,
        "sex": spec.sex,
        "age": spec.age,
        "visit": spec.visit,
        "severity": spec.severity,
        "head_scale": spec.head_scale,
        **{f"rotation_{a}_deg": r for a, r in zip("xyz", spec.rotation_deg)},
        **{f"translation_{a}_mm": t for a, t in zip("xyz", spec.translation_mm)},
        "cortex_mm": spec.cortex_mm,
        **counts,
    }


def _render_all(specs: list[ImageSpec], size: int, out: Path, workers: int) -> list[dict[str, int]]:
    job = partial(_write_image, size=size, out=out)
    progress: dict[str, Any] = {"total": len(specs), "desc": "generating synthetic label maps", "unit": "img"}
    if workers <= 1:
        return [job(spec) for spec in tqdm(specs, **progress)]
    with ProcessPoolExecutor(max_workers=workers) as pool:
        chunks = max(1, len(specs) // (4 * workers))
        return list(tqdm(pool.map(job, specs, chunksize=chunks), **progress))


@dataclass(frozen=True)
class SyntheticCohort:
    """Parameters of a synthetic cohort; every default is the real download's format.

    Args:
        subjects: number of subjects (4-digit subject numbers, so fewer than 10000).
        size: grid side in voxels; the field of view stays 256 mm, so a voxel is 256/size mm.
        seed: seed of every draw (same seed, same bytes, whatever the number of worker processes; same people,
            whatever the site options below).
        second_visit_fraction: share of subjects with a second (m12) visit.
        bare_ids: write the CSV's image ids without the leading ``I``, as some IDA exports do (files keep it).
        site: the site number of every subject id (``999`` in ``999_S_0295``), from 1 to 999; default (null): each
            subject at one of ADNI's sites 2-141, as in a download.
        age_shift: years added to every subject's age (ages stay within 55-92); the age effect on the structures
            follows, as in an older or younger cohort.
        head_scale: factor on the size of every head (each subject's own size still varies round it): labelled
            volumes scale by its cube.
        cortex_thickening: voxels of white matter under the cortex labelled cortex, as a segmentation that puts
            the white surface deeper would.
        missing_labels: label ids the segmentation does not produce, relabelled as the tissue round them: ids of
            structures without a disease effect, such as 31/63 (choroid plexus) and 77 (WM hypointensities); an id
            that cannot be left out is refused with the list.
        clinical: also write an ADNIMERGE-like table of visits bl to m36 (:data:`CLINICAL_NAME`): the diagnosis
            at each visit (conversion sooner with a higher severity), MMSE and CDR-SB, for the tasks of ``data.task``.
        effect_scale: factor on the disease signal in the images, from 0 to 2: the volume change per unit severity of
            hippocampus, amygdala and ventricles and the cortical thinning; 0 leaves severity out of the images, 0.5
            halves its effects. The same seed draws the same people, severities, poses and clinical table (age
            effects and the WM hypointensities' count stay), so a cohort with a weaker or stronger signal is a
            controlled second cohort.
    """

    subjects: int = 200
    size: int = 256
    seed: int = 0
    second_visit_fraction: float = 0.4
    bare_ids: bool = False
    site: int | None = None
    age_shift: float = 0.0
    head_scale: float = 1.0
    cortex_thickening: int = 0
    missing_labels: tuple[int, ...] = ()
    clinical: bool = False
    effect_scale: float = 1.0

    def __post_init__(self) -> None:
        if not 1 <= self.subjects < 10_000 or self.size < 8 or not 0 <= self.second_visit_fraction <= 1:
            raise OptionError(
                "need 1 <= subjects < 10000 (4-digit ids), size >= 8 and 0 <= second_visit_fraction <= 1, got "
                f"subjects={self.subjects}, size={self.size}, second_visit_fraction={self.second_visit_fraction}"
            )
        object.__setattr__(self, "missing_labels", tuple(sorted(set(self.missing_labels))))
        allowed = {
            "site": (self.site is None or 1 <= self.site <= 999, "from 1 to 999 (3 digits of a subject id), or null"),
            "age_shift": (abs(self.age_shift) <= 20, "from -20 to 20 (years)"),
            "head_scale": (0.5 <= self.head_scale <= 1.25, "from 0.5 to 1.25 (a larger head leaves the 256 mm view)"),
            "cortex_thickening": (self.cortex_thickening >= 0, "0 or more (voxels)"),
            "effect_scale": (0 <= self.effect_scale <= 2, "from 0 to 2 (0: no disease signal in the images)"),
            "missing_labels": (
                set(self.missing_labels) <= set(MISSABLE_LABELS),
                f"ids among {list(MISSABLE_LABELS)} (the structures without a disease effect)",
            ),
        }
        for name, (ok, expected) in allowed.items():
            if not ok:
                raise OptionError(f"synthetic cohort option {name}={getattr(self, name)!r}: it must be {expected}")


#: Named sets of :class:`SyntheticCohort` options: ``synth --preset NAME``, explicit options override them. ``shifted``
#: is another site for external-cohort checks (``configs/synthetic_shifted.yaml`` holds the same values): other
#: people (seed 1) from one site, 6 years younger, heads 5 % larger (labelled volumes +16 %), a cortex label one voxel
#: thicker, and no choroid plexus or WM hypointensity labels; the disease effects are the default cohort's.
PRESETS: dict[str, dict[str, Any]] = {
    "shifted": {
        "seed": 1,
        "site": 999,
        "age_shift": -6.0,
        "head_scale": 1.05,
        "cortex_thickening": 1,
        "missing_labels": (31, 63, 77),
    }
}


class CohortFolderError(ManifestError):
    """A synthetic cohort would be written over files it did not write (a download, anything else)."""


def check_cohort_folder(folder: Path, option: str, context: str = "", advice: str = "") -> None:
    """Refuse to write a synthetic cohort into ``folder`` unless it does not exist yet or holds an earlier synthetic
    cohort (its marker file): the one rule of the ``synth`` command and :class:`SyntheticDataModule`, so a user's
    CSV or label maps are never replaced or mixed with generated ones. ``option`` is what points at ``folder``;
    ``context`` opens the message (why a cohort would be generated), ``advice`` ends it.
    """
    if not folder.exists() or (folder / MARKER_NAME).is_file():
        return
    if folder.is_dir():
        found = sorted(p.name for p in folder.iterdir())
        held = f"holds other files ({', '.join(found[:5])})" if found else "exists (empty)"
        what = f"{folder} {held} and no earlier synthetic cohort"
    else:
        what = f"{folder} is a file, not a folder"
    raise CohortFolderError(
        f"{context}{what}: refusing to generate a synthetic cohort there; point {option} at a folder that does not "
        f"exist yet{advice}"
    )


def generate_cohort(out: str | Path, *, workers: int | None = None, **params: Any) -> pd.DataFrame:
    """Write a synthetic ADNI download to ``out`` and return its CSV table; says where first, as an absolute path
    (a relative one depends on the working directory).

    ``params`` are the fields of :class:`SyntheticCohort`; ``workers`` processes render the images (default:
    every core). Callers that take ``out`` from a user check it with :func:`check_cohort_folder` first.
    """
    cohort = SyntheticCohort(**params)
    out = Path(out)
    log.info(
        "generating a synthetic cohort (%d subjects, %d³ voxels) in %s", cohort.subjects, cohort.size, out.absolute()
    )
    for group in GROUPS:
        (out / group).mkdir(parents=True, exist_ok=True)
    (out / MARKER_NAME).write_text("written by adni_lightning's synthetic cohort generator\n")
    specs, rows, _ = _plan(cohort)
    counts = _render_all(specs, cohort.size, out, workers or os.cpu_count() or 1)
    pd.DataFrame([_truth_row(s, c) for s, c in zip(specs, counts)]).to_csv(
        out / TRUTH_NAME, index=False, lineterminator="\n"
    )
    table = pd.DataFrame(rows, columns=list(CSV_COLUMNS)).sort_values("Subject", kind="stable", ignore_index=True)
    if cohort.bare_ids:
        table["Image Data ID"] = table["Image Data ID"].str.removeprefix("I")
    if cohort.clinical:
        write_clinical_table(out / CLINICAL_NAME, cohort)
    table.to_csv(out / CSV_NAME, index=False, quoting=csv.QUOTE_ALL, lineterminator="\n")
    return table
