"""Tasks from a clinical table: visit codes, progression on the whole history, joins, exclusions, bad rows."""

from __future__ import annotations

import csv
import logging
from dataclasses import replace
from pathlib import Path

import pandas as pd
import pytest

from adni_lightning.data.clinical import (
    ClinicalError,
    ClinicalSpec,
    TaskSpec,
    check_task,
    normalise_visit,
    progression_labels,
    task_labels,
)
from adni_lightning.data.contract import ContractError
from adni_lightning.data.manifest import ManifestError, ManifestSpec, build_manifest
from adni_lightning.data.split import SplitSpec, split_subjects
from adni_lightning.errors import OptionError
from adni_lightning.main import main
from tests.helpers import tiny_args, trained_run

CSV = "ADNI_1p5T_Filtered.csv"
PROGRESSION = TaskSpec(label="progression")


@pytest.mark.parametrize(
    "code, expected",
    [
        ("sc", "bl"),
        ("bl", "bl"),
        ("scmri", "bl"),
        ("init", "bl"),
        (" SC ", "bl"),
        ("m0", "bl"),
        ("m6", "m06"),
        ("m06", "m06"),
        ("m12", "m12"),
        ("M108", "m108"),
        ("nv", None),
        ("uns1", None),
        ("2", None),
        ("", None),
    ],
)
def test_visit_codes_are_normalised(code, expected):
    assert normalise_visit(code) == expected


def _history(*visits: tuple[str, int, str | None]) -> pd.DataFrame:
    """(subject, months, diagnosis) rows in :func:`read_clinical`'s layout."""
    return pd.DataFrame(
        [
            {"subject": s, "visit": "bl" if m == 0 else f"m{m:02d}", "months": m, "row": i + 2, "diagnosis": d}
            for i, (s, m, d) in enumerate(visits)
        ]
    )


def _labels(history: pd.DataFrame, task: TaskSpec = PROGRESSION) -> dict[tuple[str, str], str]:
    """(subject, visit) → label, or the reason it has none."""
    labelled = progression_labels(history, task)
    return {
        (s, v): label if isinstance(label, str) else reason
        for s, v, label, reason in zip(labelled["subject"], labelled["visit"], labelled["label"], labelled["reason"])
    }


def test_horizon_edge_cases():
    history = _history(
        ("at_h", 0, "MCI"), ("at_h", 36, "AD"),  # conversion exactly at the horizon: within it
        ("after_h", 0, "MCI"), ("after_h", 12, "MCI"), ("after_h", 42, "AD"),  # after it, followed 42 months
        ("followed_h", 0, "MCI"), ("followed_h", 36, "MCI"),  # follow-up exactly the horizon
        ("short", 0, "MCI"), ("short", 24, "MCI"),  # followed 24 months, no AD: unknown
        ("single", 0, "MCI"),
    )  # fmt: skip
    labels = _labels(history)
    assert labels[("at_h", "bl")] == "pMCI"
    assert labels[("after_h", "bl")] == "sMCI"
    assert labels[("after_h", "m12")] == "pMCI"  # AD 30 months after m12
    assert labels[("followed_h", "bl")] == "sMCI"
    assert labels[("followed_h", "m36")] == "insufficient follow-up"
    assert labels[("short", "bl")] == "insufficient follow-up"
    assert labels[("single", "bl")] == "insufficient follow-up"  # a single visit is never sMCI
    assert labels[("at_h", "m36")] == "not MCI at this visit"
    shorter = _labels(history, TaskSpec(label="progression", horizon_months=24))
    assert shorter[("at_h", "bl")] == "sMCI"  # AD at 36 months is after a 24-month horizon, and followed that long


def test_visits_without_a_diagnosis_do_not_count_as_follow_up():
    labels = _labels(_history(("a", 0, "MCI"), ("a", 36, None), ("b", 0, None), ("b", 36, "MCI")))
    assert labels[("a", "bl")] == "insufficient follow-up"
    assert labels[("b", "bl")] == "no diagnosis at this visit"


