"""The reference every image model must beat: logistic regression on regional volumes, age and sex, same folds.

Published 3-way comparisons put a CNN only a few AUC points above a FreeSurfer volume model on the same subjects
(Liu et al. 2022, Sci Rep), so a CNN result means little without this baseline scored on the very same folds and
images. Features: each structure's volume divided by ``LabelledVolume`` (the label map's head-size proxy), age,
and sex (F = 1); a scikit-learn Pipeline standardises them on each fold's training side only, then fits a
multinomial logistic regression (lbfgs, L2, C = 1). The result is a predictions frame like the CNN's.

A score task (MMSE, CDR-SB, age) gets the regression counterpart: ridge regression on the same features, its
penalty chosen by a subject-grouped inner cross-validation of the training side only (the held-out fold chooses
nothing). For brain age the age is the target, so it is left out of the features.
"""

from __future__ import annotations

import re
from collections.abc import Sequence

import numpy as np
import pandas as pd
from sklearn.linear_model import LogisticRegression, Ridge
from sklearn.model_selection import GridSearchCV, GroupKFold
from sklearn.pipeline import Pipeline, make_pipeline
from sklearn.preprocessing import StandardScaler

from adni_lightning.data.clinical import TaskSpec
from adni_lightning.data.volumes import LABELLED, structure_columns
from adni_lightning.errors import ProjectError
from adni_lightning.evaluation.metrics import PREDICTION, TRUTH
from adni_lightning.vocabulary import ClassName

MODEL_NAME = "baseline"
#: Ridge penalties the inner cross-validation chooses from (on standardised features), and its fold count.
RIDGE_ALPHAS = tuple(float(a) for a in np.logspace(-2, 4, 13))
INNER_FOLDS = 5


class BaselineError(ProjectError, ValueError):
    """The score baseline cannot be fitted on this cohort or split (a target that is no number, too few subjects)."""


_MONTH = re.compile(r"^m(\d+)$")
#: Visit codes of the first scans, in time order: screening (MRI), then baseline.
_FIRST_CODES = {"sc": 0, "scmri": 1, "bl": 2}


def visit_order(visit: object) -> tuple[float, int]:
    """Sort key of an ADNI visit code: ``sc`` < ``scmri`` < ``bl`` < ``m06`` < ``m12`` …; a bare number counts as
    that many months; anything else (``uns1``, empty) sorts last.
    """
    text = str(visit).strip().lower()
    if text in _FIRST_CODES:
        return 0.0, _FIRST_CODES[text]
    match = _MONTH.match(text)
    if match:
        return float(match.group(1)), len(_FIRST_CODES)
    try:
        return float(text), len(_FIRST_CODES)
    except ValueError:
        return float("inf"), len(_FIRST_CODES)


def first_visit_flags(frame: pd.DataFrame) -> pd.Series:
    """True on exactly one image per subject: its earliest visit (the first row among equally early ones)."""
    order = pd.DataFrame(frame["visit"].map(visit_order).tolist(), columns=["month", "rank"], index=frame.index)
    order["subject"] = frame["subject"]
    first = order.sort_values(["month", "rank"], kind="stable").drop_duplicates("subject").index
    return pd.Series(frame.index.isin(first), index=frame.index)


def features(volumes: pd.DataFrame) -> pd.DataFrame:
    """Each structure's volume / ``LabelledVolume``, then ``age`` and ``sex_female`` (F = 1), one row per image."""
    empty = volumes.loc[~(volumes[LABELLED] > 0), "image_id"].tolist()
    if empty:
        raise ValueError(f"image(s) {', '.join(empty[:5])}: empty label map ({LABELLED} is 0), cannot normalise")
    x = volumes[structure_columns(volumes)].div(volumes[LABELLED], axis=0)
    x["age"] = volumes["age"].astype(float)
    x["sex_female"] = (volumes["sex"] == "F").astype(float)
    return x


def make_model(seed: int = 0) -> Pipeline:
    """StandardScaler + multinomial logistic regression (lbfgs, the default solver, is multinomial for 3 classes)."""
    return make_pipeline(StandardScaler(), LogisticRegression(C=0.1, max_iter=10_000, random_state=seed))


def make_regressor(n_subjects: int) -> GridSearchCV:
    """StandardScaler + ridge regression, the penalty chosen among :data:`RIDGE_ALPHAS` by mean squared error over
    subject-grouped inner folds (at most :data:`INNER_FOLDS`; ``fit`` takes ``groups``): a subject's visits never
    sit on both sides of an inner fold, so the choice is not steered by near-duplicate images. Refit on all of
    the data it is given with the chosen penalty.
    """
    return GridSearchCV(
        make_pipeline(StandardScaler(), Ridge()),
        {"ridge__alpha": list(RIDGE_ALPHAS)},
        scoring="neg_mean_squared_error",
        cv=GroupKFold(min(INNER_FOLDS, n_subjects)),
    )


def _probabilities(model: Pipeline, x: pd.DataFrame, classes: Sequence[ClassName]) -> np.ndarray:
    """``predict_proba`` in ``classes`` order; a class absent from the training side gets probability 0."""
    out = np.zeros((len(x), len(classes)))
    if len(x):
        proba = model.predict_proba(x)
        for column, name in enumerate(model.classes_):
            out[:, list(classes).index(name)] = proba[:, column]
    return out


