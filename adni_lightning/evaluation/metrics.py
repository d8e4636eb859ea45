"""Statistics of cross-validated evaluation over out-of-fold (OOF) prediction frames.

A reviewer asks three things of a cross-validated result: how large is the effect (pooled OOF metrics), how
sure are we (a confidence interval), and is it better than the baseline (a paired difference). ADNI subjects
contribute several visits whose images are strongly correlated, so every interval here comes from a bootstrap
over *subjects*: an image-level bootstrap would treat the visits as independent and give intervals that are
too narrow. Metrics come from scikit-learn; the confusion-matrix metrics are also computed for a whole stack of
resamples at once, so that 2000 resamples take seconds (AUROC, which needs sklearn per resample, dominates).

A predictions frame has one row per image: ``image_id, subject, group, fold, model`` (``visit`` and
``first_visit`` optional) and a ``p_<class>`` probability column per class. A regression model's frame (a clinical
score such as MMSE, or age) has ``target`` (the true score) and ``prediction`` instead of the ``p_`` columns: the
functions below tell the two apart by those columns (:func:`is_regression`) and score it with MAE, RMSE, R² and
Pearson r, bootstrapped over subjects in the same way (a subject drawn twice weighs its images twice).
"""

from __future__ import annotations

import warnings
from collections.abc import Iterable, Mapping, Sequence
from typing import Any

import numpy as np
import pandas as pd
import sklearn
from sklearn.metrics import (
    accuracy_score,
    balanced_accuracy_score,
    confusion_matrix,
    f1_score,
    matthews_corrcoef,
    mean_absolute_error,
    r2_score,
    roc_auc_score,
    root_mean_squared_error,
)

from adni_lightning.vocabulary import ClassName

HEADLINE = ("bacc", "acc", "f1", "auroc", "mcc")
PER_CLASS = ("sens", "spec", "ppv", "npv")
#: The metrics of a regression frame, in order: errors in the score's units (lower is better), then agreement.
REGRESSION = ("mae", "rmse", "r2", "r")
#: The columns of a regression frame that the metrics read.
TRUTH, PREDICTION = "target", "prediction"
_CHUNK = 256  # resamples per block: bounds the (resamples × images) weight matrix


def metric_names(classes: Sequence[ClassName]) -> list[str]:
    """Every metric :func:`classification_metrics` returns, in its order."""
    return [*HEADLINE, *(f"{kind}_{c}" for kind in PER_CLASS for c in classes)]


def prob_columns(classes: Sequence[ClassName]) -> list[str]:
    """The ``p_<class>`` columns of a predictions frame."""
    return [f"p_{c}" for c in classes]


def _ratio(num: np.ndarray, den: np.ndarray) -> np.ndarray:
    """``num / den``, NaN where ``den`` is 0, without a warning."""
    num, den = np.broadcast_arrays(np.asarray(num, float), np.asarray(den, float))
    return np.divide(num, den, out=np.full(num.shape, np.nan), where=den > 0)


def _nanmean(x: np.ndarray) -> np.ndarray:
    """Mean over the last axis of the defined values, NaN if none is, without a warning."""
    defined = ~np.isnan(x)
    return _ratio(np.where(defined, x, 0.0).sum(axis=-1), defined.sum(axis=-1))