def test_reverters_follow_the_stated_rule():
    history = _history(
        ("rev", 0, "MCI"), ("rev", 6, "CN"), ("rev", 36, "MCI"),
        ("rev_then_ad", 0, "MCI"), ("rev_then_ad", 6, "CN"), ("rev_then_ad", 24, "AD"),
        ("rev_short", 0, "MCI"), ("rev_short", 12, "CN"),
    )  # fmt: skip
    excluded = _labels(history)
    assert excluded[("rev", "bl")] == "reverter"
    assert excluded[("rev_then_ad", "bl")] == "pMCI"  # conversion within the horizon wins
    assert excluded[("rev_short", "bl")] == "reverter"
    kept = _labels(history, TaskSpec(label="progression", reverters="smci"))
    assert kept[("rev", "bl")] == "sMCI"
    assert kept[("rev_short", "bl")] == "insufficient follow-up"  # still needs the follow-up


def test_stable_cn_and_ad_are_options():
    history = _history(
        ("cn", 0, "CN"), ("cn", 36, "CN"),
        ("cn_mci", 0, "CN"), ("cn_mci", 24, "MCI"), ("cn_mci", 48, "MCI"),
        ("ad", 0, "AD"), ("ad", 12, "AD"), ("ad", 36, "AD"),
    )  # fmt: skip
    assert _labels(history)[("cn", "bl")] == "not MCI at this visit"
    stable = _labels(history, TaskSpec(label="progression", stable=True))
    assert stable[("cn", "bl")] == "sCN"
    assert stable[("cn_mci", "bl")] == "not stable within the horizon"
    assert stable[("ad", "bl")] == "sAD"
    assert stable[("ad", "m12")] == "insufficient follow-up"


# --- the image CSV joined to a table ---------------------------------------------------------------------------
#: (subject, visit, acquisition date, group) of each image; the clinical rows of each subject below.
IMAGES = [
    ("002_S_0001", "sc", "9/1/2006", "MCI"),
    ("002_S_0001", "m12", "9/5/2007", "MCI"),
    ("002_S_0002", "sc", "10/1/2006", "MCI"),
    ("002_S_0003", "sc", "11/1/2006", "MCI"),
    ("002_S_0003", "m06", "5/1/2007", "MCI"),
    ("002_S_0004", "sc", "12/1/2006", "CN"),
    ("002_S_0005", "sc", "1/3/2007", "AD"),
]
CLINICAL = [
    ("002_S_0001", "bl", "2006-09-10", "MCI"),
    ("002_S_0001", "m12", "2007-09-10", "MCI"),
    ("002_S_0001", "m24", "2008-09-10", "Dementia"),
    ("002_S_0002", "bl", "2006-10-10", "MCI"),
    ("002_S_0002", "m36", "2009-10-10", "MCI"),
    ("002_S_0003", "bl", "2006-11-10", "MCI"),
    ("002_S_0003", "m06", "2007-05-10", "MCI"),
    ("002_S_0003", "m36", "2009-11-10", "MCI"),
    ("002_S_0004", "bl", "2006-12-10", "CN"),
    ("002_S_0004", "m36", "2009-12-10", "CN"),
    ("002_S_0005", "bl", "2007-01-10", "Dementia"),
]


def _cohort(root: Path, images=IMAGES, clinical=CLINICAL) -> Path:
    """An image CSV with an (empty) file per row, and ADNIMERGE.csv beside it."""
    rows = []
    for number, (subject, visit, acquired, group) in enumerate(images, start=1):
        rows.append({"Image Data ID": f"I{number}", "Subject": subject, "Group": group, "Sex": "F", "Age": "75",
                     "Visit": visit, "Acq Date": acquired})  # fmt: skip
        (root / group).mkdir(parents=True, exist_ok=True)
        (root / group / f"I{number}.nii_aseg_deep.mgz").touch()
    pd.DataFrame(rows).to_csv(root / CSV, index=False, quoting=csv.QUOTE_ALL)
    table = pd.DataFrame(clinical, columns=["PTID", "VISCODE", "EXAMDATE", "DX"])
    table.to_csv(root / "ADNIMERGE.csv", index=False)
    return root


