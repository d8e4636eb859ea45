"""Pictures for TensorBoard: label-map slices in FreeSurfer colours, the confusion matrix, and a score task's predicted
against true scores.
"""

from __future__ import annotations

from collections.abc import Sequence

import numpy as np
import torch
from matplotlib.axes import Axes
from matplotlib.figure import Figure

from adni_lightning.data.labels import compact_colours

_COLOURS = torch.from_numpy(compact_colours())
_MIN_HEIGHT = 160


def mid_slices(volume: torch.Tensor, labelmap: bool) -> torch.Tensor:
    """``(D, H, W)`` RAS volume → ``(3, H, W')`` RGB uint8 strip of its sagittal, coronal and axial mid-planes.

    Label maps are drawn with the FreeSurfer colour table (ids are names, not grey levels); intensities in
    grey. Each plane is shown with superior/anterior up, as radiologists read them.
    """
    d, h, w = volume.shape
    planes = [volume[d // 2].T.flip(0), volume[:, h // 2].T.flip(0), volume[:, :, w // 2].T.flip(0)]
    height = max(p.shape[0] for p in planes)
    padded = [torch.nn.functional.pad(p, (0, 0, 0, height - p.shape[0])) for p in planes]
    strip = torch.cat(padded, dim=1).cpu()
    scale = max(1, _MIN_HEIGHT // height)  # nearest-neighbour enlargement: small grids stay readable
    strip = strip.repeat_interleave(scale, dim=0).repeat_interleave(scale, dim=1)
    if labelmap:
        return _COLOURS[strip.long()].permute(2, 0, 1).contiguous()
    grey = (strip.float().clamp(0, 1) * 255).to(torch.uint8)
    return grey.expand(3, -1, -1).contiguous()


def draw_confusion(ax: Axes, counts: np.ndarray, class_names: Sequence[str]) -> None:
    """Counts with row-normalised shading: rows are true classes, columns predictions."""
    counts = np.asarray(counts, dtype=int)
    rates = counts / np.maximum(counts.sum(axis=1, keepdims=True), 1)
    ax.imshow(rates, cmap="Blues", vmin=0, vmax=1)
    for (i, j), n in np.ndenumerate(counts):
        ax.text(j, i, str(n), ha="center", va="center", color="white" if rates[i, j] > 0.5 else "black")
    ax.set_xticks(range(len(class_names)), class_names)
    ax.set_yticks(range(len(class_names)), class_names)
    ax.set_xlabel("predicted")
    ax.set_ylabel("true")


def confusion_figure(matrix: torch.Tensor, class_names: Sequence[str]) -> Figure:
    """The confusion matrix of a validation or test epoch, for TensorBoard."""
    fig = Figure(figsize=(3.6, 3.2), dpi=100)  # no pyplot: leaves the user's backend (e.g. inline) alone
    draw_confusion(fig.subplots(), matrix.detach().cpu().numpy(), class_names)
    fig.tight_layout()
    return fig


def scatter_figure(true: np.ndarray, predicted: np.ndarray, score: str) -> Figure:
    """A score task's predictions against the true scores of a validation or test epoch, with the identity line and
    the epoch's MAE and Pearson's r in the title, for TensorBoard.
    """
    true, predicted = np.asarray(true, dtype=float), np.asarray(predicted, dtype=float)
    fig = Figure(figsize=(3.6, 3.4), dpi=100)
    ax = fig.subplots()
    ax.scatter(true, predicted, s=10, alpha=0.6)
    low, high = float(min(true.min(), predicted.min())), float(max(true.max(), predicted.max()))
    ax.plot([low, high], [low, high], color="black", linewidth=0.8)
    spread = len(true) > 1 and true.std() > 0 and predicted.std() > 0
    r = f", r {np.corrcoef(true, predicted)[0, 1]:.2f}" if spread else ""
    ax.set_title(f"{score}: MAE {np.abs(predicted - true).mean():.2f}{r} (n {len(true)})", fontsize=9)
    ax.set_xlabel(f"true {score}")
    ax.set_ylabel(f"predicted {score}")
    fig.tight_layout()
    return fig
