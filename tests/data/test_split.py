import numpy as np
import pandas as pd
import pytest

from adni_lightning.data.split import (
    SplitError,
    SplitSpec,
    check_no_leak,
    load_split,
    save_split,
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