def _manifest(root: Path, task: TaskSpec = PROGRESSION, classes=("sMCI", "pMCI"), **clinical) -> pd.DataFrame:
    spec = ManifestSpec(data_dir=root, classes=classes, check_files=False)
    return build_manifest(spec, None, task_labels(ClinicalSpec(**{"file": "ADNIMERGE.csv", **clinical}), task, spec))


def _by_visit(manifest: pd.DataFrame) -> dict[tuple[str, str], str]:
    return dict(zip(zip(manifest["subject"], manifest["visit"]), manifest["label"]))


def test_progression_labels_come_from_the_whole_history(tmp_path, caplog):
    root = _cohort(tmp_path)
    with caplog.at_level(logging.INFO, logger="adni_lightning.data.manifest"):
        manifest = _manifest(root)
    assert _by_visit(manifest) == {
        ("002_S_0001", "sc"): "pMCI",
        ("002_S_0001", "m12"): "pMCI",
        ("002_S_0002", "sc"): "sMCI",
        ("002_S_0003", "sc"): "sMCI",
    }
    assert manifest.attrs["excluded"] == {"not MCI at this visit": 2, "insufficient follow-up": 1}
    assert f"{root / CSV}: 3 row(s) excluded by data.task progression (horizon_months 36, reverters exclude, " in (
        caplog.text
    )
    assert "2 × not MCI at this visit, 1 × insufficient follow-up" in caplog.text
    # the class is the task's; the file is still found by the CSV's Group folder
    assert all(Path(p).parent.name == "MCI" for p in manifest["path"])


def test_labels_do_not_change_with_the_images_kept_or_the_split(tmp_path):
    full = _by_visit(_manifest(_cohort(tmp_path / "full")))
    # keep only the follow-up image of 002_S_0001: its label still sees the whole history, as does the baseline's
    fewer = _by_visit(_manifest(_cohort(tmp_path / "fewer", images=[IMAGES[1], IMAGES[2]])))
    assert fewer == {key: full[key] for key in fewer} and len(fewer) == 2
    manifest = _manifest(_cohort(tmp_path / "split"))
    for seed in range(3):
        split = split_subjects(manifest, SplitSpec(val_fraction=0.3, seed=seed))
        assert dict(zip(split["image_id"], split["group"])) == dict(zip(manifest["image_id"], manifest["label"]))


def test_a_subject_whose_images_differ_in_class_is_kept_and_split_by_its_first_image(tmp_path):
    images = [("002_S_0001", "sc", "9/1/2006", "MCI"), ("002_S_0001", "m12", "9/5/2007", "MCI")]
    clinical = [
        ("002_S_0001", "bl", "2006-09-10", "MCI"),
        ("002_S_0001", "m12", "2007-09-10", "MCI"),
        ("002_S_0001", "m48", "2010-09-10", "Dementia"),  # after bl's horizon, within m12's
    ]
    manifest = _manifest(_cohort(tmp_path, images, clinical))
    assert list(manifest["label"]) == ["sMCI", "pMCI"]  # mixed_groups: error is the group task's
    split = split_subjects(manifest, SplitSpec(val_fraction=0.0))
    assert list(split["group"]) == ["sMCI", "pMCI"] and split["split"].nunique() == 1


