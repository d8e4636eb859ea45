"""The regional-volume baseline: honest out-of-fold predictions on the CNN's folds, and its command."""

from __future__ import annotations

import json
from pathlib import Path

import numpy as np
import pandas as pd
import pytest
from sklearn.metrics import balanced_accuracy_score

from adni_lightning.atomic import WriteError
from adni_lightning.commands.baseline import write_baseline
from adni_lightning.data.cache import VolumeCache
from adni_lightning.data.clinical import TaskSpec
from adni_lightning.data.manifest import ManifestSpec, build_manifest
from adni_lightning.data.preprocess import Preprocessing
from adni_lightning.data.split import SplitError, SplitSpec, check_split_options, saved_form, split_subjects
from adni_lightning.data.volumes import regional_volumes
from adni_lightning.evaluation.baseline import (
    BaselineError,
    baseline_predictions,
    describe,
    is_age,
    score_baseline_predictions,
    visit_order,
)
from adni_lightning.main import main
from tests.helpers import tiny_args

CLASSES = ["CN", "MCI", "AD"]
PROBS = [f"p_{c}" for c in CLASSES]


def _volumes(data_dir: Path, cache_dir: Path) -> tuple[pd.DataFrame, pd.DataFrame]:
    manifest = build_manifest(ManifestSpec(data_dir=data_dir))
    cache = VolumeCache(cache_dir, Preprocessing("labelmap", (8, 8, 8)))
    cache.build(zip(manifest["image_id"], manifest["path"], strict=True))
    return manifest, regional_volumes(manifest, cache)


@pytest.fixture
def cohort_volumes(cohort, tmp_path):
    """Manifest, volumes and a 3-fold split with a test side of the 24-subject fixture."""
    manifest, volumes = _volumes(cohort, tmp_path / "cache")
    split = split_subjects(manifest, SplitSpec(folds=3, test_fraction=0.2, seed=0))
    return manifest, volumes, split


def test_every_non_test_image_is_predicted_once_out_of_fold(cohort_volumes):
    _, volumes, split = cohort_volumes
    predictions = baseline_predictions(volumes, split, CLASSES)
    expected = ["image_id", "subject", "group", "visit", "first_visit", "fold", "set", "model", *PROBS]
    assert list(predictions.columns) == expected and (predictions["model"] == "baseline").all()
    oof = predictions[predictions["set"] == "oof"]
    non_test = split[split["split"] != "test"]
    assert sorted(oof["image_id"]) == sorted(non_test["image_id"])
    for column in ("fold", "group"):
        truth = non_test.set_index("image_id")[column].sort_index()
        assert oof.set_index("image_id")[column].sort_index().equals(truth)
    test = predictions[predictions["set"] == "test"]
    test_images = split.loc[split["split"] == "test", "image_id"]
    assert len(test_images) > 0 and len(test) == 3 * len(test_images)
    assert test.groupby("image_id")["fold"].apply(sorted).tolist() == [[0, 1, 2]] * len(test_images)
    np.testing.assert_allclose(predictions[PROBS].sum(axis=1), 1.0, atol=1e-12)
    assert (predictions[PROBS] >= 0).all().all()
    firsts = predictions[predictions["set"] == "oof"].groupby("subject")["first_visit"].sum()
    assert (firsts == 1).all()
    assert not predictions.loc[predictions["visit"] != "sc", "first_visit"].any()


def test_a_fold_model_never_sees_its_own_fold(cohort_volumes):
    _, volumes, split = cohort_volumes
    before = baseline_predictions(volumes, split, CLASSES).set_index(["set", "fold", "image_id"])[PROBS]
    relabelled = split.copy()
    in_fold_1 = (relabelled["fold"] == 1) & (relabelled["split"] != "test")
    rotate = {"CN": "MCI", "MCI": "AD", "AD": "CN"}
    relabelled.loc[in_fold_1, "group"] = relabelled.loc[in_fold_1, "group"].map(rotate)
    after = baseline_predictions(volumes, relabelled, CLASSES).set_index(["set", "fold", "image_id"])[PROBS]
    pd.testing.assert_frame_equal(after.loc[("oof", 1)], before.loc[("oof", 1)])
    pd.testing.assert_frame_equal(after.loc[("test", 1)], before.loc[("test", 1)])
    for fold in (0, 2):  # their models trained on fold 1's (now wrong) labels
        assert np.abs(after.loc[("oof", fold)].to_numpy() - before.loc[("oof", fold)].to_numpy()).max() > 1e-3


