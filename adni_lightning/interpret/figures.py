"""Figures of an interpretation: the top structures per class, and attribution maps over the anatomy.

Matplotlib ``Figure`` objects without pyplot (as :mod:`adni_lightning.figures`), so they can be saved as PNG and
sent to TensorBoard alike without touching the user's backend.
"""

from __future__ import annotations

import numpy as np
import pandas as pd
from matplotlib.figure import Figure

from adni_lightning.data.labels import compact_colours

_COLOURS = compact_colours()


def ranking_figure(ranking: pd.DataFrame, classes: list[str], level: str, top: int = 10) -> Figure:
    """One panel per class: the ``top`` structures of ``level`` by absolute mean delta, with their 95% CIs."""
    fig = Figure(figsize=(4.2 * len(classes), 0.32 * top + 1.4), dpi=100)
    axes = fig.subplots(1, len(classes), squeeze=False)[0]
    for ax, klass in zip(axes, classes):
        part = ranking[(ranking["class"] == klass) & (ranking["level"] == level)].nsmallest(top, "rank")[::-1]
        mean = part["mean_delta_p"].to_numpy(float)
        errors = np.abs(np.vstack([mean - part["ci_low"].to_numpy(float), part["ci_high"].to_numpy(float) - mean]))
        colours = np.where(mean > 0, "tab:red", "tab:blue")
        ax.barh(np.arange(len(part)), mean, xerr=np.nan_to_num(errors), color=colours, capsize=2)
        ax.set_yticks(np.arange(len(part)), part["structure"], fontsize=8)
        ax.axvline(0, color="black", linewidth=0.6)
        ax.set_title(f"p({klass})")
        ax.set_xlabel("Δp when removed (mean, 95% CI)")
    fig.tight_layout()
    return fig


def _planes(volume: np.ndarray, point: tuple[int, int, int]) -> list[np.ndarray]:
    """Sagittal, coronal and axial planes through ``point`` of a RAS volume, superior/anterior up."""
    x, y, z = point
    return [volume[x].T[::-1], volume[:, y].T[::-1], volume[:, :, z].T[::-1]]


def triplanar_figure(attribution: np.ndarray, reference: np.ndarray, labelmap: bool, title: str) -> Figure:
    """Three planes through the voxel of largest absolute attribution, the map (diverging colours, values
    under 5% of the maximum transparent) over the reference drawn in FreeSurfer colours or grey."""
    point = np.unravel_index(int(np.abs(attribution).argmax()), attribution.shape)
    limit = float(np.abs(attribution).max()) or 1.0
    fig = Figure(figsize=(10, 3.6), dpi=100)
    axes = fig.subplots(1, 3)
    for ax, background, values, name in zip(
        axes, _planes(reference, point), _planes(attribution, point), ("sagittal", "coronal", "axial")
    ):
        if labelmap:
            ax.imshow(_COLOURS[background.astype(np.intp)], interpolation="nearest")
        else:
            ax.imshow(background, cmap="gray", interpolation="nearest")
        shown = np.ma.masked_where(np.abs(values) < 0.05 * limit, values)
        image = ax.imshow(shown, cmap="RdBu_r", vmin=-limit, vmax=limit, alpha=0.8, interpolation="nearest")
        ax.set_title(name, fontsize=9)
        ax.axis("off")
    fig.colorbar(image, ax=axes.tolist(), shrink=0.8, label="IG attribution (probability)")
    fig.suptitle(f"{title} (planes through voxel {tuple(int(p) for p in point)})", fontsize=10)
    return fig
