"""Subject-level, group-stratified train/val/test split, saved as a CSV and reused.

ADNI subjects have several visits; splitting images would put the same brain on both sides. Subjects are
drawn within each diagnostic group (the group of their first row), so class proportions match across sides.
"""

from __future__ import annotations

import hashlib
import json
import logging
from collections.abc import Sequence
from dataclasses import dataclass, replace
from pathlib import Path

import numpy as np
import pandas as pd

from adni_lightning.atomic import write_once
from adni_lightning.errors import ProjectError

log = logging.getLogger(__name__)

SPLIT_COLUMNS = ("image_id", "subject", "group", "split", "fold")
SIDES = ("train", "val", "test")
#: The :class:`SplitSpec` options that decide a split, saved beside it (``split.json`` beside ``split.csv``).
SPEC_OPTIONS = ("val_fraction", "test_fraction", "seed", "folds", "fold")


class SplitError(ProjectError, ValueError):
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
            raise SplitError(
                f"data.split.val_fraction {self.val_fraction} and data.split.test_fraction {self.test_fraction} "
                "must each be in [0, 1) and leave training data"
            )
        if self.folds is None and self.fold != 0:
            raise SplitError(
                f"data.split.fold {self.fold} needs data.split.folds: without folds there is no fold to hold out"
            )
        if self.folds is not None and (self.folds < 2 or not 0 <= self.fold < self.folds):
            raise SplitError(
                f"data.split.folds {self.folds} must be at least 2 and data.split.fold {self.fold} in [0, folds)"
            )

    @property
    def sides(self) -> tuple[str, ...]:
        """The sides this spec deals subjects to: train, val (unless ``val_fraction`` is 0), test (if asked)."""
        val = ("val",) if self.folds is not None or self.val_fraction > 0 else ()
        return ("train", *val, *(("test",) if self.test_fraction > 0 else ()))

    def options(self) -> dict[str, object]:
        """The options that decide who is on which side, saved beside a split to recognise it later."""
        return {name: getattr(self, name) for name in SPEC_OPTIONS}


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


def options_path(path: str | Path) -> Path:
    """Where the options that drew the split at ``path`` are saved: ``split.json`` beside ``split.csv``."""
    return Path(path).with_suffix(".json")


def save_split(split: pd.DataFrame, path: str | Path, spec: SplitSpec | None = None) -> None:
    """Write the split at ``path`` unless the same one is there; refuse another one there.

    Each file appears whole at once (:func:`~adni_lightning.atomic.write_once`): a half-written split is never read
    back as the run's split, and processes that draw the same split concurrently (``cv --fold K`` as a SLURM array)
    all end with one copy of it. With ``spec``, the options that drew it are written first, beside it
    (:func:`options_path`), so that a later run asking for another split is refused (:func:`check_split_options`)
    instead of reusing this one.
    """
    path = Path(path)
    files = [(path, split.to_csv(index=False))]
    if spec is not None:
        files.insert(0, (options_path(path), json.dumps(spec.options(), indent=1)))
    for target, text in files:
        if (
            not write_once(target, text.encode(), "data.split.file (or --trainer.default_root_dir)")
            and target.read_text() != text
        ):
            raise SplitError(
                f"{target} already holds another split (drawn by a run on the same folder with other options or "
                f"data, perhaps at the same time): give each run its own data.split.file, or delete {target.name} and "
                "run again"
            )


def check_split_options(path: str | Path, spec: SplitSpec) -> None:
    """Raise :class:`SplitError` when the split saved at ``path`` was drawn with other options than ``spec`` asks for.

    A split without its options file (written by hand, by another tool, or before the file existed) is used as it
    is, with a console line saying so. ``val_fraction`` is not compared between two k-fold splits (folds ignore it).
    """
    saved_path = options_path(path)
    if not saved_path.is_file():
        log.info(
            "%s has no %s beside it: its sides are used as they are, not checked against data.split",
            path,
            saved_path.name,
        )
        return
    saved = json.loads(saved_path.read_text())
    asked = spec.options()
    skip = {"val_fraction"} if saved.get("folds") is not None and spec.folds is not None else set()
    differing = [name for name in SPEC_OPTIONS if name not in skip and saved.get(name) != asked[name]]
    if differing:
        listed = "; ".join(f"data.split.{n} {saved.get(n)} (saved) vs {asked[n]} (asked)" for n in differing)
        raise SplitError(
            f"{path} was drawn with other options than this run asks for: {listed}; pass the saved options, point "
            f"data.split.file elsewhere, or delete it and {saved_path.name} to draw a new split"
        )


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


