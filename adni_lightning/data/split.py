"""Subject-level, group-stratified train/val/test split, saved as a CSV and reused.

ADNI subjects have several visits; splitting images would put the same brain on both sides. Subjects are
drawn within each diagnostic group (the group of their first row), so class proportions match across sides.
"""

from __future__ import annotations

import hashlib
from dataclasses import dataclass
from pathlib import Path

import numpy as np
import pandas as pd

SPLIT_COLUMNS = ("image_id", "subject", "group", "split", "fold")
SIDES = ("train", "val", "test")


class SplitError(ValueError):
    """A split file that would leak or does not match the manifest."""


@dataclass(frozen=True)
class SplitSpec:
    """How subjects are dealt to train/val/test (the ``data.split`` config group).

    Args:
        val_fraction: share of each group's subjects for validation (ignored with ``folds``).
        test_fraction: share of each group's subjects held out for testing; never in any fold.
        seed: seed of the subject shuffle.
        folds: deal the non-test subjects into this many stratified folds; ``fold`` is then the validation side.
        fold: the held-out fold, in ``[0, folds)``.
        file: where the split is saved and reused (default ``<trainer.default_root_dir>/split.csv``).
    """

    val_fraction: float = 0.2
    test_fraction: float = 0.0
    seed: int = 0
    folds: int | None = None
    fold: int = 0
    file: str | None = None

    def __post_init__(self) -> None:
        fractions = (self.val_fraction, self.test_fraction)
        if not all(0 <= f < 1 for f in fractions) or sum(fractions) >= 1:
            raise ValueError(
                f"val_fraction={self.val_fraction} and test_fraction={self.test_fraction} must each be in [0, 1) "
                "and leave training data"
            )
        if self.folds is not None and (self.folds < 2 or not 0 <= self.fold < self.folds):
            raise ValueError(f"folds={self.folds} must be >= 2 and fold={self.fold} in [0, folds)")


def split_subjects(manifest: pd.DataFrame, spec: SplitSpec) -> pd.DataFrame:
    """Assign every image to train/val/test by subject.

    Within each group, shuffled subjects go first to test (``test_fraction``), then to val (``val_fraction``),
    the rest to train. With ``folds`` the non-test subjects are dealt into that many stratified folds
    (column ``fold``) and fold ``fold`` is the validation side, for k-fold cross-validation; otherwise
    ``fold`` is -1.
    """
    subject_group = manifest.groupby("subject", sort=True)["label"].first()
    rng = np.random.default_rng(spec.seed)
    side, folds = {}, {}
    dealt = 0  # fold dealing continues across groups, so the remainders do not all land in fold 0
    for group in sorted(subject_group.unique()):
        subjects = rng.permutation(subject_group.index[subject_group == group].to_numpy())
        n_test = int(round(len(subjects) * spec.test_fraction))
        for subject in subjects[:n_test]:
            side[subject], folds[subject] = "test", -1
        rest = subjects[n_test:]
        if spec.folds is not None:
            for position, subject in enumerate(rest):
                folds[subject] = (dealt + position) % spec.folds
                side[subject] = "val" if folds[subject] == spec.fold else "train"
            dealt += len(rest)
        else:
            n_val = int(round(len(subjects) * spec.val_fraction))
            for position, subject in enumerate(rest):
                side[subject], folds[subject] = ("val" if position < n_val else "train"), -1
    split = manifest[["image_id", "subject", "label"]].rename(columns={"label": "group"}).copy()
    split["split"] = split["subject"].map(side)
    split["fold"] = split["subject"].map(folds).astype(int)
    return split.reset_index(drop=True)[list(SPLIT_COLUMNS)]


def check_no_leak(split: pd.DataFrame, source: str = "split") -> None:
    """Raise :class:`SplitError` if any subject has images on two sides."""
    sides = split.groupby("subject")["split"].nunique()
    leaking = sides[sides > 1].index.tolist()
    if leaking:
        shown = ", ".join(leaking[:10]) + (" …" if len(leaking) > 10 else "")
        raise SplitError(f"{source}: {len(leaking)} subject(s) on more than one side: {shown}")


def save_split(split: pd.DataFrame, path: str | Path) -> None:
    """Write atomically: a half-written split must never be read back as the run's split."""
    path = Path(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    tmp = path.with_name(f".{path.name}.tmp")
    split.to_csv(tmp, index=False)
    tmp.replace(path)


def load_split(path: str | Path, manifest: pd.DataFrame) -> pd.DataFrame:
    """Read a saved split and check it against the manifest: no leak, same images, same subjects."""
    split = pd.read_csv(path, dtype={"image_id": str, "subject": str, "group": str, "split": str})
    missing_columns = [c for c in SPLIT_COLUMNS if c not in split.columns]
    if missing_columns:
        raise SplitError(f"{path}: missing column(s) {', '.join(missing_columns)}")
    bad_sides = sorted(set(split["split"]) - set(SIDES))
    if bad_sides:
        raise SplitError(f"{path}: unknown split value(s) {bad_sides}; expected {list(SIDES)}")
    check_no_leak(split, str(path))
    known = set(split["image_id"])
    unassigned = [i for i in manifest["image_id"] if i not in known]
    if unassigned:
        raise SplitError(
            f"{path}: {len(unassigned)} image(s) of the CSV have no side (e.g. {', '.join(unassigned[:5])}); "
            "the split was made for other data: delete it or point split_file elsewhere"
        )
    subjects = dict(zip(manifest["image_id"], manifest["subject"]))
    moved = [i for i, s in zip(split["image_id"], split["subject"]) if i in subjects and subjects[i] != s]
    if moved:
        raise SplitError(f"{path}: image(s) {', '.join(moved[:5])} belong to another subject in the CSV")
    return split[split["image_id"].isin(set(manifest["image_id"]))].reset_index(drop=True)


def split_digest(split: pd.DataFrame) -> str:
    """Short fingerprint of who is on which side, stored in checkpoints to catch a resume on another split."""
    rows = sorted(f"{i}:{s}" for i, s in zip(split["image_id"], split["split"]))
    return hashlib.sha1("\n".join(rows).encode()).hexdigest()[:16]