def confusion_metrics(cm: np.ndarray, classes: Sequence[ClassName]) -> dict[str, np.ndarray]:
    """Every metric a confusion matrix determines, vectorised over leading axes of ``cm`` ``(..., k, k)``.

    Rows are true classes, columns predictions. Follows sklearn's conventions so that the bootstrap can use this
    in place of sklearn: ``bacc`` is the mean recall over the classes present, macro ``f1`` leaves out classes
    neither present nor predicted, ``mcc`` is 0 where undefined; per-class rates are NaN where undefined.
    """
    cm = np.asarray(cm, dtype=float)
    tp = np.diagonal(cm, axis1=-2, axis2=-1)
    actual, predicted = cm.sum(axis=-1), cm.sum(axis=-2)
    total, correct = actual.sum(axis=-1), tp.sum(axis=-1)
    fn, fp = actual - tp, predicted - tp
    tn = total[..., None] - actual - fp
    rates = {
        "sens": _ratio(tp, actual),
        "spec": _ratio(tn, tn + fp),
        "ppv": _ratio(tp, predicted),
        "npv": _ratio(tn, tn + fn),
    }
    cov_tp = correct * total - (actual * predicted).sum(axis=-1)
    cov_pp = total**2 - (predicted**2).sum(axis=-1)
    cov_tt = total**2 - (actual**2).sum(axis=-1)
    out = {
        "bacc": _nanmean(rates["sens"]),
        "acc": _ratio(correct, total),
        "f1": _nanmean(_ratio(2 * tp, 2 * tp + fp + fn)),
        "mcc": np.nan_to_num(_ratio(cov_tp, np.sqrt(cov_pp * cov_tt)), nan=0.0),
    }
    for kind, values in rates.items():
        out.update({f"{kind}_{c}": values[..., i] for i, c in enumerate(classes)})
    return out


def _auroc(y: np.ndarray, proba: np.ndarray, k: int) -> float:
    """Macro one-vs-rest AUROC; NaN when a class is absent, where sklearn would raise.

    Passed to sklearn in its multilabel form (one-hot truth), which is exactly what ``multi_class="ovr"`` computes
    after binarising, also covers k = 2, and skips checks that make the bootstrap a third slower.
    """
    onehot = np.eye(k)[y]
    if (onehot.sum(axis=0) == 0).any():
        return float("nan")
    # Inputs are checked by the callers; sklearn's per-call validation would otherwise dominate the bootstrap.
    with sklearn.config_context(assume_finite=True, skip_parameter_validation=True):
        return float(roc_auc_score(onehot, proba, average="macro"))


def classification_metrics(y_true: np.ndarray, proba: np.ndarray, classes: Sequence[ClassName]) -> dict[str, float]:
    """Headline metrics (sklearn) and per-class sensitivity, specificity, PPV, NPV; prediction = argmax.

    ``y_true`` holds indices into ``classes``; ``proba`` is ``(n, k)``. Undefined values are NaN (``mcc``: 0, as
    sklearn has it) and no warning is printed.
    """
    y_true, proba = np.asarray(y_true, dtype=int), np.asarray(proba, dtype=float)
    k = len(classes)
    if proba.shape != (len(y_true), k) or len(y_true) == 0:
        raise ValueError(f"need (n, {k}) probabilities for n = {len(y_true)} > 0 labels, got {proba.shape}")
    if not np.isfinite(proba).all() or y_true.min() < 0 or y_true.max() >= k:
        raise ValueError(f"labels must be in 0..{k - 1} and probabilities finite")
    pred, labels = proba.argmax(axis=1), np.arange(k)
    with warnings.catch_warnings():  # sklearn's notes on absent classes: the results already say it (NaN, or 0)
        warnings.filterwarnings("ignore", message="y_pred contains classes not in y_true")
        warnings.filterwarnings("ignore", message="A single label was found")
        out = {
            "bacc": float(balanced_accuracy_score(y_true, pred)),
            "acc": float(accuracy_score(y_true, pred)),
            "f1": float(f1_score(y_true, pred, labels=labels, average="macro", zero_division=np.nan)),
            "auroc": _auroc(y_true, proba, k),
            "mcc": float(matthews_corrcoef(y_true, pred)),
        }
    per_class = confusion_metrics(confusion_matrix(y_true, pred, labels=labels), classes)
    out.update({name: float(per_class[name]) for name in metric_names(classes) if name not in out})
    return out


def is_regression(frame: pd.DataFrame) -> bool:
    """A regression model's predictions frame: a ``prediction`` column and no ``p_<class>`` column."""
    return PREDICTION in frame.columns and not any(str(c).startswith("p_") for c in frame.columns)