def test_the_synthetic_disease_signal_is_found_out_of_fold(tmp_path):
    from adni_lightning.synth import generate_cohort

    generate_cohort(tmp_path / "K1data", subjects=60, size=64, seed=1, workers=1)
    manifest, volumes = _volumes(tmp_path / "K1data", tmp_path / "cache")
    predictions = baseline_predictions(volumes, split_subjects(manifest, SplitSpec(folds=3, seed=0)), CLASSES)
    predicted = np.array(CLASSES)[predictions[PROBS].to_numpy().argmax(axis=1)]
    assert balanced_accuracy_score(predictions["group"], predicted) > 0.45  # chance: 1/3


def test_visits_sort_by_month():
    codes = ["m24", "uns1", "bl", "m06", "sc", "12", "scmri"]
    assert sorted(codes, key=visit_order) == ["sc", "scmri", "bl", "m06", "12", "m24", "uns1"]


def _run(cohort: Path, tmp_path: Path, *extra: str) -> list[str]:
    return tiny_args("baseline", tmp_path / "run", cohort, *extra)


def test_command_writes_the_cv_split_and_predictions_and_reuses_the_split(cohort, tmp_path, capsys):
    main(_run(cohort, tmp_path, "--folds", "3", "--data.split.test_fraction", "0.2", "--data.split.seed", "7"))
    root = tmp_path / "run" / "cv"
    assert "baseline: OOF balanced accuracy" in capsys.readouterr().out
    manifest = build_manifest(ManifestSpec(data_dir=cohort))
    expected = saved_form(split_subjects(manifest, SplitSpec(folds=3, test_fraction=0.2, seed=7)))  # as cv draws it
    saved = pd.read_csv(root / "split.csv", dtype={"image_id": str, "subject": str})
    pd.testing.assert_frame_equal(saved, expected)
    oof = pd.read_csv(root / "baseline" / "oof_predictions.csv", dtype={"image_id": str})
    test = pd.read_csv(root / "baseline" / "test_predictions.csv", dtype={"image_id": str})
    assert sorted(oof["image_id"]) == sorted(expected.loc[expected["split"] != "test", "image_id"])
    assert set(test["image_id"]) == set(expected.loc[expected["split"] == "test", "image_id"])

    spec = SplitSpec(folds=3, fold=0, test_fraction=0.2, seed=7)
    assert json.loads((root / "split.json").read_text()) == spec.options()  # cv's own record: cv reuses it
    check_split_options(root / "split.csv", spec)

    stamp = (root / "split.csv").stat().st_mtime_ns
    main(_run(cohort, tmp_path, "--folds", "3", "--data.split.test_fraction", "0.2", "--data.split.seed", "7"))
    assert (root / "split.csv").stat().st_mtime_ns == stamp  # reused
    pd.testing.assert_frame_equal(pd.read_csv(root / "baseline" / "oof_predictions.csv", dtype={"image_id": str}), oof)
    with pytest.raises(SplitError) as refused:
        main(_run(cohort, tmp_path, "--folds", "3", "--data.split.test_fraction", "0.2", "--data.split.seed", "8"))
    assert str(refused.value) == (
        f"{root / 'split.csv'} was drawn with other options than this run asks for: data.split.seed 7 (saved) vs 8 "
        "(asked); pass the saved options, point data.split.file elsewhere, or delete it and split.json to draw a new "
        "split"
    )
    assert (root / "split.csv").stat().st_mtime_ns == stamp
    with pytest.raises(SplitError, match=r"data.split.folds 3 \(saved\) vs 4 \(asked\)"):
        main(_run(cohort, tmp_path, "--folds", "4", "--data.split.test_fraction", "0.2", "--data.split.seed", "7"))
    (root / "split.json").unlink()  # a split without its options (made by hand): its folds are still checked
    with pytest.raises(SplitError, match="deals folds \\[0, 1, 2\\], not the 4"):
        main(_run(cohort, tmp_path, "--folds", "4"))


