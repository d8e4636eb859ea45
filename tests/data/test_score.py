"""Score tasks (regression): targets from a clinical column or the age, exclusions by reason, the split by score."""

from __future__ import annotations

import csv
import logging
from pathlib import Path

import numpy as np
import pandas as pd
import pytest

from adni_lightning.data.clinical import ClinicalSpec, TaskSpec, check_task, task_labels
from adni_lightning.data.manifest import ManifestSpec, build_manifest
from adni_lightning.data.split import SCORE_STRATA, SplitSpec, check_no_leak, score_strata, split_subjects
from adni_lightning.data.tabular import TabularEncoder
from adni_lightning.errors import OptionError

CSV = "ADNI_1p5T_Filtered.csv"
MMSE = TaskSpec(label="score", column="MMSE")
#: (subject, visit, group, age) of each image, and (subject, visit, MMSE) of the clinical rows.
IMAGES = [
    ("002_S_0001", "sc", "CN", "71"),
    ("002_S_0001", "m12", "CN", "72"),
    ("002_S_0002", "sc", "AD", "80"),
    ("002_S_0003", "sc", "MCI", "75"),
    ("002_S_0004", "sc", "MCI", "77"),
    ("002_S_0005", "sc", "AD", "79"),
]
CLINICAL = [
    ("002_S_0001", "bl", "29"),
    ("002_S_0001", "m12", "28.5"),
    ("002_S_0002", "bl", "21"),
    ("002_S_0003", "bl", ""),
    ("002_S_0004", "bl", "n/a"),
    ("002_S_0005", "bl", "19"),
]


def _cohort(root: Path, images=IMAGES, clinical=CLINICAL) -> Path:
    """An image CSV with an (empty) file per row, and ADNIMERGE.csv with an MMSE column beside it."""
    rows = []
    for number, (subject, visit, group, age) in enumerate(images, start=1):
        rows.append({"Image Data ID": f"I{number}", "Subject": subject, "Group": group, "Sex": "F", "Age": age,
                     "Visit": visit})  # fmt: skip
        (root / group).mkdir(parents=True, exist_ok=True)
        (root / group / f"I{number}.nii_aseg_deep.mgz").touch()
    pd.DataFrame(rows).to_csv(root / CSV, index=False, quoting=csv.QUOTE_ALL)
    table = pd.DataFrame([(s, v, "CN", m) for s, v, m in clinical], columns=["PTID", "VISCODE", "DX", "MMSE"])
    table.to_csv(root / "ADNIMERGE.csv", index=False)
    return root


def _manifest(root: Path, task: TaskSpec = MMSE) -> pd.DataFrame:
    spec = ManifestSpec(data_dir=root, check_files=False)
    return build_manifest(spec, None, task_labels(ClinicalSpec(file="ADNIMERGE.csv"), task, spec))


def test_a_score_task_reads_the_score_at_each_visit_and_counts_what_it_excludes(tmp_path, caplog):
    root = _cohort(tmp_path)
    with caplog.at_level(logging.INFO, logger="adni_lightning.data.manifest"):
        manifest = _manifest(root)
    assert list(manifest["image_id"]) == ["I1", "I2", "I3", "I6"]
    assert list(manifest["label"]) == [29.0, 28.5, 21.0, 19.0] and list(manifest["target"]) == [29.0, 28.5, 21.0, 19.0]
    assert manifest["label"].dtype == np.float64
    assert list(manifest["group"]) == ["CN", "CN", "AD", "AD"]  # the CSV's Group still finds the file
    assert manifest.attrs["excluded"] == {"no MMSE at this visit": 1, "MMSE not a number at this visit": 1}
    assert (
        f"{root / CSV}: 2 row(s) excluded by data.task score MMSE: 1 × no MMSE at this visit, "
        "1 × MMSE not a number at this visit"
    ) in caplog.text


def test_brain_age_reads_the_image_csv_and_needs_no_table(tmp_path):
    root = _cohort(tmp_path)
    task = TaskSpec(label="score", column="Age")
    assert task.regression and task.predicts_age and task.contract() == "score Age"
    check_task(ClinicalSpec(), task)  # no clinical table needed
    spec = ManifestSpec(data_dir=root, check_files=False, mixed_groups="keep")
    manifest = build_manifest(spec, None, task_labels(ClinicalSpec(), task, spec))
    assert list(manifest["label"]) == [71.0, 72.0, 80.0, 75.0, 77.0, 79.0]
    assert manifest.attrs["excluded"] == {}
    # the age is the target, so it is no input of the numeric branch: sex only
    encoder = TabularEncoder(age=False).fit([70.0, 80.0])
    assert encoder.features == ("sex_F", "sex_M") and encoder.num_features == 2
    assert encoder.encode(99.0, "F").tolist() == [1.0, 0.0]


def test_score_task_options_are_checked():
    with pytest.raises(OptionError) as no_column:
        TaskSpec(label="score")
    assert str(no_column.value) == (
        "data.task.label score needs data.task.column: the clinical column of the score (e.g. MMSE, CDRSB), or Age "
        "for brain age"
    )
    with pytest.raises(OptionError) as no_table:
        check_task(ClinicalSpec(), MMSE)
    assert str(no_table.value).startswith("data.task.label score needs a clinical table: set data.clinical.file")
    assert MMSE.regression and not MMSE.predicts_age and MMSE.contract() == "score MMSE"
    assert not TaskSpec(label="column", column="DX").regression


def test_score_strata_are_equal_count_bins_of_the_ranked_scores():
    scores = pd.Series([30, 30, 30, 30, 29, 27, 25, 30, 22, 18], index=[f"s{i}" for i in range(10)], dtype=float)
    strata = score_strata(scores)
    assert strata.value_counts().to_dict() == dict.fromkeys(SCORE_STRATA, 2)
    assert set(strata[scores <= 22]) == {"q1"} and set(strata[scores == 30]) <= {"q4", "q5", "q3"}
    assert list(score_strata(pd.Series([3.0, 1.0], index=["a", "b"]))) == ["q2", "q1"]  # fewer subjects than strata


def test_the_split_is_subject_grouped_and_stratified_by_score_bins():
    rng = np.random.default_rng(0)
    subjects = [f"{i:03d}_S_{i:04d}" for i in range(50)]
    rows = [(s, v, float(rng.integers(15, 31))) for s in subjects for v in range(1 + int(rng.integers(0, 3)))]
    manifest = pd.DataFrame(
        {
            "image_id": [f"I{i}" for i in range(len(rows))],
            "subject": [r[0] for r in rows],
            "label": [r[2] for r in rows],
        }
    )
    split = split_subjects(manifest, SplitSpec(val_fraction=0.2, seed=1))
    check_no_leak(split)
    first = manifest.groupby("subject")["label"].first()
    assert dict(zip(split["subject"], split["group"])) == score_strata(first).to_dict()  # the subject's first image
    subjects_per = split.drop_duplicates("subject").groupby(["group", "split"]).size().unstack()
    assert subjects_per["val"].tolist() == [2] * 5 and subjects_per["train"].tolist() == [8] * 5
    folds = split_subjects(manifest, SplitSpec(folds=5, fold=0)).drop_duplicates("subject")
    assert (folds.groupby(["group", "fold"]).size() == 2).all()  # every fold holds 2 subjects of each stratum
