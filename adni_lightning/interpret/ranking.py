"""Structure importance across images: left+right sums and a ranking per class with subject-bootstrap CIs.

An image's row is one occluded structure and one class (see :mod:`~adni_lightning.interpret.occlusion`); a
structure's mean is over the images that hold it. The bilateral level adds an image's left and right deltas of a
structure (``Left-Hippocampus`` + ``Right-Hippocampus`` → ``Hippocampus``; ``ctx-lh-X`` + ``ctx-rh-X`` →
``ctx-X``): the sum of two separate removals, not one joint removal. Visits of a subject are correlated, so
the 95% interval of a mean comes from a bootstrap over *subjects* (each resample draws subjects with
replacement and takes all their images), as in :mod:`adni_lightning.evaluation.metrics`. Structures are
ranked per class and level by the absolute mean delta: removal may push a class up (e.g. a missing
hippocampus reads as atrophy) or down.

A structure's total effect grows with its size: removing the cerebral white matter blanks a large part of the
input, and a model that is close to additive in its voxels reacts in proportion, whether or not that structure
carries the disease signal. ``delta_p_per_voxel`` (mean delta over mean voxel count at network resolution) and
its rank ask the other question, how much each voxel of the structure weighs; on the synthetic cohort it puts
the structures that carry the signal first (see the ground-truth test).
"""

from __future__ import annotations

import re
import warnings
from collections.abc import Sequence

import numpy as np
import pandas as pd

from adni_lightning.evaluation.metrics import resample_counts
from adni_lightning.vocabulary import ClassName

#: Columns of ``structure_importance.csv``, one row per image, class and structure.
IMPORTANCE_COLUMNS = (
    "image_id",
    "subject",
    "group",
    "predicted",
    "class",
    "label_id",
    "structure",
    "delta_p",
    "voxels",
)

#: Columns of ``structure_ranking.csv``.
RANKING_COLUMNS = (
    "class",
    "level",
    "rank",
    "structure",
    "label_ids",
    "mean_delta_p",
    "ci_low",
    "ci_high",
    "images",
    "subjects",
    "mean_voxels",
    "delta_p_per_voxel",
    "rank_per_voxel",
)

_SIDE = re.compile(r"^(Left-|Right-)|(?<=^ctx-)(lh-|rh-)")


def bilateral_name(structure: str) -> str:
    """The structure's name without its hemisphere: ``Left-Hippocampus`` → ``Hippocampus``, ``ctx-rh-insula``
    → ``ctx-insula``; midline names are unchanged.
    """
    return _SIDE.sub("", structure)


def _ids(values: pd.Series) -> str:
    """The FreeSurfer ids behind a row group, ``+``-joined (``17+53``)."""
    return "+".join(sorted({part for value in values for part in str(value).split("+")}, key=int))


def bilateral(importance: pd.DataFrame) -> pd.DataFrame:
    """Per image and class, the left and right rows of each structure summed (a midline structure alone)."""
    frame = importance.assign(structure=importance["structure"].map(bilateral_name))
    keys = ["image_id", "subject", "group", "predicted", "class", "structure"]
    return frame.groupby(keys, sort=False, as_index=False).agg(
        label_id=("label_id", _ids),
        delta_p=("delta_p", "sum"),
        voxels=("voxels", "sum"),
    )


def _bootstrap(values: pd.DataFrame, n_resamples: int, seed: int, level: float) -> tuple[np.ndarray, np.ndarray]:
    """Percentile interval of each column's mean over images, resampling subjects with replacement.

    ``values``: images × structures (NaN where an image lacks the structure), indexed by subject. The same seed
    draws the same subjects for every class and level.
    """
    subject_codes, subjects = pd.factorize(values.index, sort=True)
    present = values.notna().to_numpy(float)
    sums = np.zeros((len(subjects), values.shape[1]))
    counts = np.zeros_like(sums)
    np.add.at(sums, subject_codes, values.fillna(0).to_numpy())
    np.add.at(counts, subject_codes, present)
    draws = np.random.default_rng(seed).integers(0, len(subjects), size=(n_resamples, len(subjects)))
    weights = resample_counts(draws, len(subjects))
    with np.errstate(invalid="ignore", divide="ignore"):
        means = (weights @ sums) / (weights @ counts)
    tail = 50 * (1 - level)
    with warnings.catch_warnings():  # a structure absent from every drawn subject: NaN, not a warning
        warnings.simplefilter("ignore", RuntimeWarning)
        low, high = np.nanpercentile(means, [tail, 100 - tail], axis=0)
    return low, high


def rank_structures(
    importance: pd.DataFrame,
    classes: Sequence[ClassName],
    n_resamples: int = 2000,
    seed: int = 0,
    level: float = 0.95,
) -> pd.DataFrame:
    """``structure_ranking.csv``: per class and level (``structure``: each id; ``bilateral``: L+R), the mean
    delta over images, its subject-bootstrap interval and the rank by absolute mean (1 = largest effect), and the
    delta per voxel with its own rank.
    """
    frames = []
    for level_name, frame in (("structure", importance), ("bilateral", bilateral(importance))):
        for klass in classes:
            part = frame[frame["class"] == klass]
            if part.empty:
                continue
            values = part.pivot_table(index=["subject", "image_id"], columns="structure", values="delta_p")
            values.index = values.index.get_level_values("subject")
            low, high = _bootstrap(values, n_resamples, seed, level)
            stats = (
                part.groupby("structure")
                .agg(
                    label_ids=("label_id", _ids),
                    mean_delta_p=("delta_p", "mean"),
                    images=("image_id", "nunique"),
                    subjects=("subject", "nunique"),
                    mean_voxels=("voxels", "mean"),
                )
                .reindex(values.columns)
            )
            stats["ci_low"], stats["ci_high"] = low, high
            stats["delta_p_per_voxel"] = stats["mean_delta_p"] / stats["mean_voxels"]
            stats["rank_per_voxel"] = stats["delta_p_per_voxel"].abs().rank(ascending=False, method="first").astype(int)
            stats = stats.reset_index().assign(**{"class": klass, "level": level_name})
            stats = stats.sort_values("mean_delta_p", key=np.abs, ascending=False, kind="stable")
            frames.append(stats.assign(rank=np.arange(1, len(stats) + 1)))
    if not frames:
        return pd.DataFrame(columns=list(RANKING_COLUMNS))
    return pd.concat(frames, ignore_index=True)[list(RANKING_COLUMNS)]
