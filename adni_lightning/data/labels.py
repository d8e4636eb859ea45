"""FreeSurfer label ids of the label maps the pipeline reads, and the input channel each belongs to.

The ids, names and colours are those of FreeSurfer's ``FreeSurferColorLUT.txt``. The volumes hold raw ids
(0 … 2035); the cache holds them as a compact index (0 … N-1, uint8) through :data:`KNOWN_LABELS`, so a
flip can swap hemispheres and the model can one-hot the structures it is given.

Which ids a map holds depends on the program that wrote it (:data:`LABEL_MAPS`): FastSurfer's deep map lacks
the corpus callosum, vessels and hypointensities outside white matter that recon-all's ``aseg.mgz`` has. Every
id of every one of these maps is either one-hot encoded in exactly one of :data:`DEFAULT_CHANNELS` or listed
in :data:`LEFT_OUT` with the reason, so the same brain segmented by either program fills the same channels.
Out of scope: ``aparc.a2009s+aseg.mgz`` (Destrieux cortex ids 11100–12175, 75 a hemisphere: beside the ids here
they would overflow the uint8 compact index) and ``wmparc.mgz`` (white-matter parcels 3000–5002).
"""

from __future__ import annotations

from collections.abc import Mapping, Sequence

import numpy as np

from adni_lightning.errors import OptionError
from adni_lightning.vocabulary import CompactLabel, LabelId

_DKT_REGIONS: dict[int, tuple[str, tuple[int, int, int]]] = {
    0: ("unknown", (25, 5, 25)),
    1: ("bankssts", (25, 100, 40)),
    2: ("caudalanteriorcingulate", (125, 100, 160)),
    3: ("caudalmiddlefrontal", (100, 25, 0)),
    4: ("corpuscallosum", (120, 70, 50)),
    5: ("cuneus", (220, 20, 100)),
    6: ("entorhinal", (220, 20, 10)),
    7: ("fusiform", (180, 220, 140)),
    8: ("inferiorparietal", (220, 60, 220)),
    9: ("inferiortemporal", (180, 40, 120)),
    10: ("isthmuscingulate", (140, 20, 140)),
    11: ("lateraloccipital", (20, 30, 140)),
    12: ("lateralorbitofrontal", (35, 75, 50)),
    13: ("lingual", (225, 140, 140)),
    14: ("medialorbitofrontal", (200, 35, 75)),
    15: ("middletemporal", (160, 100, 50)),
    16: ("parahippocampal", (20, 220, 60)),
    17: ("paracentral", (60, 220, 60)),
    18: ("parsopercularis", (220, 180, 140)),
    19: ("parsorbitalis", (20, 100, 50)),
    20: ("parstriangularis", (220, 60, 20)),
    21: ("pericalcarine", (120, 100, 60)),
    22: ("postcentral", (220, 20, 20)),
    23: ("posteriorcingulate", (220, 180, 220)),
    24: ("precentral", (60, 20, 220)),
    25: ("precuneus", (160, 140, 180)),
    26: ("rostralanteriorcingulate", (80, 20, 140)),
    27: ("rostralmiddlefrontal", (75, 50, 125)),
    28: ("superiorfrontal", (20, 220, 160)),
    29: ("superiorparietal", (20, 180, 140)),
    30: ("superiortemporal", (140, 220, 220)),
    31: ("supramarginal", (80, 160, 20)),
    32: ("frontalpole", (100, 0, 100)),
    33: ("temporalpole", (70, 70, 70)),
    34: ("transversetemporal", (150, 150, 200)),
    35: ("insula", (255, 192, 32)),
}

