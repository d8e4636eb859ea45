"""Calibration of predicted probabilities: when the model says p(AD) = 0.9, is it right nine times in ten?

Three measures a reviewer asks for. Expected calibration error over *adaptive* (equal-count) bins: with a few
hundred images, fixed-width bins leave most of them empty and the estimate then depends on the bin edges
(Nixon et al. 2019). The Brier score, sklearn's, over all classes. A reliability table per class (one vs rest),
drawn as a reliability diagram. Temperature scaling (Guo et al. 2017) divides the log-probabilities by one
fitted scalar: it changes no image's argmax, so accuracy and every confusion-matrix metric stay as they are and
only the calibration moves (with three classes a one-vs-rest AUROC can move a little: scaling can reorder two
images' p(AD) when the rest of their probability is spread differently). It must be fitted on predictions the
scored cohort played no part in (``cv``'s out-of-fold predictions), never on the cohort it is then scored on.
"""

from __future__ import annotations

import json
import warnings
from collections.abc import Mapping, Sequence
from pathlib import Path

import numpy as np
import pandas as pd
from scipy.optimize import minimize_scalar
from sklearn.metrics import brier_score_loss

from adni_lightning.atomic import write_text
from adni_lightning.errors import ProjectError
from adni_lightning.evaluation.metrics import resample_counts
from adni_lightning.vocabulary import ClassName

#: Bins of the adaptive ECE and the reliability table: ~20 images a bin for a cohort of 300.
DEFAULT_BINS = 15
#: Probabilities are clipped to this before their logarithm, so a 0 from float rounding is finite.
_EPS = 1e-12
#: How far from 1 the probabilities of a row may sum: ``predictions.csv`` keeps 6 decimals per class.
_ROUNDING = 1e-4
#: The search range of log T: T from 0.05 (sharpen 20×) to 20 (flatten 20×).
_LOG_T_BOUNDS = (-3.0, 3.0)
#: The file ``cv`` writes beside its report and ``predict`` / ``evaluate`` read with ``--calibration``.
CALIBRATION_FILE = "calibration.json"
#: Resamples per block of the bootstrap: bounds its (resamples × images) count matrices.
_BLOCK = 256


class CalibrationError(ProjectError):
    """A calibration file cannot be used: unreadable, or fitted for other classes."""


def _equal_count_bins(n: int, bins: int) -> list[np.ndarray]:
    """Positions ``0..n-1`` of a sorted array cut into ``min(bins, n)`` runs whose sizes differ by at most one."""
    return [part for part in np.array_split(np.arange(n), min(bins, n)) if len(part)]


def expected_calibration_error(y_true: np.ndarray, proba: np.ndarray, bins: int = DEFAULT_BINS) -> float:
    """Top-label ECE over equal-count bins: the count-weighted mean of ``|accuracy - mean confidence|`` per bin.

    ``y_true`` holds class indices, ``proba`` is ``(n, k)``. 0 for a perfectly calibrated model; the mean
    confidence minus the accuracy for a model whose images all fall in one bin.
    """
    proba = np.asarray(proba, float)
    confidence = proba.max(axis=1)
    correct = (proba.argmax(axis=1) == np.asarray(y_true)).astype(float)
    order = np.argsort(confidence, kind="stable")
    gaps = [
        len(part) * abs(correct[order[part]].mean() - confidence[order[part]].mean())
        for part in _equal_count_bins(len(order), bins)
    ]
    return float(sum(gaps) / len(order))


def brier_score(y_true: np.ndarray, proba: np.ndarray) -> float:
    """Mean over images of the squared distance between the probabilities and the one-hot truth (0 to 2)."""
    proba = np.asarray(proba, float)
    with warnings.catch_warnings():
        if np.allclose(proba.sum(axis=1), 1.0, atol=_ROUNDING):  # sklearn's tolerance is far below that of a CSV
            warnings.filterwarnings("ignore", message="The y_prob values do not sum to one")
        return float(brier_score_loss(np.asarray(y_true), proba, labels=list(range(proba.shape[1]))))