def dealt_subjects(split: pd.DataFrame, classes: Sequence[str]) -> pd.DataFrame:
    """Subjects per class (rows, in ``classes`` order) and side (columns ``train``, ``val``, ``test``)."""
    subjects = split.drop_duplicates("subject")
    counts = subjects.groupby(["group", "split"]).size().unstack(fill_value=0)
    return counts.reindex(index=list(classes), columns=list(SIDES), fill_value=0)


def describe_dealing(split: pd.DataFrame, classes: Sequence[str]) -> str:
    """How the rounding came out: ``CN 10 → 6/2/2, …`` (subjects per class → train/val/test)."""
    counts = dealt_subjects(split, classes)
    return ", ".join(f"{c} {row.sum()} → {row['train']}/{row['val']}/{row['test']}" for c, row in counts.iterrows())


def check_fold_count(split: pd.DataFrame, folds: int, classes: Sequence[str], source: str | None = None) -> None:
    """Raise :class:`SplitError` when a class has fewer non-test subjects than ``folds`` (some folds would lack it)."""
    counts = dealt_subjects(split, classes)
    non_test = counts.sum(axis=1) - counts["test"]
    short = [c for c in classes if non_test[c] < folds]
    if short:
        listed = ", ".join(f"{c} {n}" for c, n in non_test.items())
        raise SplitError(
            f"{f'{source}: ' if source else ''}{folds} folds need at least {folds} non-test subjects per group, but "
            f"{', '.join(f'{c} has {non_test[c]}' for c in short)}: some folds would validate without it; "
            f"non-test subjects per group: {listed}; use at most {int(non_test.min())} folds or add subjects"
        )


def check_sides(split: pd.DataFrame, classes: Sequence[str], spec: SplitSpec, source: str) -> None:
    """Raise :class:`SplitError` unless every class has subjects on every side ``spec`` asks for.

    A class absent from the cohort trains a model that can never predict it and scores it 0; a class absent from
    the validation side makes the balanced accuracy that picks the best checkpoint meaningless. The message says
    how each class's subjects were dealt and, for a side a fraction rounded to nothing, the rounding.
    """
    counts = dealt_subjects(split, classes)
    totals = counts.sum(axis=1)
    listed = ", ".join(f"{c} {n}" for c, n in totals.items())
    absent = [c for c, n in totals.items() if n == 0]
    if absent:
        raise SplitError(
            f"{source}: no subject of class {', '.join(absent)} (subjects per class: {listed}); every class of "
            "data.manifest.classes needs subjects to train and validate on (map or drop groups with group_map)"
        )
    if spec.folds is not None:
        check_fold_count(split, spec.folds, classes, source)
    for side in spec.sides:
        missing = [c for c in classes if counts.at[c, side] == 0]
        if not missing:
            continue
        klass, n = missing[0], int(totals[missing[0]])
        if side == "train":
            why = (
                f"nothing is left for training after {counts.at[klass, 'test']} test and {counts.at[klass, 'val']} val"
            )
        else:
            fraction = spec.val_fraction if side == "val" else spec.test_fraction
            why = f"{side}_fraction {fraction} × {n} = {fraction * n:g}, rounded to {round(fraction * n)}"
        raise SplitError(
            f"{source}: the {side} side has no subject of class {', '.join(missing)} ({klass}: {n} subjects; {why}); "
            f"subjects per class → train/val/test: {describe_dealing(split, classes)}; add subjects or change "
            "data.split"
        )


def split_digest(split: pd.DataFrame) -> str:
    """Short fingerprint of who is on which side, stored in checkpoints to catch a resume on another split."""
    rows = sorted(f"{i}:{s}" for i, s in zip(split["image_id"], split["split"]))
    return hashlib.sha1("\n".join(rows).encode()).hexdigest()[:16]


def cross_validation_split(
    manifest: pd.DataFrame, spec: SplitSpec, folds: int, path: Path, classes: list[str]
) -> pd.DataFrame:
    """The k-fold split at ``path``: reused after :func:`check_split_options`' and :func:`load_split`'s checks, else
    drawn with ``spec``'s seed and test fraction and saved with its options, as ``cv`` saves its own (so either
    command reuses the other's). Raises :class:`SplitError` when a group has fewer non-test subjects than ``folds``.
    """
    spec = replace(spec, folds=folds, fold=0, file=str(path))
    if path.exists():
        check_split_options(path, spec)
        split = load_split(path, manifest)
        dealt = sorted(int(k) for k in split.loc[split["split"] != "test", "fold"].unique())
        if dealt != list(range(folds)):
            raise SplitError(
                f"{path}: deals folds {dealt}, not the {folds} of --folds: pass --folds "
                f"{len(dealt)}, or another --root, or delete it"
            )
        check_fold_count(split, folds, classes)
        return split
    split = split_subjects(manifest, spec)
    check_fold_count(split, folds, classes)
    save_split(split, path, spec)
    return split