_ASEG: dict[int, tuple[str, tuple[int, int, int]]] = {
    0: ("Unknown", (0, 0, 0)),
    2: ("Left-Cerebral-White-Matter", (245, 245, 245)),
    3: ("Left-Cerebral-Cortex", (205, 62, 78)),
    4: ("Left-Lateral-Ventricle", (120, 18, 134)),
    5: ("Left-Inf-Lat-Vent", (196, 58, 250)),
    7: ("Left-Cerebellum-White-Matter", (220, 248, 164)),
    8: ("Left-Cerebellum-Cortex", (230, 148, 34)),
    10: ("Left-Thalamus", (0, 118, 14)),
    11: ("Left-Caudate", (122, 186, 220)),
    12: ("Left-Putamen", (236, 13, 176)),
    13: ("Left-Pallidum", (12, 48, 255)),
    14: ("3rd-Ventricle", (204, 182, 142)),
    15: ("4th-Ventricle", (42, 204, 164)),
    16: ("Brain-Stem", (119, 159, 176)),
    17: ("Left-Hippocampus", (220, 216, 20)),
    18: ("Left-Amygdala", (103, 255, 255)),
    24: ("CSF", (60, 60, 60)),
    26: ("Left-Accumbens-area", (255, 165, 0)),
    28: ("Left-VentralDC", (145, 42, 42)),
    30: ("Left-vessel", (160, 32, 240)),
    31: ("Left-choroid-plexus", (0, 200, 200)),
    41: ("Right-Cerebral-White-Matter", (245, 245, 245)),
    42: ("Right-Cerebral-Cortex", (205, 62, 78)),
    43: ("Right-Lateral-Ventricle", (120, 18, 134)),
    44: ("Right-Inf-Lat-Vent", (196, 58, 250)),
    46: ("Right-Cerebellum-White-Matter", (220, 248, 164)),
    47: ("Right-Cerebellum-Cortex", (230, 148, 34)),
    49: ("Right-Thalamus", (0, 118, 14)),
    50: ("Right-Caudate", (122, 186, 220)),
    51: ("Right-Putamen", (236, 13, 176)),
    52: ("Right-Pallidum", (13, 48, 255)),
    53: ("Right-Hippocampus", (220, 216, 20)),
    54: ("Right-Amygdala", (103, 255, 255)),
    58: ("Right-Accumbens-area", (255, 165, 0)),
    60: ("Right-VentralDC", (165, 42, 42)),
    62: ("Right-vessel", (160, 32, 240)),
    63: ("Right-choroid-plexus", (0, 200, 221)),
    72: ("5th-Ventricle", (120, 190, 150)),
    77: ("WM-hypointensities", (200, 70, 255)),
    78: ("Left-WM-hypointensities", (255, 148, 10)),
    79: ("Right-WM-hypointensities", (255, 148, 10)),
    80: ("non-WM-hypointensities", (164, 108, 226)),
    81: ("Left-non-WM-hypointensities", (164, 108, 226)),
    82: ("Right-non-WM-hypointensities", (164, 108, 226)),
    85: ("Optic-Chiasm", (234, 169, 30)),
    251: ("CC_Posterior", (0, 0, 64)),
    252: ("CC_Mid_Posterior", (0, 0, 112)),
    253: ("CC_Central", (0, 0, 160)),
    254: ("CC_Mid_Anterior", (0, 0, 208)),
    255: ("CC_Anterior", (0, 0, 255)),
}


def _build_lut() -> dict[LabelId, tuple[str, tuple[int, int, int]]]:
    lut = {LabelId(label): entry for label, entry in _ASEG.items()}
    for offset, hemi in ((1000, "lh"), (2000, "rh")):
        for region, (name, rgb) in _DKT_REGIONS.items():
            lut[LabelId(offset + region)] = (f"ctx-{hemi}-{name}", rgb)
    return lut


def label_ids(*labels: int) -> tuple[LabelId, ...]:
    """Plain numbers, as tables write FreeSurfer ids, typed as the label ids they are."""
    return tuple(LabelId(label) for label in labels)


#: FreeSurfer id → (name, RGB) for every id a FastSurfer/FreeSurfer aseg-type label map may hold.
FREESURFER_LUT: dict[LabelId, tuple[str, tuple[int, int, int]]] = _build_lut()

