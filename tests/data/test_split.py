import json

import numpy as np
import pandas as pd
import pytest

from adni_lightning.data.split import (
    SplitError,
    SplitSpec,
    check_no_leak,
    check_sides,
    check_split_options,
    cross_validation_split,
    describe_dealing,
    fold_sides,
    load_split,
    run_sides,
    save_split,
    saved_form,
    split_digest,
    split_subjects,
)


def _manifest(n_subjects: int = 150, seed: int = 0) -> pd.DataFrame:
    """Subjects with 1–3 visits and unbalanced groups, like ADNI."""
    rng = np.random.default_rng(seed)
    rows = []
    for s in range(n_subjects):
        group = rng.choice(["CN", "MCI", "AD"], p=[0.35, 0.45, 0.20])
        for v in range(rng.integers(1, 4)):
            rows.append({"image_id": f"I{s * 10 + v}", "subject": f"{s % 9:03d}_S_{s:04d}", "label": group})
    return pd.DataFrame(rows)


@pytest.mark.parametrize("seed", range(25))
def test_no_subject_on_two_sides_and_class_proportions_match(seed):
    manifest = _manifest(seed=seed)
    split = split_subjects(manifest, SplitSpec(val_fraction=0.2, test_fraction=0.1, seed=seed))
    check_no_leak(split)
    sides = split.groupby("subject")["split"].nunique()
    assert (sides == 1).all()
    subjects = split.drop_duplicates("subject")
    overall = subjects["group"].value_counts(normalize=True)
    for side, fraction in (("train", 0.7), ("val", 0.2), ("test", 0.1)):
        part = subjects[subjects["split"] == side]
        assert abs(len(part) / len(subjects) - fraction) < 0.03
        proportions = part["group"].value_counts(normalize=True).reindex(overall.index, fill_value=0)
        assert (abs(proportions - overall) < 0.06).all(), (side, proportions.to_dict(), overall.to_dict())


def test_split_is_deterministic_and_depends_on_seed():
    manifest = _manifest()
    a, b, c = (split_subjects(manifest, SplitSpec(seed=s)) for s in (1, 1, 2))
    pd.testing.assert_frame_equal(a, b)
    assert split_digest(a) == split_digest(b) != split_digest(c)


def test_k_folds_partition_subjects_and_validate_on_the_chosen_fold():
    manifest = _manifest()
    split = split_subjects(manifest, SplitSpec(test_fraction=0.1, seed=0, folds=5, fold=2))
    per_subject = split.drop_duplicates("subject")
    assert set(per_subject.loc[per_subject["split"] != "test", "fold"]) == {0, 1, 2, 3, 4}
    assert (per_subject.loc[per_subject["split"] == "val", "fold"] == 2).all()
    assert (per_subject.loc[per_subject["split"] == "train", "fold"] != 2).all()
    sizes = per_subject[per_subject["split"] != "test"]["fold"].value_counts()
    assert sizes.max() - sizes.min() <= 1  # dealt round-robin across groups: equal folds
    with pytest.raises(ValueError):
        SplitSpec(folds=5, fold=5)


def test_saved_split_round_trips_and_a_leaking_file_is_refused(tmp_path):
    manifest = _manifest()
    split = split_subjects(manifest, SplitSpec(seed=0))
    path = tmp_path / "run" / "split.csv"
    save_split(split, path)
    assert list(pd.read_csv(path).columns) == ["image_id", "subject", "group", "split", "fold"]
    pd.testing.assert_frame_equal(load_split(path, manifest), split)
    leaking = split.copy()
    multi = leaking["subject"].value_counts().index[0]
    first = leaking.index[leaking["subject"] == multi][0]
    leaking.loc[first, "split"] = "val" if leaking.loc[first, "split"] == "train" else "train"
    leaking.to_csv(path, index=False)
    with pytest.raises(SplitError, match=f"1 subject\\(s\\) on more than one side: {multi}"):
        load_split(path, manifest)


def test_split_for_other_data_is_refused(tmp_path):
    manifest = _manifest()
    path = tmp_path / "split.csv"
    save_split(split_subjects(manifest.iloc[:50], SplitSpec(seed=0)), path)
    with pytest.raises(SplitError, match="have no side"):
        load_split(path, manifest)