def reliability_table(
    y_true: np.ndarray, proba: np.ndarray, classes: Sequence[ClassName], bins: int = DEFAULT_BINS
) -> pd.DataFrame:
    """Per class (one vs rest), per equal-count bin of ``p_class``: its mean, the observed frequency, the count.

    A calibrated model's rows lie on ``frequency == mean_probability``.
    """
    proba, y_true = np.asarray(proba, float), np.asarray(y_true)
    rows = []
    for index, name in enumerate(classes):
        p = proba[:, index]
        order = np.argsort(p, kind="stable")
        for number, part in enumerate(_equal_count_bins(len(order), bins)):
            chosen = order[part]
            rows.append(
                {
                    "class": name,
                    "bin": number,
                    "mean_probability": float(p[chosen].mean()),
                    "frequency": float((y_true[chosen] == index).mean()),
                    "count": len(chosen),
                }
            )
    return pd.DataFrame(rows, columns=["class", "bin", "mean_probability", "frequency", "count"])


def scale_temperature(proba: np.ndarray, temperature: float) -> np.ndarray:
    """``softmax(log(proba) / T)``: the same as dividing the model's logits by ``T`` (the softmax's shift cancels)."""
    scaled = np.log(np.clip(np.asarray(proba, float), _EPS, 1.0)) / temperature
    scaled -= scaled.max(axis=1, keepdims=True)
    out = np.exp(scaled)
    return out / out.sum(axis=1, keepdims=True)


def _nll(y_true: np.ndarray, proba: np.ndarray) -> float:
    """Mean negative log-likelihood of the true classes."""
    return float(-np.log(np.clip(proba[np.arange(len(y_true)), y_true], _EPS, 1.0)).mean())


def fit_temperature(y_true: np.ndarray, proba: np.ndarray) -> float:
    """The temperature that minimises the negative log-likelihood of ``y_true`` under :func:`scale_temperature`.

    One scalar, searched on log T (bounded, so a separable set cannot drive it to 0).
    """
    y_true = np.asarray(y_true)
    result = minimize_scalar(
        lambda log_t: _nll(y_true, scale_temperature(proba, float(np.exp(log_t)))),
        bounds=_LOG_T_BOUNDS,
        method="bounded",
        options={"xatol": 1e-6},
    )
    return float(np.exp(result.x))


def at_search_bound(temperature: float) -> bool:
    """Whether :func:`fit_temperature` stopped at an end of its range: the optimum lies beyond it."""
    return bool(np.isclose(np.log(temperature), _LOG_T_BOUNDS, atol=1e-4).any())


def calibration_metrics(y_true: np.ndarray, proba: np.ndarray, bins: int = DEFAULT_BINS) -> dict[str, float]:
    """ECE (adaptive bins), Brier score and negative log-likelihood of one set of predictions."""
    proba = np.asarray(proba, float)
    return {
        "ece": expected_calibration_error(y_true, proba, bins),
        "brier": brier_score(y_true, proba),
        "nll": _nll(np.asarray(y_true), proba),
    }


def save_temperature(
    path: str | Path,
    temperature: float,
    classes: Sequence[ClassName],
    fitted_on: str,
    n_images: int,
    cross_fitted: Mapping[int, float] | None = None,
) -> None:
    """Write the fitted temperature with what it was fitted on, so a later command can check it applies; with
    ``cross_fitted``, the per-fold temperatures behind the honest figures of the report, for the record.
    """
    record = {"temperature": temperature, "classes": list(classes), "fitted_on": fitted_on, "n_images": n_images}
    if cross_fitted is not None:
        record["cross_fitted"] = {str(fold): value for fold, value in cross_fitted.items()}
    write_text(path, json.dumps(record, indent=2) + "\n", "--root")


def load_temperature(path: str | Path, classes: Sequence[ClassName]) -> float:
    """The temperature of a :func:`save_temperature` file, refused in one line when fitted for other classes."""
    try:
        record = json.loads(Path(path).read_text())
        temperature, fitted_classes = float(record["temperature"]), list(record["classes"])
    except (OSError, ValueError, KeyError, TypeError) as err:
        raise CalibrationError(f"--calibration {path}: not a calibration file written by cv ({err})") from err
    if fitted_classes != list(classes):
        raise CalibrationError(
            f"--calibration {path}: fitted for classes {fitted_classes}, the model predicts {list(classes)}"
        )
    if not np.isfinite(temperature) or temperature <= 0:
        raise CalibrationError(f"--calibration {path}: temperature {temperature} is not a positive number")
    return temperature


def cross_fitted_temperatures(y_true: np.ndarray, proba: np.ndarray, folds: np.ndarray) -> dict[int, float]:
    """Per fold ``k``: the temperature fitted on the predictions of every *other* fold, the one to apply to fold ``k``.

    Fold ``k``'s labels play no part in its own temperature, so the scaled fold is scored as honestly as it was
    predicted (a temperature fitted on all folds and scored on them would be fitted on its test set).
    """
    y_true, proba, folds = np.asarray(y_true), np.asarray(proba, float), np.asarray(folds)
    return {int(k): fit_temperature(y_true[folds != k], proba[folds != k]) for k in np.unique(folds)}