#: Channel name → the FreeSurfer ids one-hot encoded in that channel (``data.preprocessing.channels``).
ChannelMap = Mapping[str, Sequence[LabelId]]

#: Sorted FreeSurfer ids; position in this array is the compact index stored in the cache. A new id moves the
#: index of every id above it and caches written before would be misread: add one with a new ``_CACHE_FORMAT``
#: (``data/cache.py``).
KNOWN_LABELS: np.ndarray = np.array(sorted(FREESURFER_LUT), dtype=np.int64)

#: Cortical parcels FastSurfer's DKT atlas writes per hemisphere (no 1, 4, 32, 33).
DKT_PARCELS: tuple[int, ...] = tuple(r for r in _DKT_REGIONS if r not in (0, 1, 4, 32, 33))

_LEFT_RIGHT_ASEG: tuple[tuple[int, int], ...] = (
    (2, 41),
    (3, 42),
    (4, 43),
    (5, 44),
    (7, 46),
    (8, 47),
    (10, 49),
    (11, 50),
    (12, 51),
    (13, 52),
    (17, 53),
    (18, 54),
    (26, 58),
    (28, 60),
    (30, 62),
    (31, 63),
    (78, 79),
    (81, 82),
)

#: Left id → right id for every lateralised label (subcortical pairs and lh/rh cortex).
LEFT_RIGHT_PAIRS: tuple[tuple[LabelId, LabelId], ...] = tuple(
    (LabelId(left), LabelId(right))
    for left, right in _LEFT_RIGHT_ASEG + tuple((1000 + r, 2000 + r) for r in _DKT_REGIONS)
)

_CORTEX = label_ids(3, 42, *range(1000, 1036), *range(2000, 2036))

#: Cortical parcels of the Desikan-Killiany atlas (recon-all's ``aparc``): all but 4, ``corpuscallosum``, a
#: colour-table entry no vertex carries.
DESIKAN_PARCELS: tuple[int, ...] = tuple(r for r in _DKT_REGIONS if r not in (0, 4))


def _both_sides(*ids: int) -> tuple[int, ...]:
    """``ids`` and the right partner of each left one among them."""
    right = dict(_LEFT_RIGHT_ASEG)
    return (*ids, *(right[i] for i in ids if i in right))


def _cortex(parcels: tuple[int, ...]) -> tuple[int, ...]:
    """The lh (1000 + parcel) and rh (2000 + parcel) ids of cortical parcels."""
    return tuple(offset + p for offset in (1000, 2000) for p in parcels)


#: Classes of FastSurfer's network, background included (FastSurferCNN/config/FastSurfer_ColorLUT.tsv): the aseg
#: classes it was trained on once recon-all's labels were reduced to them (FastSurferCNN/data_loader/
#: data_utils.py: corpus callosum → white matter, 80 → 77, vessels → white matter, 5th ventricle → CSF, optic
#: chiasm → background).
_FASTSURFER_ASEG = _both_sides(0, 2, 4, 5, 7, 8, 10, 11, 12, 13, 14, 15, 16, 17, 18, 24, 26, 28, 31, 77)
#: CC_Posterior … CC_Anterior, which ``mri_cc`` paints into an aseg's midline white matter.
_CORPUS_CALLOSUM = (251, 252, 253, 254, 255)
#: recon-all's ``mri_ca_label`` labels on top of FastSurfer's classes: vessels, 5th ventricle (cavum septi
#: pellucidi), hypointensities outside white matter, optic chiasm; the lateralised WM / non-WM hypointensities
#: 78, 79, 81, 82 are rows of every ``aseg.stats`` (``ASegStatsLUT.txt``), almost always with no voxel.
_RECON_ALL_ASEG = (*_FASTSURFER_ASEG, *_both_sides(30, 72, 78, 80, 81, 85), *_CORPUS_CALLOSUM)

