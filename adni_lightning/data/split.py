"""Subject-level, group-stratified train/val/test split, saved as a CSV and reused.

ADNI subjects have several visits; splitting images would put the same brain on both sides. Subjects are
drawn within each diagnostic group (the group of their first row), so class proportions match across sides.
A score task (a regression: the manifest's ``label`` is a number) is stratified by the score instead: each subject's
first image's score puts it into one of :data:`SCORE_STRATA`, equal-count bins of the subjects ranked by score
(:func:`score_strata`), and the split file's ``group`` column holds that bin (``q1`` the lowest scores), so the
score's range is spread over the sides as a class is.

A k-fold split is drawn once, into one file that every fold reads, as nnU-Net keeps one ``splits_final``: its
``fold`` column deals the non-test subjects into folds and its ``split`` column says ``cv`` for them (``test`` for
the held-out test subjects, fold -1), so the file names no fold's sides and reads the same whichever fold reads it.
A run of fold k (``data.split.folds``, ``data.split.fold``) derives its sides from the ``fold`` column
(:func:`fold_sides`): fold k validates, the other folds train. Files that older versions wrote per fold (the
``split`` column holding one fold's train/val) are read the same way; their ``fold`` column is the same in every
fold's file. The options saved beside a k-fold file (``split.json``) leave out ``fold`` and ``val_fraction``, which
do not change it.
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
from adni_lightning.vocabulary import ClassName

log = logging.getLogger(__name__)

SPLIT_COLUMNS = ("image_id", "subject", "group", "split", "fold")
SIDES = ("train", "val", "test")
#: The ``split`` value of a k-fold file's non-test rows: their side is the fold's to say (:func:`fold_sides`).
CV = "cv"
#: The :class:`SplitSpec` options that decide a split, saved beside it (``split.json`` beside ``split.csv``).
SPEC_OPTIONS = ("val_fraction", "test_fraction", "seed", "folds", "fold")
#: The options a k-fold file does not depend on: which fold validates, and the val share that folds replace.
KFOLD_FREE = ("val_fraction", "fold")


#: The strata of a score task's split, lowest scores first: quintiles of the subjects ranked by score.
SCORE_STRATA = tuple(ClassName(f"q{k}") for k in range(1, 6))


def score_strata(scores: pd.Series) -> pd.Series:
    """Each subject's stratum (:data:`SCORE_STRATA`) from its score (``scores`` indexed by subject, sorted): the
    subjects ranked by score and dealt into equal-count bins, ties broken by subject order, so that a score most
    subjects share (MMSE 30) still fills bins of equal size. Fewer subjects than strata fill the first strata alone.
    """
    ranks = scores.rank(method="first").to_numpy()
    bins = min(len(SCORE_STRATA), len(scores))
    positions = np.ceil(ranks * bins / len(scores)).astype(int) - 1
    return pd.Series([SCORE_STRATA[p] for p in positions], index=scores.index, dtype=object)


def is_score(manifest: pd.DataFrame) -> bool:
    """Whether the manifest is a score task's: its ``label`` holds numbers (a class task's holds class names)."""
    return pd.api.types.is_float_dtype(manifest["label"])


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
        fold: the held-out fold, in ``[0, folds)``; every fold reads the same file (its ``fold`` column).
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
        """The options that decide who is on which side, saved beside a split to recognise it later (a k-fold file:
        without :data:`KFOLD_FREE`, so every fold of one cross-validation saves and accepts the same record).
        """
        skip = KFOLD_FREE if self.folds is not None else ()
        return {name: getattr(self, name) for name in SPEC_OPTIONS if name not in skip}


def split_subjects(manifest: pd.DataFrame, spec: SplitSpec) -> pd.DataFrame:
    """Assign every image to train/val/test by subject.

    Within each group, shuffled subjects go first to test (``test_fraction``), then to val (``val_fraction``),
    the rest to train. With ``folds`` the non-test subjects are dealt into that many stratified folds
    (column ``fold``) and fold ``fold`` is the validation side, for k-fold cross-validation; otherwise
    ``fold`` is -1. A score task's groups are its subjects' score strata (:func:`score_strata`), which the ``group``
    column then holds.
    """
    subject_group = manifest.groupby("subject", sort=True)["label"].first()
    score = is_score(manifest)
    if score:
        subject_group = score_strata(subject_group)
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
    if score:
        split["group"] = split["subject"].map(subject_group)
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


def saved_form(split: pd.DataFrame) -> pd.DataFrame:
    """``split`` as its file holds it: the non-test rows of a k-fold split say :data:`CV`, not one fold's sides."""
    return split.assign(split=split["split"].where(split["fold"] < 0, CV))


def save_split(split: pd.DataFrame, path: str | Path, spec: SplitSpec | None = None) -> None:
    """Write the split at ``path`` (a k-fold one in its :func:`saved_form`) unless the same one is there; refuse
    another one there.

    Each file appears whole at once (:func:`~adni_lightning.atomic.write_once`): a half-written split is never read
    back as the run's split, and processes that draw the same split concurrently (``cv --fold K`` as a SLURM array)
    all end with one copy of it. With ``spec``, the options that drew it are written first, beside it
    (:func:`options_path`), so that a later run asking for another split is refused (:func:`check_split_options`)
    instead of reusing this one.
    """
    path = Path(path)
    files = [(path, saved_form(split).to_csv(index=False))]
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
    is, with a console line saying so. When either is a k-fold split, :data:`KFOLD_FREE` is not compared: any fold
    reads a k-fold file, folds ignore ``val_fraction``, and ``folds`` tells the two kinds apart.
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
    skip = KFOLD_FREE if saved.get("folds") is not None or spec.folds is not None else ()
    differing = [name for name in SPEC_OPTIONS if name not in skip and saved.get(name) != asked[name]]
    if differing:
        listed = "; ".join(f"data.split.{n} {saved.get(n)} (saved) vs {asked[n]} (asked)" for n in differing)
        raise SplitError(
            f"{path} was drawn with other options than this run asks for: {listed}; pass the saved options, point "
            f"data.split.file elsewhere, or delete it and {saved_path.name} to draw a new split"
        )


