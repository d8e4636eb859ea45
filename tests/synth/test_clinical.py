"""The synthetic ADNIMERGE table: every image joins a visit, dates follow the visit months, conversion follows the
latent severity, enough MCI subjects for sMCI vs pMCI, and the images' bytes do not change with it.
"""

from __future__ import annotations

import shutil
from pathlib import Path

import numpy as np
import pandas as pd
import pytest

from adni_lightning import synth
from adni_lightning.commands import synth as synth_command
from adni_lightning.data.clinical import ClinicalSpec, TaskSpec, task_labels
from adni_lightning.data.manifest import CSV_NAME, ManifestSpec, build_manifest
from adni_lightning.synth.cohort import CLINICAL_VISITS

#: The embedded config's cohort (configs/synthetic.yaml) drawn at 8³: the grid changes no draw of the table.
EMBEDDED = {"subjects": 200, "seed": 0}


@pytest.fixture(scope="module")
def cohort(tmp_path_factory: pytest.TempPathFactory) -> Path:
    out = tmp_path_factory.mktemp("clinical")
    synth.generate_cohort(out, size=8, workers=1, clinical=True, **EMBEDDED)
    return out


def _progression(root: Path, join: str = "visit") -> pd.DataFrame:
    spec = ManifestSpec(data_dir=root, classes=("sMCI", "pMCI"), check_files=False)
    labeller = task_labels(ClinicalSpec(file=synth.CLINICAL_NAME, join=join), TaskSpec(label="progression"), spec)
    return build_manifest(spec, None, labeller)


def test_the_table_is_drawn_without_the_images_and_does_not_change_them(cohort, tmp_path):
    table = pd.read_csv(cohort / synth.CLINICAL_NAME)
    expected = synth.clinical_table(synth.SyntheticCohort(size=96, **EMBEDDED))
    pd.testing.assert_frame_equal(table, expected)
    synth.generate_cohort(tmp_path, size=8, workers=1, **EMBEDDED)
    assert not (tmp_path / synth.CLINICAL_NAME).exists()
    for name in (CSV_NAME, synth.TRUTH_NAME):
        assert (tmp_path / name).read_bytes() == (cohort / name).read_bytes()


def test_every_image_joins_its_visit_by_code_and_by_date(cohort):
    by_visit, by_date = _progression(cohort), _progression(cohort, join="date")  # on_bad_rows: error
    pd.testing.assert_frame_equal(by_visit, by_date)
    assert by_visit.attrs["excluded"] == by_date.attrs["excluded"]
    assert set(by_visit.attrs["excluded"]) <= {"not MCI at this visit", "insufficient follow-up", "reverter"}


def test_visits_are_a_prefix_of_the_schedule_with_dates_that_follow_them(cohort):
    table = pd.read_csv(cohort / synth.CLINICAL_NAME)
    codes = ["bl", *(f"m{m:02d}" for m in CLINICAL_VISITS[1:])]
    per_subject = table.groupby("PTID")["VISCODE"].agg(list)
    assert all(visits == codes[: len(visits)] for visits in per_subject)
    assert (per_subject.str.len() < len(codes)).sum() > 0  # dropouts
    assert table["PTID"].nunique() == EMBEDDED["subjects"]
    exams = table.assign(day=pd.to_datetime(table["EXAMDATE"]))
    baseline = exams[exams["VISCODE"] == "bl"].set_index("PTID")["day"]
    months = exams["VISCODE"].map(lambda code: 0 if code == "bl" else int(code[1:]))
    offset = (exams["day"] - exams["PTID"].map(baseline)).dt.days - months * 30.44
    assert offset.abs().max() <= 60  # scans within ±30 days of a year, exams within ±14 days of the scan or plan
    assert table["MMSE"].between(0, 30).all() and table["CDRSB"].between(0, 18).all()


def test_conversion_follows_severity(cohort):
    truth = pd.read_csv(cohort / synth.TRUTH_NAME)
    severity = truth[truth["visit"] == "sc"].set_index("subject")["severity"]
    table = pd.read_csv(cohort / synth.CLINICAL_NAME)
    table = table.assign(severity=table["PTID"].map(severity), months=table["VISCODE"].str[1:].replace("l", "0"))
    mci = table[table["DX_bl"] == "LMCI"]
    converted = mci[mci["DX"] == "Dementia"].groupby("PTID")["months"].agg(lambda m: min(map(int, m)))
    converters = severity[converted.index]
    stayed = severity[sorted(set(mci["PTID"]) - set(converted.index))]
    assert converters.mean() > stayed.mean() + 0.1
    assert np.corrcoef(converters, converted)[0, 1] < 0  # sooner with a higher severity
    baseline = table[table["VISCODE"] == "bl"]
    assert np.corrcoef(baseline["severity"], baseline["MMSE"])[0, 1] < -0.7
    assert baseline.groupby("DX")["MMSE"].mean()[["CN", "MCI", "Dementia"]].is_monotonic_decreasing
    labels = _progression(cohort)
    first = labels.drop_duplicates("subject").set_index("subject")["label"]
    assert severity[first.index[first == "pMCI"]].mean() > severity[first.index[first == "sMCI"]].mean()


def test_the_embedded_cohort_has_enough_mci_subjects_for_smci_vs_pmci(cohort):
    labels = _progression(cohort)
    subjects = labels.drop_duplicates("subject")["label"].value_counts()
    assert subjects["sMCI"] >= 20 and subjects["pMCI"] >= 20


def test_the_synthetic_datamodule_writes_a_missing_table_into_its_cohort(cohort, tmp_path):
    copy = tmp_path / "synthetic"
    shutil.copytree(cohort, copy)
    (copy / synth.CLINICAL_NAME).unlink()
    dm = synth.SyntheticDataModule(
        cohort=synth.SyntheticCohort(size=8, **EMBEDDED),
        manifest=ManifestSpec(data_dir=copy, classes=("sMCI", "pMCI")),
        clinical=ClinicalSpec(file=synth.CLINICAL_NAME),
        task=TaskSpec(label="progression"),
    )
    dm.prepare_cohort()
    assert (copy / synth.CLINICAL_NAME).read_bytes() == (cohort / synth.CLINICAL_NAME).read_bytes()


def test_synth_writes_the_table_when_asked(tmp_path):
    out = tmp_path / "cohort"
    synth_command.main(["--out", str(out), "--subjects", "4", "--size", "8", "--clinical", "true", "--workers", "1"])
    written = pd.read_csv(out / synth.CLINICAL_NAME)
    pd.testing.assert_frame_equal(written, synth.clinical_table(synth.SyntheticCohort(subjects=4, size=8)))
    assert list(written.columns) == ["RID", "PTID", "VISCODE", "EXAMDATE", "DX_bl", "DX", "AGE", "PTGENDER", "MMSE",
                                     "CDRSB"]  # fmt: skip