def test_image_rows_that_join_no_visit_are_bad_rows(tmp_path):
    images = [*IMAGES, ("002_S_0009", "sc", "1/1/2007", "MCI"), ("002_S_0002", "m06", "4/1/2007", "MCI")]
    with pytest.raises(ManifestError) as refused:
        _manifest(_cohort(tmp_path, images))
    lines = str(refused.value).splitlines()
    table = tmp_path / "ADNIMERGE.csv"
    assert lines == [
        f"{tmp_path / CSV}: 2 of 9 row(s) cannot be used (set on_bad_rows: skip to train without them): "
        "2 × no clinical row",
        "  no clinical row (2 row(s)):",
        f"    CSV row 9, image I8, file -: subject 002_S_0009 has no row in {table}",
        f"    CSV row 10, image I9, file -: subject 002_S_0002 has no visit m06 in {table}",
    ]


def test_images_join_the_nearest_exam_within_the_window(tmp_path):
    images = [*IMAGES[:4], *IMAGES[5:], ("002_S_0002", "m06", "4/1/2007", "MCI")]  # 173 days from the nearest exam
    root = _cohort(tmp_path, images)
    spec = ManifestSpec(data_dir=root, classes=("sMCI", "pMCI"), check_files=False, on_bad_rows="skip")
    labeller = task_labels(ClinicalSpec(file="ADNIMERGE.csv", join="date"), PROGRESSION, spec)
    manifest = build_manifest(spec, None, labeller)
    assert _by_visit(manifest) == {
        ("002_S_0001", "sc"): "pMCI",
        ("002_S_0001", "m12"): "pMCI",
        ("002_S_0002", "sc"): "sMCI",
        ("002_S_0003", "sc"): "sMCI",
    }
    with pytest.raises(ManifestError) as refused:
        build_manifest(replace(spec, on_bad_rows="error"), None, labeller)
    assert str(refused.value) == (
        f"{root / CSV}: CSV row 8, image I7, file -: no exam of subject 002_S_0002 within 90 days of 2007-04-01 in "
        f"{root / 'ADNIMERGE.csv'} (the nearest is 173 days away; data.clinical.date_window_days) (set on_bad_rows: "
        "skip to train without them)"
    )


def test_a_column_task_reads_the_diagnosis_at_each_visit(tmp_path):
    task = TaskSpec(label="column", column="DX", class_map={"MCI": None})
    manifest = _manifest(_cohort(tmp_path), task, ("CN", "AD"))
    assert _by_visit(manifest) == {("002_S_0004", "sc"): "CN", ("002_S_0005", "sc"): "AD"}
    assert manifest.attrs["excluded"] == {"DX MCI excluded by data.task.class_map": 5}
    assert list(manifest["target"]) == [0, 1]
    with pytest.raises(ManifestError) as unmapped:
        _manifest(tmp_path, TaskSpec(label="column", column="DX"), ("CN", "AD"))
    assert str(unmapped.value).splitlines()[2] == (
        "    CSV row 2, image I1, file -: DX 'MCI' is not one of the classes ['CN', 'AD'] (map it with "
        "data.task.class_map)"
    )


@pytest.mark.parametrize(
    "edit, message",
    [
        ({"DX": "Demented"}, "row 3: diagnosis 'Demented' is not one of ['CN', 'MCI', 'Dementia'] (map it with "
                             "data.clinical.diagnosis_map)"),
        ({"VISCODE": "nv"}, "row 3: visit code 'nv' names no month (expected bl, sc, m06, m12, …)"),
        ({"VISCODE": "bl"}, "row 3: subject 002_S_0001 visit bl is also on row 2 (keep one row)"),
        ({"EXAMDATE": "13/45/2007"}, "row 3: exam date '13/45/2007' is not a date (expected 2006-09-14 or 9/14/2006)"),
    ],
)  # fmt: skip
def test_a_bad_clinical_row_is_one_line_naming_it(tmp_path, edit, message):
    clinical = [*CLINICAL]
    clinical[1] = tuple(edit.get(c, v) for c, v in zip(["PTID", "VISCODE", "EXAMDATE", "DX"], clinical[1]))
    root = _cohort(tmp_path, clinical=clinical)
    with pytest.raises(ClinicalError) as refused:
        _manifest(root, join="date")
    assert str(refused.value) == f"{root / 'ADNIMERGE.csv'}: {message}"