def test_a_root_that_is_a_file_is_one_line(cohort, tmp_path):
    taken = tmp_path / "cv"
    taken.write_text("a user's file")
    with pytest.raises(WriteError) as refused:
        main(_run(cohort, tmp_path, "--folds", "3", "--root", str(taken)))
    assert str(refused.value) == f"--root {taken} is a file, not a folder: pass a folder (it is created if missing)"
    assert taken.read_text() == "a user's file"


def test_too_many_folds_names_the_subjects_per_group(cohort, tmp_path):
    with pytest.raises(ValueError, match="non-test subjects per group: CN 8, MCI 10, AD 6"):
        main(_run(cohort, tmp_path, "--folds", "7"))
    assert not (tmp_path / "run" / "cv" / "split.csv").exists()


STRUCTURES = ["Left-Hippocampus", "Right-Hippocampus", "Left-Lateral-Ventricle", "Right-Amygdala"]


def score_volumes(n_subjects: int = 30, seed: int = 0) -> tuple[pd.DataFrame, pd.DataFrame]:
    """Volumes whose score (the ``group`` column: the manifest's label of a score task) is a known linear function
    of the left hippocampus fraction, 1–2 visits per subject; and a 3-fold split with a test side.
    """
    rng = np.random.default_rng(seed)
    rows = []
    for s in range(n_subjects):
        for visit in ["sc", "m12"][: 1 + s % 2]:
            labelled = rng.normal(1.4e6, 1e5)
            fractions = rng.uniform([0.0025, 0.0025, 0.005, 0.001], [0.0035, 0.0035, 0.03, 0.002])
            row = {"image_id": f"I{s:02d}{visit}", "subject": f"S{s:02d}", "age": rng.uniform(60, 90)}
            row.update(sex="F" if s % 3 else "M", visit=visit, LabelledVolume=labelled)
            row.update(dict(zip(STRUCTURES, fractions * labelled)))
            row["group"] = 5.0 + 8000.0 * fractions[0]  # the score: a known line of one normalised volume
            rows.append(row)
    volumes = pd.DataFrame(rows)
    fold_of = {f"S{s:02d}": (s % 3 if s >= 6 else -1) for s in range(n_subjects)}
    split = volumes[["image_id", "subject", "group"]].assign(
        split=volumes["subject"].map(lambda s: "test" if fold_of[s] < 0 else "cv"), fold=volumes["subject"].map(fold_of)
    )
    return volumes, split


def test_the_score_baseline_recovers_a_linear_score():
    volumes, split = score_volumes()
    predictions = score_baseline_predictions(volumes, split, drop_age=False)
    expected = ["image_id", "subject", "group", "visit", "first_visit", "fold", "set", "model", "target", "prediction"]
    assert list(predictions.columns) == expected and (predictions["model"] == "baseline").all()
    oof = predictions[predictions["set"] == "oof"]
    assert sorted(oof["image_id"]) == sorted(split.loc[split["split"] != "test", "image_id"])
    truth = volumes.set_index("image_id")["group"]
    assert oof.set_index("image_id")["target"].sort_index().equals(truth[oof["image_id"]].sort_index())
    test = predictions[predictions["set"] == "test"]
    assert len(test) == 3 * (split["split"] == "test").sum()
    for part in (oof, test):
        np.testing.assert_allclose(part["prediction"], part["target"], atol=0.05)  # targets span 25 to 33