@pytest.mark.parametrize("seed", range(20))
def test_folds_are_subject_disjoint_stratified_and_hold_out_every_subject_once(seed):
    manifest = _manifest(seed=seed)  # 1–3 visits per subject
    folds = [split_subjects(manifest, SplitSpec(test_fraction=0.1, seed=seed, folds=5, fold=k)) for k in range(5)]
    check_no_leak(folds[0])
    held_out = pd.concat([f[f["split"] == "val"] for f in folds])
    test = folds[0].loc[folds[0]["split"] == "test", "subject"]
    assert held_out["image_id"].is_unique and len(held_out) + (folds[0]["split"] == "test").sum() == len(manifest)
    assert not set(held_out["subject"]) & set(test)  # test subjects are in no fold
    assert (held_out.groupby("subject")["fold"].nunique() == 1).all()  # a subject's visits stay together
    for fold in folds[1:]:  # the fold assignment does not depend on which fold is held out
        pd.testing.assert_series_equal(fold["fold"], folds[0]["fold"])
    subjects = held_out.drop_duplicates("subject")
    shares = pd.crosstab(subjects["fold"], subjects["group"], normalize="index")
    overall = subjects["group"].value_counts(normalize=True)
    assert (shares.sub(overall, axis=1).abs() < 0.12).all().all()  # every fold has the cohort's class mix


def _cohort(counts: dict[str, int]) -> pd.DataFrame:
    """One image per subject, ``counts[group]`` subjects of each group."""
    rows = [
        {"image_id": f"I{group}{k}", "subject": f"{group}_S_{k:04d}", "label": group}
        for group, n in counts.items()
        for k in range(n)
    ]
    return pd.DataFrame(rows, columns=["image_id", "subject", "label"])


CLASSES = ("CN", "MCI", "AD")


def test_a_single_class_cohort_is_refused():
    spec = SplitSpec()
    split = split_subjects(_cohort({"CN": 20}), spec)
    with pytest.raises(SplitError) as refused:
        check_sides(split, CLASSES, spec, "split.csv")
    assert str(refused.value) == (
        "split.csv: no subject of class MCI, AD (subjects per class: CN 20, MCI 0, AD 0); every class of "
        "data.manifest.classes needs subjects to train and validate on (map or drop groups with group_map)"
    )


def test_a_side_that_rounds_to_no_subject_of_a_class_says_how_the_rounding_came_out():
    spec = SplitSpec(val_fraction=0.2)
    split = split_subjects(_cohort({"CN": 10, "MCI": 10, "AD": 2}), spec)
    assert describe_dealing(split, CLASSES) == "CN 10 → 8/2/0, MCI 10 → 8/2/0, AD 2 → 2/0/0"
    with pytest.raises(SplitError) as refused:
        check_sides(split, CLASSES, spec, "split.csv")
    assert str(refused.value) == (
        "split.csv: the val side has no subject of class AD (AD: 2 subjects; val_fraction 0.2 × 2 = 0.4, rounded to "
        "0); subjects per class → train/val/test: CN 10 → 8/2/0, MCI 10 → 8/2/0, AD 2 → 2/0/0; add subjects or "
        "change data.split"
    )
    test = SplitSpec(val_fraction=0.5, test_fraction=0.4)
    with pytest.raises(SplitError, match=r"the train side has no subject of class AD \(AD: 2 subjects; nothing is "):
        check_sides(split_subjects(_cohort({"CN": 10, "MCI": 10, "AD": 2}), test), CLASSES, test, "split.csv")
    half = SplitSpec(val_fraction=0.25)  # round half to even, as split_subjects rounds
    with pytest.raises(SplitError, match=r"val_fraction 0.25 × 2 = 0.5, rounded to 0\)"):
        check_sides(split_subjects(_cohort({"CN": 10, "MCI": 10, "AD": 2}), half), CLASSES, half, "split.csv")
    roomier = SplitSpec(val_fraction=0.3)
    check_sides(split_subjects(_cohort({"CN": 10, "MCI": 10, "AD": 2}), roomier), CLASSES, roomier, "split.csv")


