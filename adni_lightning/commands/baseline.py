"""Score the regional-volume baseline (logistic regression) on the cross-validation folds the CNN uses.

``python -m adni_lightning baseline [--config FILE ...] [--folds 5] [--root DIR] [--data.* ...]`` reads the cohort
as ``fit`` would, draws (or reuses) the k-fold subject split in ``DIR/split.csv`` with the run's ``data.split``
seed and test fraction (the same ``split.csv`` and ``split.json`` that ``cv`` draws, checked against the options in
either order), and writes the baseline's out-of-fold predictions (``DIR/baseline/oof_predictions.csv``)
and, with a test split, its test predictions, so the CNN's folds can be compared with it image by image.
"""

from __future__ import annotations

from pathlib import Path

import pandas as pd
from sklearn.metrics import balanced_accuracy_score

from adni_lightning.atomic import output_dir, write_text
from adni_lightning.commands.inspect import cohort_volumes, parser
from adni_lightning.commands.run_config import run_root, split_run_options
from adni_lightning.data.split import SplitError, cross_validation_split
from adni_lightning.evaluation.baseline import baseline_predictions

PROG = "python -m adni_lightning baseline"


def write_baseline(
    root: Path, volumes: pd.DataFrame, split: pd.DataFrame, classes: list[str], seed: int
) -> pd.DataFrame:
    """Fit the baseline on every fold of ``split``; write ``root/baseline/{oof,test}_predictions.csv``.

    Returns every prediction row (out-of-fold and test).
    """
    predictions = baseline_predictions(volumes, split, classes, seed=seed)
    for name in ("oof", "test"):
        part = predictions[predictions["set"] == name]
        if len(part):
            write_text(root / "baseline" / f"{name}_predictions.csv", part.to_csv(index=False), "--root")
    return predictions


def main(argv: list[str]) -> None:
    """Parse ``argv``, fit the baseline on every fold, write its predictions and print its OOF balanced accuracy."""
    own, overrides = split_run_options(argv)
    p = parser(PROG, __doc__)
    p.add_argument(
        "--folds",
        type=int,
        default=5,
        help="number of cross-validation folds (at most the non-test subjects of the smallest group)",
    )
    p.add_argument(
        "--root",
        type=Path | None,
        default=None,
        help="cross-validation folder holding split.csv and baseline/ (default: <trainer.default_root_dir>/cv)",
    )
    options = p.parse_args(own)
    if options.folds < 2:
        raise SplitError(f"--folds {options.folds}: cross-validation needs at least 2 folds")
    cli, volumes = cohort_volumes(options.config, overrides)
    dm = cli.datamodule
    root = output_dir(options.root or run_root(cli) / "cv", "--root")
    split = cross_validation_split(dm.manifest(), dm.split_spec, options.folds, root / "split.csv", dm.classes)
    predictions = write_baseline(root, volumes, split, dm.classes, dm.split_spec.seed)
    written = sorted((root / "baseline").glob("*_predictions.csv"))
    oof = predictions[predictions["set"] == "oof"]
    probabilities = oof[[f"p_{c}" for c in dm.classes]].to_numpy()
    bacc = balanced_accuracy_score(oof["group"], [dm.classes[i] for i in probabilities.argmax(axis=1)])
    print(
        f"baseline: OOF balanced accuracy {bacc:.3f} on {len(oof)} images of {oof['subject'].nunique()} subjects "
        f"({options.folds} folds); wrote {', '.join(str(w) for w in written)}"
    )