def test_the_held_out_fold_chooses_nothing_in_the_score_baseline():
    volumes, split = score_volumes()
    before = score_baseline_predictions(volumes, split, drop_age=False).set_index(["set", "fold", "image_id"])
    fold_1 = volumes["image_id"].isin(split.loc[(split["fold"] == 1), "image_id"])
    permuted = volumes.copy()
    permuted.loc[fold_1, "group"] = np.random.default_rng(1).permutation(permuted.loc[fold_1, "group"].to_numpy())
    after = score_baseline_predictions(permuted, split, drop_age=False).set_index(["set", "fold", "image_id"])
    assert not after.loc[("oof", 1), "target"].equals(before.loc[("oof", 1), "target"])
    pd.testing.assert_series_equal(after.loc[("oof", 1), "prediction"], before.loc[("oof", 1), "prediction"])
    pd.testing.assert_series_equal(after.loc[("test", 1), "prediction"], before.loc[("test", 1), "prediction"])
    for fold in (0, 2):  # their models trained on fold 1's permuted scores
        change = np.abs(after.loc[("oof", fold), "prediction"] - before.loc[("oof", fold), "prediction"]).max()
        assert change > 1e-3


@pytest.mark.slow
def test_brain_age_leaves_age_out_of_the_features():
    volumes, split = score_volumes()
    volumes["group"] = volumes["age"]  # brain age: the target is the age
    other_ages = volumes.assign(age=np.random.default_rng(2).uniform(60, 90, len(volumes)))
    with_age = [score_baseline_predictions(v, split, drop_age=False)["prediction"] for v in (volumes, other_ages)]
    without = [score_baseline_predictions(v, split, drop_age=True)["prediction"] for v in (volumes, other_ages)]
    assert np.abs(with_age[0] - with_age[1]).max() > 1.0  # the age feature predicted the age
    pd.testing.assert_series_equal(without[0], without[1])
    assert is_age("Age") and is_age(" AGE") and not is_age("MMSE") and not is_age(None)
    assert "age left out: it is the target" in describe(TaskSpec(label="score", column="Age"))
    assert "ridge regression of MMSE on ICV-normalised regional volumes + age + sex" in describe(
        TaskSpec(label="score", column="MMSE")
    )
    assert describe(None).startswith("baseline: logistic regression")


def test_write_baseline_follows_the_task(tmp_path):
    volumes, split = score_volumes()
    predictions = write_baseline(tmp_path, volumes, split, [], 0, TaskSpec(label="score", column="CDRSB"))
    written = pd.read_csv(tmp_path / "baseline" / "oof_predictions.csv", dtype={"image_id": str})
    assert {"target", "prediction"} <= set(written.columns) and not any(c.startswith("p_") for c in written.columns)
    np.testing.assert_allclose(written["prediction"], predictions.loc[predictions["set"] == "oof", "prediction"])
    assert (tmp_path / "baseline" / "test_predictions.csv").is_file()


def test_the_score_baseline_refuses_a_missing_score_and_a_fold_of_one_training_subject():
    volumes, split = score_volumes()
    volumes.loc[[3, 5], "group"] = np.nan
    with pytest.raises(BaselineError) as refused:
        score_baseline_predictions(volumes, split, drop_age=False)
    images = ", ".join(volumes.loc[[3, 5], "image_id"])
    assert str(refused.value) == (
        f"baseline: 2 image(s) have a score that is not a finite number (e.g. {images}): leave them out of the task "
        "(data.task: their clinical value is missing)"
    )
    volumes, split = score_volumes(n_subjects=8)  # subjects 6 and 7: one per fold of 2 folds
    fold = split["fold"].where(split["fold"] < 0, split["subject"].map({"S06": 0, "S07": 1}))
    two_folds = split.assign(fold=fold.astype(int))
    with pytest.raises(BaselineError) as refused:
        score_baseline_predictions(volumes, two_folds, drop_age=False)
    assert str(refused.value) == (
        "baseline: fold 0 trains on 1 subject(s); choosing the ridge penalty holds out subjects of the training side, "
        "so it needs at least 2: add subjects or use fewer --folds"
    )