def test_folds_need_as_many_non_test_subjects_of_each_class_as_folds():
    spec = SplitSpec(folds=4)
    split = split_subjects(_cohort({"CN": 8, "MCI": 8, "AD": 3}), spec)
    with pytest.raises(SplitError) as refused:
        check_sides(split, CLASSES, spec, "split.csv")
    assert str(refused.value) == (
        "split.csv: 4 folds need at least 4 non-test subjects per group, but AD has 3: some folds would validate "
        "without it; non-test subjects per group: CN 8, MCI 8, AD 3; use at most 3 folds or add subjects"
    )
    three = SplitSpec(folds=3, fold=2)
    check_sides(split_subjects(_cohort({"CN": 8, "MCI": 8, "AD": 3}), three), CLASSES, three, "split.csv")


def test_a_saved_split_drawn_with_other_options_is_refused(tmp_path):
    path = tmp_path / "split.csv"
    spec = SplitSpec(folds=5, fold=0, seed=3)
    save_split(split_subjects(_manifest(), spec), path, spec)
    assert json.loads((tmp_path / "split.json").read_text()) == {"test_fraction": 0.0, "seed": 3, "folds": 5}
    for fold in range(5):  # every fold reads the one k-fold file
        check_split_options(path, SplitSpec(folds=5, fold=fold, seed=3))
    check_split_options(path, SplitSpec(folds=5, fold=0, seed=3, val_fraction=0.5))  # folds ignore val_fraction
    with pytest.raises(SplitError) as refused:
        check_split_options(path, SplitSpec(folds=5, fold=1, seed=4, test_fraction=0.1))
    assert str(refused.value) == (
        f"{path} was drawn with other options than this run asks for: data.split.test_fraction 0.0 (saved) vs 0.1 "
        "(asked); data.split.seed 3 (saved) vs 4 (asked); pass the saved options, point data.split.file elsewhere, or "
        "delete it and split.json to draw a new split"
    )
    with pytest.raises(SplitError, match=r"for: data.split.folds 5 \(saved\) vs None \(asked\); pass"):
        check_split_options(path, SplitSpec(seed=3, fold=0))
    (tmp_path / "split.json").unlink()  # a split made elsewhere: used as it is
    check_split_options(path, SplitSpec(seed=99))


@pytest.mark.parametrize(
    "options, message",
    [
        (
            dict(val_fraction=1.5),
            "data.split.val_fraction 1.5 and data.split.test_fraction 0.0 must each be in [0, 1) and leave training "
            "data",
        ),
        (dict(fold=1), "data.split.fold 1 needs data.split.folds: without folds there is no fold to hold out"),
        (dict(folds=3, fold=3), "data.split.folds 3 must be at least 2 and data.split.fold 3 in [0, folds)"),
    ],
)
def test_split_options_that_cannot_work_are_refused(options, message):
    with pytest.raises(SplitError) as refused:
        SplitSpec(**options)
    assert str(refused.value) == message


def test_a_k_fold_split_is_one_file_from_which_every_fold_takes_its_sides(tmp_path):
    manifest = _manifest()
    path = tmp_path / "split.csv"
    spec = SplitSpec(test_fraction=0.1, seed=4)
    split = cross_validation_split(manifest, spec, 5, path, CLASSES)
    saved = pd.read_csv(path, dtype={"image_id": str, "subject": str})
    pd.testing.assert_frame_equal(saved, split)
    assert set(saved["split"]) == {"cv", "test"}  # the file names no fold's sides
    assert (saved["fold"] == -1).eq(saved["split"] == "test").all()
    assert json.loads((tmp_path / "split.json").read_text()) == {"test_fraction": 0.1, "seed": 4, "folds": 5}
    for fold in range(5):  # the sides each fold used to save in a file of its own
        asked = SplitSpec(test_fraction=0.1, seed=4, folds=5, fold=fold, file=str(path))
        check_split_options(path, asked)
        pd.testing.assert_frame_equal(
            run_sides(load_split(path, manifest), asked, path), split_subjects(manifest, asked)
        )
    stamp = path.stat().st_mtime_ns
    pd.testing.assert_frame_equal(cross_validation_split(manifest, spec, 5, path, CLASSES), split)  # reused
    assert path.stat().st_mtime_ns == stamp


