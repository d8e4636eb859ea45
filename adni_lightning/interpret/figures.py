"""Figures of an interpretation: the top structures per class, and attribution maps over the anatomy.

Matplotlib ``Figure`` objects without pyplot (as :mod:`adni_lightning.figures`), so they can be saved as PNG and
sent to TensorBoard alike without touching the user's backend.
"""

from __future__ import annotations

from collections.abc import Sequence

import numpy as np
import pandas as pd
from matplotlib.figure import Figure

from adni_lightning.data.labels import compact_colours
from adni_lightning.vocabulary import ClassName

_COLOURS = compact_colours()


def ranking_figure(
    ranking: pd.DataFrame,
    classes: Sequence[ClassName],
    level: str,
    top: int = 10,
    per_voxel: bool = False,
    score: str | None = None,
) -> Figure:
    """One panel per class: the ``top`` structures of ``level`` by absolute mean delta (with 95% CIs), or by
    absolute delta per voxel. A score task's one panel (``score``: its name) shows the change of the predicted score.
    """
    fig = Figure(figsize=(4.2 * len(classes), 0.32 * top + 1.4), dpi=100)
    axes = fig.subplots(1, len(classes), squeeze=False)[0]
    rank, column = ("rank_per_voxel", "delta_p_per_voxel") if per_voxel else ("rank", "mean_delta_p")
    for ax, klass in zip(axes, classes):
        part = ranking[(ranking["class"] == klass) & (ranking["level"] == level)].nsmallest(top, rank)[::-1]
        mean = part[column].to_numpy(float)
        errors = None
        if not per_voxel:
            errors = np.abs(np.vstack([mean - part["ci_low"].to_numpy(float), part["ci_high"].to_numpy(float) - mean]))
            errors = np.nan_to_num(errors)
        ax.barh(np.arange(len(part)), mean, xerr=errors, color=np.where(mean > 0, "tab:red", "tab:blue"), capsize=2)
        ax.set_yticks(np.arange(len(part)), part["structure"], fontsize=8)
        ax.axvline(0, color="black", linewidth=0.6)
        ax.set_title(f"p({klass})" if score is None else f"predicted {score}")
        change = "Δp" if score is None else f"Δ {score}"
        ax.set_xlabel(f"{change} per voxel when removed" if per_voxel else f"{change} when removed (mean, 95% CI)")
    fig.tight_layout()
    return fig


def _planes(volume: np.ndarray, point: tuple[int, int, int]) -> list[np.ndarray]:
    """Sagittal, coronal and axial planes through ``point`` of a RAS volume, superior/anterior up."""
    x, y, z = point
    return [volume[x].T[::-1], volume[:, y].T[::-1], volume[:, :, z].T[::-1]]


def triplanar_figure(
    attribution: np.ndarray, reference: np.ndarray, labelmap: bool, title: str, score: str | None = None
) -> Figure:
    """Sagittal, coronal and axial planes through the voxel of largest absolute attribution: the reference
    (FreeSurfer colours for label maps, grey for intensities) above, the map over a faded copy of it below.

    The colour scale is symmetric at the 99th percentile of the non-zero absolute values, so one extreme voxel
    does not wash out the rest; values under a tenth of it are left transparent.
    """
    x, y, z = (int(i) for i in np.unravel_index(int(np.abs(attribution).argmax()), attribution.shape))
    point = (x, y, z)
    magnitudes = np.abs(attribution[attribution != 0])
    limit = float(np.percentile(magnitudes, 99)) if magnitudes.size else 1.0
    fig = Figure(figsize=(9, 6.4), dpi=100)
    axes = fig.subplots(2, 3)
    for column, (background, values, name) in enumerate(
        zip(_planes(reference, point), _planes(attribution, point), ("sagittal", "coronal", "axial"))
    ):
        anatomy = _COLOURS[background.astype(np.intp)] if labelmap else np.clip(background, 0, 1)
        for row, alpha in ((0, 1.0), (1, 0.35)):
            axes[row, column].imshow(anatomy, cmap=None if labelmap else "gray", alpha=alpha, interpolation="nearest")
            axes[row, column].axis("off")
        shown = np.ma.masked_where(np.abs(values) < 0.1 * limit, values)
        image = axes[1, column].imshow(shown, cmap="RdBu_r", vmin=-limit, vmax=limit, interpolation="nearest")
        axes[0, column].set_title(name, fontsize=9)
    unit = "probability" if score is None else score
    fig.colorbar(image, ax=axes.ravel().tolist(), shrink=0.5, label=f"IG attribution ({unit})")
    fig.suptitle(f"{title}\nplanes through voxel {tuple(int(p) for p in point)} (RAS, network grid)", fontsize=10)
    return fig