def load_split(path: str | Path, manifest: pd.DataFrame) -> pd.DataFrame:
    """Read a saved split and check it against the manifest: no leak, same images, same subjects. A k-fold file
    comes as it is saved (:data:`CV` rows): :func:`run_sides` gives a run's sides.
    """
    split = pd.read_csv(path, dtype={"image_id": str, "subject": str, "group": str, "split": str})
    missing_columns = [c for c in SPLIT_COLUMNS if c not in split.columns]
    if missing_columns:
        raise SplitError(f"{path}: missing column(s) {', '.join(missing_columns)}")
    bad_sides = sorted(set(split["split"]) - {*SIDES, CV})
    if bad_sides:
        raise SplitError(f"{path}: unknown split value(s) {bad_sides}; expected {[*SIDES, CV]}")
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
    subjects = split.drop_duplicates("subject")
    non_test = subjects[subjects["split"] != "test"].groupby("group").size().reindex(list(classes), fill_value=0)
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
    absent = [str(c) for c, n in totals.items() if n == 0]
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
        klass, n = str(missing[0]), int(totals[missing[0]])
        if side == "train":
            held = counts.to_dict("index")[klass]
            why = f"nothing is left for training after {held['test']} test and {held['val']} val"
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


def folds_dealt(split: pd.DataFrame) -> list[int]:
    """The folds a split deals its non-test subjects into, in order (none for a train/val/test split)."""
    return sorted(int(k) for k in split.loc[(split["split"] != "test") & (split["fold"] >= 0), "fold"].unique())


def check_folds_dealt(split: pd.DataFrame, folds: int, source: str | Path) -> None:
    """Raise :class:`SplitError` unless ``split`` deals exactly folds ``0 … folds - 1`` (its options file may be
    missing, so the file itself is checked).
    """
    dealt = folds_dealt(split)
    if dealt != list(range(folds)):
        raise SplitError(
            f"{source}: deals folds {dealt}, not the {folds} of data.split.folds (--folds of cv and baseline): ask for "
            f"{len(dealt)} folds, point data.split.file (--root) elsewhere, or delete it"
        )


def fold_sides(split: pd.DataFrame, fold: int, source: str | Path) -> pd.DataFrame:
    """The sides of cross-validation fold ``fold``, from the ``fold`` column: its subjects validate, the other folds'
    train, test subjects (fold -1) stay test.

    ``split`` is a k-fold file: non-test rows :data:`CV`, or one fold's train/val as older versions wrote a file per
    fold. Any other ``split`` column contradicts the ``fold`` column (a hand edit), which would silently decide
    nothing: it is refused.
    """
    test, dealt = split["split"] == "test", split["fold"] >= 0
    held = set(split.loc[split["split"] == "val", "fold"])
    rest = split.loc[dealt, "split"]
    follows = (test != dealt).all() and (
        (rest == CV).all() or (len(held) == 1 and ((rest == "val") == (split.loc[dealt, "fold"] == min(held))).all())
    )
    if not follows:
        raise SplitError(
            f"{source}: its split column does not follow its fold column (test rows are fold -1; the others all "
            f"'{CV}', or one fold's val and the other folds' train): fix it, or delete it and "
            f"{options_path(source).name} to draw a new split"
        )
    sides = split["split"].where(test, (split["fold"] == fold).map({True: "val", False: "train"}))
    return split.assign(split=sides)


def run_sides(split: pd.DataFrame, spec: SplitSpec, source: str | Path) -> pd.DataFrame:
    """The train/val/test sides a run with ``spec`` uses from a loaded split file: a k-fold run's fold
    (:func:`fold_sides`, after :func:`check_folds_dealt`), else the file's own sides, which must be no k-fold file.
    """
    if spec.folds is not None:
        check_folds_dealt(split, spec.folds, source)
        return fold_sides(split, spec.fold, source)
    if (split["split"] == CV).any():
        raise SplitError(
            f"{source}: a k-fold split (folds {folds_dealt(split)}) has no train/val sides of its own: pass "
            f"data.split.folds {len(folds_dealt(split))} and data.split.fold (the fold that validates), or point "
            "data.split.file elsewhere"
        )
    return split


def cross_validation_split(
    manifest: pd.DataFrame, spec: SplitSpec, folds: int, path: str | Path, classes: Sequence[str]
) -> pd.DataFrame:
    """The k-fold split of ``cv`` and ``baseline`` at ``path``, in its :func:`saved_form`: the file there, reused
    after :func:`check_split_options`', :func:`load_split`'s and :func:`check_folds_dealt`'s checks (and never
    rewritten: a file of an older version stays as it is), else drawn with ``spec``'s seed and test fraction and
    saved with its options (``split.json``), so each command reuses the other's and every fold reads it. Raises
    :class:`SplitError` when a group has fewer non-test subjects than ``folds``.
    """
    path = Path(path)
    spec = replace(spec, folds=folds, fold=0, file=str(path))
    if path.exists():
        check_split_options(path, spec)
        split = load_split(path, manifest)
        check_folds_dealt(split, folds, path)
        fold_sides(split, 0, path)  # refuses a split column that contradicts the folds
        check_fold_count(split, folds, classes, str(path))
        return saved_form(split)
    split = split_subjects(manifest, spec)
    check_fold_count(split, folds, classes, str(path))
    save_split(split, path, spec)
    return saved_form(split)