def apply_temperatures(proba: np.ndarray, folds: np.ndarray, temperatures: Mapping[int, float]) -> np.ndarray:
    """Each row scaled with the temperature of its fold (:func:`cross_fitted_temperatures`)."""
    proba, folds = np.asarray(proba, float), np.asarray(folds)
    out = np.empty_like(proba)
    for k, temperature in temperatures.items():
        out[folds == k] = scale_temperature(proba[folds == k], temperature)
    return out


def _resampled_ece(correct: np.ndarray, confidence: np.ndarray, copies: np.ndarray, bins: int) -> np.ndarray:
    """:func:`expected_calibration_error` of every resample; ``copies[r, i]`` counts image ``i`` in resample ``r``.

    A resample sorted by confidence is the images sorted once, each repeated as often as drawn (ties stay in image
    order, as a stable sort of the resample keeps them), so its equal-count bins are cuts of the cumulative counts:
    a bin's ``sum(correct - confidence)`` is a difference of a running sum read at the bin's edges.
    """
    order = np.argsort(confidence, kind="stable")
    weights = copies[:, order].astype(float)
    gap = (correct - confidence)[order]
    ends = np.cumsum(weights, axis=1)  # position after each image's last copy
    running = np.cumsum(weights * gap, axis=1)
    total = ends[:, -1]
    parts = np.minimum(bins, total)
    size, extra = total // parts, total % parts
    steps = np.arange(bins + 1)
    edges = np.minimum(steps * size[:, None] + np.minimum(steps, extra[:, None]), total[:, None])  # np.array_split's
    # images wholly before each edge: a search in each row, run as one search over rows offset apart
    offset = (np.arange(len(ends)) * (total.max() + 1))[:, None]
    before = np.searchsorted((ends + offset).ravel(), (edges + offset).ravel(), side="right").reshape(edges.shape)
    before -= np.arange(len(ends))[:, None] * ends.shape[1]
    rows = np.arange(len(ends))[:, None]
    last = np.maximum(before - 1, 0)
    done_count = np.where(before > 0, ends[rows, last], 0.0)
    done_gap = np.where(before > 0, running[rows, last], 0.0)
    partial = gap[np.minimum(before, len(gap) - 1)]  # the image an edge cuts through
    at_edge = done_gap + (edges - done_count) * partial
    return np.abs(np.diff(at_edge, axis=1)).sum(axis=1) / total


def bootstrap_calibration(
    y_true: np.ndarray,
    proba: np.ndarray,
    subjects: Sequence[str] | pd.Series,
    n_resamples: int = 2000,
    seed: int = 0,
    bins: int = DEFAULT_BINS,
) -> pd.DataFrame:
    """:func:`calibration_metrics` of each subject-bootstrap resample: a row per resample, columns ece, brier, nll.

    The draws are those of :func:`~adni_lightning.evaluation.metrics.bootstrap_samples` (same seed, subjects sorted),
    so a model's calibration and classification intervals come from the same resamples. Vectorised: a resample is a
    count per image, and each measure a count-weighted sum (2000 resamples of 300 images take well under a second).
    """
    y_true, proba = np.asarray(y_true), np.asarray(proba, float)
    subject, names = pd.factorize(pd.Series(subjects), sort=True)
    draws = np.random.default_rng(seed).integers(0, len(names), size=(n_resamples, len(names)))
    onehot = np.eye(proba.shape[1])[y_true]
    per_image_brier = ((proba - onehot) ** 2).sum(axis=1)
    per_image_nll = -np.log(np.clip(proba[np.arange(len(y_true)), y_true], _EPS, 1.0))
    correct = (proba.argmax(axis=1) == y_true).astype(float)
    blocks = []
    for start in range(0, n_resamples, _BLOCK):
        copies = resample_counts(draws[start : start + _BLOCK], len(names))[:, subject]
        total = copies.sum(axis=1)
        blocks.append(
            pd.DataFrame(
                {
                    "ece": _resampled_ece(correct, proba.max(axis=1), copies, bins),
                    "brier": copies @ per_image_brier / total,
                    "nll": copies @ per_image_nll / total,
                }
            )
        )
    return pd.concat(blocks, ignore_index=True)