def test_a_missing_table_or_column_is_one_line(tmp_path):
    root = _cohort(tmp_path)
    with pytest.raises(ClinicalError) as missing:
        _manifest(root, file="elsewhere.csv")
    assert str(missing.value) == (
        f"clinical table not found: {root / 'elsewhere.csv'} (data.clinical.file; relative to data.manifest.data_dir)"
    )
    with pytest.raises(ClinicalError) as column:
        _manifest(root, diagnosis_column="DIAGNOSIS")
    assert str(column.value) == (
        f"{root / 'ADNIMERGE.csv'}: missing column(s) DIAGNOSIS (the data.clinical.*_column or data.task.column "
        "options name them); found PTID, VISCODE, EXAMDATE, DX"
    )


def test_task_options_are_checked_at_build():
    with pytest.raises(OptionError) as no_table:
        check_task(ClinicalSpec(), PROGRESSION)
    assert str(no_table.value) == (
        "data.task.label progression needs a clinical table: set data.clinical.file (e.g. ADNIMERGE.csv, beside the "
        "image CSV)"
    )
    with pytest.raises(OptionError) as no_column:
        TaskSpec(label="column")
    assert str(no_column.value) == (
        "data.task.label column needs data.task.column: the clinical column that gives the class"
    )
    with pytest.raises(OptionError) as horizon:
        TaskSpec(label="progression", horizon_months=0)
    assert str(horizon.value) == "data.task.horizon_months must be at least 1, got 0"
    with pytest.raises(OptionError) as mapped:
        ClinicalSpec(diagnosis_map={"Dementia": "Alzheimer"})
    assert str(mapped.value) == (
        "data.clinical.diagnosis_map maps onto ['Alzheimer']: its values must be CN, MCI, AD or null"
    )
    with pytest.raises(OptionError) as window:
        ClinicalSpec(date_window_days=-1)
    assert str(window.value) == "data.clinical.date_window_days must be 0 or more, got -1"
    check_task(ClinicalSpec(), TaskSpec())  # the group task needs no table


def test_the_group_task_is_unchanged(tmp_path):
    root = _cohort(tmp_path)
    spec = ManifestSpec(data_dir=root, check_files=False, mixed_groups="error")
    assert task_labels(ClinicalSpec(file="ADNIMERGE.csv"), TaskSpec(), spec) is None
    manifest = build_manifest(spec)
    assert list(manifest["label"]) == [g for *_, g in IMAGES]
    assert manifest.attrs["excluded"] == {}


def test_a_checkpoint_trained_for_another_task_is_refused_in_one_line(cohort_template, tmp_path):
    # the session cohort's own options, so that the table the synthetic DataModule writes is that cohort's
    fixture = ["--data.cohort.subjects", "24", "--data.cohort.size", "32", "--data.cohort.seed", "3"]
    task = ["--data.task.label", "progression", "--data.clinical.file", "ADNIMERGE.csv"]
    trained = trained_run(tmp_path, cohort_template, *fixture, *task, "--data.manifest.classes", "[sMCI, pMCI]")
    split = pd.read_csv(trained["run"] / "split.csv")
    assert set(split["group"]) == {"sMCI", "pMCI"} and set(split["split"]) == {"train", "val"}
    validate = tiny_args("validate", trained["run"], trained["cohort"], "--ckpt_path", str(trained["ckpt"]), *fixture)
    with pytest.raises(ContractError) as refused:
        main(validate)  # the default task: the CSV's Group, CN/MCI/AD
    assert str(refused.value) == (
        f"--ckpt_path {trained['ckpt']} does not fit this configuration: data.task: checkpoint progression "
        "(horizon_months 36, reverters exclude, stable false), config group; data.manifest.classes: checkpoint "
        "['sMCI', 'pMCI'], config ['CN', 'MCI', 'AD']"
    )