def baseline_predictions(
    volumes: pd.DataFrame, split: pd.DataFrame, classes: Sequence[ClassName], seed: int = 0
) -> pd.DataFrame:
    """Out-of-fold and test predictions of :func:`make_model` on the folds of ``split``.

    ``volumes``: a :func:`~adni_lightning.data.volumes.regional_volumes` frame; ``split``: a k-fold split of
    :func:`~adni_lightning.data.split.split_subjects` (its ``group`` is the truth). For each fold k the model is fit
    on the non-test images of the other folds and predicts fold k (``set`` = ``oof``, ``fold`` = k) and every test
    image (``set`` = ``test``, ``fold`` = k: one row per image and fold model). Columns: ``image_id, subject, group,
    visit, first_visit, fold, set, model`` and ``p_<class>`` per class.
    """
    unknown = sorted(set(split["group"]) - set(classes))
    if unknown:
        raise ValueError(f"split groups {unknown} are not among the classes {list(classes)}")
    rows, held_out, folds = _fold_rows(volumes, split)
    x, y = features(rows), rows["group"].to_numpy()
    parts = []
    for fold in folds:
        train = ~held_out & (rows["fold"] != fold)
        model = make_model(seed).fit(x[train], y[train])
        for name, mask in (("oof", ~held_out & (rows["fold"] == fold)), ("test", held_out)):
            part = rows.loc[mask, ["image_id", "subject", "group", "visit", "first_visit"]].assign(fold=fold, set=name)
            probabilities = _probabilities(model, x[mask], classes)
            columns = {f"p_{c}": probabilities[:, i] for i, c in enumerate(classes)}
            parts.append(part.assign(model=MODEL_NAME, **columns))
    return _oof_first(parts)


def is_age(column: str | None) -> bool:
    """Whether a score task's column is the age (brain age), which the score baseline must not take as a feature."""
    return str(column).strip().lower() == "age"


def describe(task: TaskSpec | None) -> str:
    """The baseline of ``task`` (None: the default) in one sentence, for the reports."""
    if task is None or not task.regression:
        return "baseline: logistic regression on ICV-normalised regional volumes + age + sex, same folds."
    column = task.column
    features = "regional volumes + age + sex"
    if is_age(column):
        features = "regional volumes + sex (age left out: it is the target)"
    return (
        f"baseline: ridge regression of {column} on ICV-normalised {features}, standardised, its penalty chosen by a "
        "subject-grouped inner cross-validation of each fold's training side; same folds."
    )


def score_baseline_predictions(volumes: pd.DataFrame, split: pd.DataFrame, drop_age: bool) -> pd.DataFrame:
    """Out-of-fold and test predictions of :func:`make_regressor` on the folds of ``split``, for a score task.

    As :func:`baseline_predictions`, but the truth is the score in ``volumes``' ``group`` column (the manifest's
    ``label``, which holds a score task's float target) and each row carries ``target`` and ``prediction`` instead
    of probabilities. ``drop_age``: leave age out of the features (brain age: the target itself). The penalty of
    each fold's model is chosen on its training side only. Columns: ``image_id, subject, group, visit,
    first_visit, fold, set, model, target, prediction``.
    """
    rows, held_out, folds = _fold_rows(volumes, split)
    target = pd.to_numeric(rows[TRUTH], errors="coerce").to_numpy(float)
    bad = rows.loc[~np.isfinite(target), "image_id"].tolist()
    if bad:
        raise BaselineError(
            f"baseline: {len(bad)} image(s) have a score that is not a finite number (e.g. {', '.join(bad[:5])}): "
            "leave them out of the task (data.task: their clinical value is missing)"
        )
    x = features(rows).drop(columns=["age"] if drop_age else [])
    parts = []
    for fold in folds:
        train = (~held_out & (rows["fold"] != fold)).to_numpy()
        subjects = rows.loc[train, "subject"]
        n_subjects = subjects.nunique()
        if n_subjects < 2:
            raise BaselineError(
                f"baseline: fold {fold} trains on {n_subjects} subject(s); choosing the ridge penalty holds out "
                "subjects of the training side, so it needs at least 2: add subjects or use fewer --folds"
            )
        model = make_regressor(n_subjects).fit(x[train], target[train], groups=subjects.to_numpy())
        for name, mask in (("oof", ~held_out & (rows["fold"] == fold)), ("test", held_out)):
            part = rows.loc[mask, ["image_id", "subject", "group", "visit", "first_visit"]].assign(fold=fold, set=name)
            prediction = model.predict(x[mask]) if mask.any() else np.empty(0)
            parts.append(part.assign(model=MODEL_NAME, **{TRUTH: target[mask.to_numpy()], PREDICTION: prediction}))
    return _oof_first(parts)


def _fold_rows(volumes: pd.DataFrame, split: pd.DataFrame) -> tuple[pd.DataFrame, pd.Series, list[int]]:
    """The split's rows with their volumes (``volumes``' ``group`` as ``target``) and first-visit flags, the mask of
    the test images, and the folds of the others.
    """
    missing = sorted(set(split["image_id"]) - set(volumes["image_id"]))
    if missing:
        raise ValueError(f"{len(missing)} image(s) of the split have no volumes (e.g. {', '.join(missing[:5])})")
    rows = split[["image_id", "subject", "group", "split", "fold"]].merge(
        volumes.drop(columns="subject").rename(columns={"group": TRUTH}),
        on="image_id",
        how="left",
        validate="one_to_one",
    )
    rows["first_visit"] = first_visit_flags(rows)
    held_out = rows["split"] == "test"
    folds = sorted(rows.loc[~held_out, "fold"].unique())
    if not folds or folds[0] < 0:
        raise ValueError("the split has no folds for its non-test images: draw it with SplitSpec(folds=k)")
    return rows, held_out, folds


def _oof_first(parts: list[pd.DataFrame]) -> pd.DataFrame:
    out = pd.concat(parts, ignore_index=True)
    return out.sort_values("set", kind="stable", key=lambda s: s != "oof", ignore_index=True)
