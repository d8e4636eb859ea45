"""The reference every image model must beat: logistic regression on regional volumes, age and sex, same folds.

Published 3-way comparisons put a CNN only a few AUC points above a FreeSurfer volume model on the same subjects
(Liu et al. 2022, Sci Rep), so a CNN result means little without this baseline scored on the very same folds and
images. Features: each structure's volume divided by ``LabelledVolume`` (the label map's head-size proxy), age,
and sex (F = 1); a scikit-learn Pipeline standardises them on each fold's training side only, then fits a
multinomial logistic regression (lbfgs, L2, C = 1). The result is a predictions frame like the CNN's.
"""

from __future__ import annotations

import re
from collections.abc import Sequence

import numpy as np
import pandas as pd
from sklearn.linear_model import LogisticRegression
from sklearn.pipeline import Pipeline, make_pipeline
from sklearn.preprocessing import StandardScaler

from adni_lightning.data.volumes import LABELLED, structure_columns
from adni_lightning.vocabulary import ClassName

MODEL_NAME = "baseline"
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
    missing = sorted(set(split["image_id"]) - set(volumes["image_id"]))
    if missing:
        raise ValueError(f"{len(missing)} image(s) of the split have no volumes (e.g. {', '.join(missing[:5])})")
    rows = split[["image_id", "subject", "group", "split", "fold"]].merge(
        volumes.drop(columns=["subject", "group"]), on="image_id", how="left", validate="one_to_one"
    )
    rows["first_visit"] = first_visit_flags(rows)
    x, y = features(rows), rows["group"].to_numpy()
    held_out = rows["split"] == "test"
    folds = sorted(rows.loc[~held_out, "fold"].unique())
    if not folds or folds[0] < 0:
        raise ValueError("the split has no folds for its non-test images: draw it with SplitSpec(folds=k)")
    parts = []
    for fold in folds:
        train = ~held_out & (rows["fold"] != fold)
        model = make_model(seed).fit(x[train], y[train])
        for name, mask in (("oof", ~held_out & (rows["fold"] == fold)), ("test", held_out)):
            part = rows.loc[mask, ["image_id", "subject", "group", "visit", "first_visit"]].assign(fold=fold, set=name)
            probabilities = _probabilities(model, x[mask], classes)
            columns = {f"p_{c}": probabilities[:, i] for i, c in enumerate(classes)}
            parts.append(part.assign(model=MODEL_NAME, **columns))
    out = pd.concat(parts, ignore_index=True)
    return out.sort_values("set", kind="stable", key=lambda s: s != "oof", ignore_index=True)