#: FastSurfer ``mri/aparc.DKTatlas+aseg.deep.mgz``, the network's output: no generic cortex 3/42 (every cortical
#: voxel has its DKT parcel), no corpus callosum (the network calls it white matter). The synthetic cohort draws
#: exactly these.
FASTSURFER_DEEP: tuple[LabelId, ...] = label_ids(*sorted(_FASTSURFER_ASEG + _cortex(DKT_PARCELS)))
#: FastSurfer ``mri/aparc.DKTatlas+aseg.deep.withCC.mgz``: the deep map with ``mri_cc``'s corpus callosum painted
#: in (recon_surf/paint_cc_into_pred.py).
FASTSURFER_DEEP_WITH_CC: tuple[LabelId, ...] = label_ids(*sorted(FASTSURFER_DEEP + _CORPUS_CALLOSUM))
#: FastSurfer ``mri/aseg.mgz`` (recon-surf.sh): parcels reduced to cortex 3/42 (FastSurferCNN/reduce_to_aseg.py),
#: corpus callosum from ``mri_cc``, hypointensities 77 from ``recon-all -hyporelabel``, edited with the surfaces.
FASTSURFER_ASEG: tuple[LabelId, ...] = label_ids(*sorted((*_FASTSURFER_ASEG, 3, 42, *_CORPUS_CALLOSUM)))
#: FastSurfer ``mri/aparc.DKTatlas+aseg.mapped.mgz``: its aseg.mgz with each cortex voxel relabelled from the DKT
#: annotation on the surfaces (``mri_surf2volseg --label-cortex``, which writes 0, not 3/42, where no parcel fits).
FASTSURFER_MAPPED: tuple[LabelId, ...] = label_ids(
    *sorted((*_FASTSURFER_ASEG, *_CORPUS_CALLOSUM, *_cortex(DKT_PARCELS)))
)
#: recon-all (FreeSurfer 6/7) ``mri/aseg.mgz``: ``mri_ca_label``'s classes, cortex 3/42, corpus callosum.
RECON_ALL_ASEG: tuple[LabelId, ...] = label_ids(*sorted((*_RECON_ALL_ASEG, 3, 42)))
#: recon-all ``mri/aparc+aseg.mgz``: the aseg with its cortex relabelled by the Desikan-Killiany parcels;
#: FreeSurfer 6's ``mri_aparc2aseg`` writes ctx-?h-unknown 1000/2000 where a cortex voxel's vertex has no parcel.
RECON_ALL_APARC_ASEG: tuple[LabelId, ...] = label_ids(*sorted(_RECON_ALL_ASEG + _cortex((0, *DESIKAN_PARCELS))))
#: recon-all ``mri/aparc.DKTatlas+aseg.mgz``: the same with the DKT parcels.
RECON_ALL_DKT_ASEG: tuple[LabelId, ...] = label_ids(*sorted(_RECON_ALL_ASEG + _cortex((0, *DKT_PARCELS))))

#: Map file (program and path in its subject folder) → every id it may hold, background included.
LABEL_MAPS: dict[str, tuple[LabelId, ...]] = {
    "FastSurfer mri/aparc.DKTatlas+aseg.deep.mgz": FASTSURFER_DEEP,
    "FastSurfer mri/aparc.DKTatlas+aseg.deep.withCC.mgz": FASTSURFER_DEEP_WITH_CC,
    "FastSurfer mri/aseg.mgz": FASTSURFER_ASEG,
    "FastSurfer mri/aparc.DKTatlas+aseg.mapped.mgz": FASTSURFER_MAPPED,
    "recon-all mri/aseg.mgz": RECON_ALL_ASEG,
    "recon-all mri/aparc+aseg.mgz": RECON_ALL_APARC_ASEG,
    "recon-all mri/aparc.DKTatlas+aseg.mgz": RECON_ALL_DKT_ASEG,
}