def test_a_fold_file_of_an_older_version_gives_every_fold_its_sides(tmp_path):
    """Older versions saved fold k's train/val in fold_k/split.csv: its fold column is the same in every fold's."""
    manifest = _manifest()
    path = tmp_path / "split.csv"
    old = split_subjects(manifest, SplitSpec(folds=3, fold=1, seed=2))
    old.to_csv(path, index=False)
    (tmp_path / "split.json").write_text(
        json.dumps({"val_fraction": 0.2, "test_fraction": 0.0, "seed": 2, "folds": 3, "fold": 1})
    )
    for fold in range(3):
        spec = SplitSpec(folds=3, fold=fold, seed=2)
        check_split_options(path, spec)
        pd.testing.assert_frame_equal(run_sides(load_split(path, manifest), spec, path), split_subjects(manifest, spec))
    pd.testing.assert_frame_equal(
        cross_validation_split(manifest, SplitSpec(seed=2), 3, path, CLASSES), saved_form(old)
    )
    assert pd.read_csv(path, dtype={"image_id": str, "subject": str}).equals(old)  # never rewritten


def test_a_k_fold_file_whose_sides_contradict_its_folds_is_refused(tmp_path):
    manifest = _manifest()
    path = tmp_path / "split.csv"
    split = split_subjects(manifest, SplitSpec(folds=3, fold=0))
    split.loc[split["fold"] == 1, "split"] = "val"  # two folds validate: no fold's file
    split.to_csv(path, index=False)
    with pytest.raises(SplitError) as refused:
        run_sides(load_split(path, manifest), SplitSpec(folds=3, fold=2), path)
    assert str(refused.value) == (
        f"{path}: its split column does not follow its fold column (test rows are fold -1; the others all 'cv', or "
        "one fold's val and the other folds' train): fix it, or delete it and split.json to draw a new split"
    )
    with pytest.raises(SplitError, match="its split column does not follow its fold column"):
        fold_sides(saved_form(split).assign(fold=-1), 0, path)  # 'cv' rows outside every fold


def test_a_k_fold_file_for_another_number_of_folds_or_for_no_folds_is_refused(tmp_path):
    manifest = _manifest()
    path = tmp_path / "split.csv"
    cross_validation_split(manifest, SplitSpec(), 3, path, CLASSES)
    (tmp_path / "split.json").unlink()  # made by hand: the file itself is checked
    split = load_split(path, manifest)
    with pytest.raises(SplitError) as refused:
        run_sides(split, SplitSpec(folds=4, fold=3), path)
    assert str(refused.value) == (
        f"{path}: deals folds [0, 1, 2], not the 4 of data.split.folds (--folds of cv and baseline): ask for 3 folds, "
        "point data.split.file (--root) elsewhere, or delete it"
    )
    with pytest.raises(SplitError, match=r"deals folds \[0, 1, 2\], not the 5 of"):
        cross_validation_split(manifest, SplitSpec(), 5, path, CLASSES)
    with pytest.raises(SplitError) as refused:
        run_sides(split, SplitSpec(), path)
    assert str(refused.value) == (
        f"{path}: a k-fold split (folds [0, 1, 2]) has no train/val sides of its own: pass data.split.folds 3 and "
        "data.split.fold (the fold that validates), or point data.split.file elsewhere"
    )


def test_cross_validation_split_refuses_too_many_folds_before_writing(tmp_path):
    path = tmp_path / "split.csv"
    with pytest.raises(SplitError) as refused:
        cross_validation_split(_cohort({"CN": 8, "MCI": 8, "AD": 3}), SplitSpec(), 4, path, CLASSES)
    assert str(refused.value) == (
        f"{path}: 4 folds need at least 4 non-test subjects per group, but AD has 3: some folds would validate "
        "without it; non-test subjects per group: CN 8, MCI 8, AD 3; use at most 3 folds or add subjects"
    )
    assert not path.exists() and not (tmp_path / "split.json").exists()