def weighted_regression_metrics(y_true: np.ndarray, y_pred: np.ndarray, weights: np.ndarray) -> dict[str, np.ndarray]:
    """:data:`REGRESSION` metrics with a weight per image, vectorised over the leading axes of ``weights`` ``(..., n)``.

    A weight of c counts the image c times, so a row of subject-bootstrap counts (:func:`resample_counts`) gives the
    metrics of that resample without building it. Equal to sklearn's (weighted) MAE, RMSE and R² and to the weighted
    Pearson r; R² is NaN where the weighted truth is constant, r where either side is (sklearn would return 0 or 1).
    """
    y, p = np.asarray(y_true, float), np.asarray(y_pred, float)
    w = np.asarray(weights, float)
    # Centred first (R² and r do not move): the squares below then lose nothing to large scores such as ages.
    error, y, p = y - p, y - y.mean(), p - p.mean()
    total = w.sum(axis=-1)
    drawn = w > 0

    def spread(x: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
        """Deviation from the weighted mean, and whether ``x`` takes one value only among the drawn images."""
        constant = np.where(drawn, x, -np.inf).max(axis=-1) == np.where(drawn, x, np.inf).min(axis=-1)
        return x - _ratio((w * x).sum(axis=-1), total)[..., None], constant

    (dy, y_constant), (dp, p_constant) = spread(y), spread(p)
    squares = (w * error**2).sum(axis=-1)
    ss_y, ss_p, cross = ((w * a * b).sum(axis=-1) for a, b in ((dy, dy), (dp, dp), (dy, dp)))
    return {
        "mae": _ratio((w * np.abs(error)).sum(axis=-1), total),
        "rmse": np.sqrt(_ratio(squares, total)),
        "r2": np.where(y_constant, np.nan, 1 - _ratio(squares, ss_y)),
        "r": np.where(y_constant | p_constant, np.nan, _ratio(cross, np.sqrt(ss_y * ss_p))),
    }


def regression_metrics(
    y_true: np.ndarray, y_pred: np.ndarray, sample_weight: np.ndarray | None = None
) -> dict[str, float]:
    """MAE, RMSE and R² (sklearn, with ``sample_weight``) and Pearson r (weighted as the others).

    R² is NaN where the truth is constant and r where either side is: undefined, not sklearn's 0 or 1 (which the
    bootstrap could not tell from a real value). No warning is printed.
    """
    y_true, y_pred = np.asarray(y_true, float), np.asarray(y_pred, float)
    if y_true.ndim != 1 or y_true.shape != y_pred.shape or len(y_true) == 0:
        raise ValueError(f"need n > 0 targets and as many predictions, got {y_true.shape} and {y_pred.shape}")
    if not (np.isfinite(y_true).all() and np.isfinite(y_pred).all()):
        raise ValueError("targets and predictions must be finite")
    weights = np.ones(len(y_true)) if sample_weight is None else np.asarray(sample_weight, float)
    c = np.cov(y_true, y_pred, aweights=weights, bias=True)
    constant = np.ptp(y_true[weights > 0]) == 0
    r = float("nan") if constant or np.ptp(y_pred[weights > 0]) == 0 else float(c[0, 1] / np.sqrt(c[0, 0] * c[1, 1]))
    with warnings.catch_warnings():  # R² of fewer than two images: undefined, and NaN already says so
        warnings.simplefilter("ignore", sklearn.exceptions.UndefinedMetricWarning)
        r2 = float("nan") if constant else float(r2_score(y_true, y_pred, sample_weight=weights))
    return {
        "mae": float(mean_absolute_error(y_true, y_pred, sample_weight=weights)),
        "rmse": float(root_mean_squared_error(y_true, y_pred, sample_weight=weights)),
        "r2": r2,
        "r": r,
    }


def _require(frame: pd.DataFrame, columns: Iterable[str]) -> None:
    missing = [c for c in columns if c not in frame.columns]
    if missing:
        raise ValueError(f"predictions frame lacks columns {missing}")


def _labels(frame: pd.DataFrame, classes: Sequence[ClassName]) -> np.ndarray:
    """``group`` as indices into ``classes``."""
    codes = frame["group"].map({c: i for i, c in enumerate(classes)})
    if codes.isna().any():
        unknown = sorted(set(frame["group"][codes.isna()].astype(str)))
        raise ValueError(f"groups {unknown} are not among the classes {list(classes)}")
    return codes.to_numpy(int)


def _single_model(frame: pd.DataFrame) -> None:
    if "model" in frame.columns and frame["model"].nunique() > 1:
        raise ValueError(f"expected one model's predictions, got {sorted(frame['model'].unique())}")


def frame_metrics(frame: pd.DataFrame, classes: Sequence[ClassName]) -> dict[str, float]:
    """:func:`classification_metrics` (:func:`regression_metrics` for a regression frame) of one model's predictions
    frame, pooled over its rows.
    """
    if is_regression(frame):
        _require(frame, [TRUTH, PREDICTION])
        _single_model(frame)
        return regression_metrics(frame[TRUTH].to_numpy(float), frame[PREDICTION].to_numpy(float))
    _require(frame, ["group", *prob_columns(classes)])
    _single_model(frame)
    return classification_metrics(_labels(frame, classes), frame[prob_columns(classes)].to_numpy(float), classes)


def _is_first(frame: pd.DataFrame) -> pd.Series:
    """``first_visit`` as bool: missing (NaN, e.g. from a left merge) is not first; no column means all are."""
    if "first_visit" not in frame.columns:
        return pd.Series(True, index=frame.index)
    return frame["first_visit"].eq(True)


def first_visits(frame: pd.DataFrame) -> pd.DataFrame:
    """The rows of first visits (all rows when there is no ``first_visit`` column): one image per subject."""
    return frame[_is_first(frame)].reset_index(drop=True)


def subject_level(frame: pd.DataFrame, classes: Sequence[ClassName]) -> pd.DataFrame:
    """One row per (model, subject): the mean probability over the subject's images (of a regression frame: the
    mean prediction and the mean target).

    ``group`` and ``fold`` are those of the subject's first-visit image (the first row in frame order when no
    image, or every image, is flagged ``first_visit``), so that a diagnosis changing across visits resolves to
    the baseline one. ``image_id`` is the subject (the row stands for all its images); ``n_images`` counts them.
    The result is again a predictions frame.
    """
    probs = [TRUTH, PREDICTION] if is_regression(frame) else prob_columns(classes)
    _require(frame, ["model", "subject", "group", "fold", *probs])
    keys = ["model", "subject"]
    head = frame.assign(_later=~_is_first(frame)).sort_values("_later", kind="stable").drop_duplicates(keys)
    grouped = frame.groupby(keys, sort=False)
    means = grouped[probs].mean().join(grouped.size().rename("n_images"))
    out = head.set_index(keys)[["group", "fold"]].join(means).reset_index()
    out["image_id"], out["first_visit"] = out["subject"], True
    columns = ["image_id", "subject", "group", "first_visit", "fold", "model", "n_images", *probs]
    return out[columns].sort_values(keys, kind="stable").reset_index(drop=True)


def resample_counts(draws: np.ndarray, n_subjects: int) -> np.ndarray:
    """``(b, n_subjects)`` drawn subject indices → how often each subject is drawn in each resample."""
    offsets = np.arange(len(draws))[:, None] * n_subjects
    return np.bincount((draws + offsets).ravel(), minlength=draws.size).reshape(len(draws), n_subjects)


def bootstrap_samples(
    frame: pd.DataFrame,
    classes: Sequence[ClassName],
    n_resamples: int = 2000,
    seed: int = 0,
    metrics: Sequence[str] | None = None,
) -> pd.DataFrame:
    """One model's bootstrap distribution over subjects: a row per resample, a column per metric.

    Resample ``r`` takes the subjects ``np.random.default_rng(seed).integers(0, S, (n_resamples, S))[r]`` (indices
    into the ``S`` sorted subjects), drawn with replacement, with all the images of each: a subject drawn twice
    counts its images twice. Two frames with the same subjects therefore get the same resamples, which is what
    makes :func:`paired_difference` paired. A metric undefined in a resample is NaN there. A regression frame's
    resamples are scored by :func:`weighted_regression_metrics`, each image weighted by its copies.
    """
    regression = is_regression(frame)
    columns = [TRUTH, PREDICTION] if regression else ["group", *prob_columns(classes)]
    _require(frame, ["subject", *columns])
    _single_model(frame)
    known = list(REGRESSION) if regression else metric_names(classes)
    names = known if metrics is None else list(metrics)
    unknown = sorted(set(names) - set(known))
    if unknown:
        raise ValueError(f"unknown metrics {unknown}; known: {known}")
    subject, subjects = pd.factorize(frame["subject"], sort=True)
    draws = np.random.default_rng(seed).integers(0, len(subjects), size=(n_resamples, len(subjects)))
    out = {name: np.empty(n_resamples) for name in names}
    if regression:
        truth, prediction = frame[TRUTH].to_numpy(float), frame[PREDICTION].to_numpy(float)
        for start in range(0, n_resamples, _CHUNK):
            copies = resample_counts(draws[start : start + _CHUNK], len(subjects))[:, subject]
            values = weighted_regression_metrics(truth, prediction, copies)
            for name in names:
                out[name][start : start + len(copies)] = values[name]
        return pd.DataFrame(out)
    k = len(classes)
    y, proba = _labels(frame, classes), frame[prob_columns(classes)].to_numpy(float)
    cell = np.eye(k * k)[y * k + proba.argmax(axis=1)]  # one-hot confusion-matrix cell of each image
    images = np.arange(len(frame))
    for start in range(0, n_resamples, _CHUNK):
        copies = resample_counts(draws[start : start + _CHUNK], len(subjects))[:, subject]  # (block, images)
        block = slice(start, start + len(copies))
        values = confusion_metrics((copies @ cell).reshape(-1, k, k), classes)
        for name in names:
            if name != "auroc":
                out[name][block] = values[name]
        if "auroc" in out:
            for row, n_copies in zip(range(start, start + len(copies)), copies):
                resample = np.repeat(images, n_copies)
                out["auroc"][row] = _auroc(y[resample], proba[resample], k)
    return pd.DataFrame(out)


def interval_table(point: Mapping[str, float], samples: pd.DataFrame, level: float = 0.95) -> pd.DataFrame:
    """Point estimate and percentile interval per metric column of ``samples``, ignoring NaN resamples."""
    rows = []
    for name in samples.columns:
        values = samples[name].to_numpy(float)
        valid = int((~np.isnan(values)).sum())
        low, high = np.nanpercentile(values, [50 * (1 - level), 50 * (1 + level)]) if valid else (np.nan, np.nan)
        rows.append({"metric": name, "estimate": point[name], "ci_low": low, "ci_high": high, "n_valid": valid})
    return pd.DataFrame(rows, columns=["metric", "estimate", "ci_low", "ci_high", "n_valid"])


def _by_model(frame: pd.DataFrame) -> Iterable[tuple[Any, pd.DataFrame]]:  # the model column's values, as read
    _require(frame, ["model"])
    return frame.groupby("model", sort=True)


def bootstrap_ci(
    frame: pd.DataFrame,
    classes: Sequence[ClassName],
    n_resamples: int = 2000,
    seed: int = 0,
    level: float = 0.95,
) -> pd.DataFrame:
    """Per model and metric: pooled estimate and percentile CI from a bootstrap over subjects.

    Columns ``model, metric, estimate, ci_low, ci_high, n_valid``; ``n_valid`` counts the resamples in which
    the metric is defined (e.g. AUROC needs every class drawn). See :func:`bootstrap_samples` for the draws.
    """
    tables = [
        interval_table(frame_metrics(part, classes), bootstrap_samples(part, classes, n_resamples, seed), level).assign(
            model=model
        )
        for model, part in _by_model(frame)
    ]
    out = pd.concat(tables, ignore_index=True)
    return out[["model", *out.columns.drop("model")]]


def paired_parts(frame: pd.DataFrame, model_a: str, model_b: str) -> tuple[pd.DataFrame, pd.DataFrame]:
    """The two models' rows, aligned by ``image_id``; a ValueError unless they cover the same images (and, for a
    regression frame, give them the same target, to float32 precision: a network's target went through float32).
    """
    _require(frame, ["model", "image_id", "subject", "group"])
    a, b = (frame[frame["model"] == m].sort_values("image_id").reset_index(drop=True) for m in (model_a, model_b))
    ids_a, ids_b = set(a["image_id"]), set(b["image_id"])
    if ids_a != ids_b or len(a) != len(ids_a) or len(b) != len(ids_b):
        raise ValueError(
            f"paired comparison needs both models on the same images: {model_a!r} has {len(a)} rows "
            f"({len(ids_a)} images), {model_b!r} has {len(b)} rows ({len(ids_b)} images), "
            f"{len(ids_a & ids_b)} images in common"
        )
    regression = is_regression(frame)
    for column in ("subject",) if regression else ("subject", "group"):
        if not a[column].equals(b[column]):
            raise ValueError(f"{model_a!r} and {model_b!r} disagree on the {column} of some images")
    if regression and not np.allclose(a[TRUTH].to_numpy(float), b[TRUTH].to_numpy(float), rtol=1e-6, atol=1e-6):
        raise ValueError(f"{model_a!r} and {model_b!r} disagree on the {TRUTH} of some images")
    return a, b


def paired_difference(
    frame: pd.DataFrame,
    model_a: str,
    model_b: str,
    classes: Sequence[ClassName],
    metrics: Sequence[str] = ("bacc", "auroc"),
    n_resamples: int = 2000,
    seed: int = 0,
    level: float = 0.95,
) -> pd.DataFrame:
    """Difference ``model_a − model_b`` per metric with a paired bootstrap CI over subjects.

    Each resample draws the same subjects for both models, so that what the two share (which subjects are easy)
    cancels. Columns ``model_a, model_b, metric, estimate, ci_low, ci_high, n_valid``.
    """
    a, b = paired_parts(frame, model_a, model_b)
    point_a, point_b = frame_metrics(a, classes), frame_metrics(b, classes)
    samples = bootstrap_samples(a, classes, n_resamples, seed, metrics) - bootstrap_samples(
        b, classes, n_resamples, seed, metrics
    )
    point = {m: point_a[m] - point_b[m] for m in metrics}
    return interval_table(point, samples, level).assign(model_a=model_a, model_b=model_b)[
        ["model_a", "model_b", "metric", "estimate", "ci_low", "ci_high", "n_valid"]
    ]


def fold_table(frame: pd.DataFrame, classes: Sequence[ClassName]) -> pd.DataFrame:
    """A row of metrics per (model, fold), then per model a ``mean`` and an ``sd`` (ddof=1) row over its folds.

    ``mean``/``sd`` skip folds where a metric is undefined (e.g. AUROC of a fold lacking a class).
    """
    _require(frame, ["model", "fold", "subject"])
    tables = []
    for model, per_model in _by_model(frame):
        rows = pd.DataFrame(
            [
                {
                    "fold": fold,
                    "n_images": len(part),
                    "n_subjects": part["subject"].nunique(),
                    **frame_metrics(part, classes),
                }
                for fold, part in per_model.groupby("fold", sort=True)
            ]
        )
        values = rows.drop(columns="fold")
        summary = pd.DataFrame([values.mean(), values.std(ddof=1)]).assign(fold=["mean", "sd"])
        tables.append(pd.concat([rows.astype({"fold": object}), summary], ignore_index=True).assign(model=model))
    out = pd.concat(tables, ignore_index=True)
    return out[["model", "fold", *out.columns.drop(["model", "fold"])]]
