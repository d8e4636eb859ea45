"""Score the regional-volume baseline (logistic regression; ridge regression for a score task) on the
cross-validation folds the CNN uses.

``python -m adni_lightning baseline [--config FILE ...] [--folds 5] [--root DIR] [--data.* ...]`` reads the cohort
as ``fit`` would, draws (or reuses) the k-fold subject split in ``DIR/split.csv`` with the run's ``data.split``
seed and test fraction (the same ``split.csv`` and ``split.json`` that ``cv`` draws, checked against the options in
either order), and writes the baseline's out-of-fold predictions (``DIR/baseline/oof_predictions.csv``)
and, with a test split, its test predictions, so the CNN's folds can be compared with it image by image.
"""

from __future__ import annotations

from collections.abc import Sequence
from pathlib import Path

import pandas as pd
from sklearn.metrics import balanced_accuracy_score

from adni_lightning.atomic import output_dir, write_text
from adni_lightning.commands.inspect import cohort_volumes
from adni_lightning.data.clinical import TaskSpec
from adni_lightning.data.split import SplitError, cross_validation_split
from adni_lightning.evaluation.baseline import baseline_predictions, is_age, score_baseline_predictions
from adni_lightning.evaluation.metrics import PREDICTION, TRUTH, regression_metrics
from adni_lightning.run import Run
from adni_lightning.vocabulary import ClassName


def write_baseline(
    root: Path,
    volumes: pd.DataFrame,
    split: pd.DataFrame,
    classes: Sequence[ClassName],
    seed: int,
    task: TaskSpec | None = None,
) -> pd.DataFrame:
    """Fit the baseline on every fold of ``split``; write ``root/baseline/{oof,test}_predictions.csv``.

    ``task`` is the datamodule's task: a score task (``regression``) gets the ridge baseline of
    :func:`score_baseline_predictions` (without age for brain age), any other the logistic regression.
    Returns every prediction row (out-of-fold and test).
    """
    if task is not None and task.regression:
        predictions = score_baseline_predictions(volumes, split, drop_age=is_age(task.column))
    else:
        predictions = baseline_predictions(volumes, split, classes, seed=seed)
    for name in ("oof", "test"):
        part = predictions[predictions["set"] == name]
        if len(part):
            write_text(root / "baseline" / f"{name}_predictions.csv", part.to_csv(index=False), "--root")
    return predictions


def fit_baseline(run: Run, folds: int = 5, root: Path | None = None) -> Path:
    """Fit the baseline on every fold of the run's k-fold split, write its predictions, print its OOF balanced
    accuracy; returns the folder.

    Args:
        run: the configuration whose cohort and split options are used.
        folds: number of cross-validation folds (at most the non-test subjects of the smallest group).
        root: cross-validation folder holding split.csv and baseline/ (default: <trainer.default_root_dir>/cv).
    """
    if folds < 2:
        raise SplitError(f"--folds {folds}: cross-validation needs at least 2 folds")
    volumes = cohort_volumes(run)
    dm = run.datamodule
    root = output_dir(root or run.root / "cv", "--root")
    split = cross_validation_split(dm.manifest(), dm.split_spec, folds, root / "split.csv", dm.classes)
    task = dm.task
    predictions = write_baseline(root, volumes, split, dm.classes, dm.split_spec.seed, task)
    written = sorted((root / "baseline").glob("*_predictions.csv"))
    oof = predictions[predictions["set"] == "oof"]
    if task.regression:
        mae = regression_metrics(oof[TRUTH].to_numpy(float), oof[PREDICTION].to_numpy(float))["mae"]
        figure = f"OOF MAE {mae:.3f} of {task.column}" + (" (age not a feature)" if is_age(task.column) else "")
    else:
        probabilities = oof[[f"p_{c}" for c in dm.classes]].to_numpy()
        bacc = balanced_accuracy_score(oof["group"], [dm.classes[i] for i in probabilities.argmax(axis=1)])
        figure = f"OOF balanced accuracy {bacc:.3f}"
    print(
        f"baseline: {figure} on {len(oof)} images of {oof['subject'].nunique()} subjects "
        f"({folds} folds); wrote {', '.join(str(w) for w in written)}"
    )
    return root


COMMAND = fit_baseline