#: Structures given to the network as one-hot channels unless a config names others. Left and right are
#: merged so a hemisphere flip leaves the channels' meaning intact; the groups follow the volumetric
#: markers of AD (hippocampus, amygdala, ventricles, cortex) plus the tissue that frames them. A label that
#: FastSurfer's deep map lacks goes where FastSurfer's training put it when it reduced recon-all's labels to its
#: classes, so a recon-all map fills the channels as FastSurfer's map of the same brain does: the corpus callosum
#: (251–255) and every hypointensity (77–82, in white matter or not) to white matter, and so vessels (30/62),
#: which FastSurfer's training relabels white matter; the 5th ventricle (72) to CSF, with the choroid plexus
#: (31/63) that lies in the ventricles; ctx-?h-unknown (1000/2000) and the generic cortex (3/42) to cortex.
DEFAULT_CHANNELS: dict[str, tuple[LabelId, ...]] = {
    "hippocampus": label_ids(17, 53),
    "amygdala": label_ids(18, 54),
    "lateral_ventricle": label_ids(4, 43),
    "inf_lat_vent": label_ids(5, 44),
    "cortex": _CORTEX,
    "white_matter": label_ids(2, 41, 77, 78, 79, 7, 46, 80, 81, 82, 30, 62, *_CORPUS_CALLOSUM),
    "deep_grey": label_ids(10, 49, 11, 50, 12, 51, 13, 52, 26, 58, 28, 60),
    "csf": label_ids(14, 15, 24, 31, 63, 72),
    "hindbrain": label_ids(8, 47, 16),
}

#: Known ids in no default channel, with the reason: their voxels are zero in every channel, as background is.
LEFT_OUT: dict[LabelId, str] = {
    LabelId(0): "background: no structure",
    LabelId(85): (
        "optic chiasm: outside the cerebrum, below the hypothalamus; FastSurfer's training relabels it background, "
        "so a FastSurfer map of the same brain has no voxel of it in any channel"
    ),
}


def compact_lookup() -> np.ndarray:
    """Table of size ``max id + 1`` mapping each FreeSurfer id to its compact index, -1 where unknown."""
    table = np.full(int(KNOWN_LABELS.max()) + 1, -1, dtype=np.int16)
    table[KNOWN_LABELS] = np.arange(len(KNOWN_LABELS), dtype=np.int16)
    return table


def hemisphere_swap() -> np.ndarray:
    """Compact index → compact index of the mirror structure (identity for midline labels)."""
    to_compact = compact_lookup()
    swap = np.arange(len(KNOWN_LABELS), dtype=np.int64)
    for left, right in LEFT_RIGHT_PAIRS:
        a, b = to_compact[left], to_compact[right]
        swap[a], swap[b] = b, a
    return swap


def label_id(compact: CompactLabel) -> LabelId:
    """The FreeSurfer id of a compact label (a value of a cached label map)."""
    return LabelId(int(KNOWN_LABELS[compact]))


def channel_lookup(channels: ChannelMap) -> np.ndarray:
    """``(num_compact, num_channels)`` float32 table: row i is the one-hot channels of compact label i.

    Raises :class:`~adni_lightning.errors.OptionError` for an id that is not a FreeSurfer label, so a typo in
    a config fails at once.
    """
    to_compact = compact_lookup()
    table = np.zeros((len(KNOWN_LABELS), len(channels)), dtype=np.float32)
    for c, (name, ids) in enumerate(channels.items()):
        for label in ids:
            if not 0 < label < len(to_compact) or to_compact[label] < 0:
                raise OptionError(
                    f"data.preprocessing.channels: channel {name!r}: {label} is not a FreeSurfer label id "
                    "of an aseg/DKT map"
                )
            table[to_compact[label], c] = 1.0
    return table


def compact_colours() -> np.ndarray:
    """``(num_compact, 3)`` uint8 FreeSurfer colours, to draw cached volumes as the FreeSurfer viewers do."""
    return np.array([FREESURFER_LUT[label_id(CompactLabel(i))][1] for i in range(len(KNOWN_LABELS))], dtype=np.uint8)
