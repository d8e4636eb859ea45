"""``inspect``: volumes.csv counted from the files to the voxel, and a cohort.md that shows a failed segmentation."""

from __future__ import annotations

from pathlib import Path

import nibabel as nib
import numpy as np
import pandas as pd
import pytest

from adni_lightning.data.labels import FREESURFER_LUT
from adni_lightning.data.manifest import ManifestSpec, build_manifest
from adni_lightning.errors import OptionError
from adni_lightning.main import main
from tests.helpers import tiny_args

VOXEL_MM3 = 8.0**3  # the fixture's 32³ grid over 256 mm


def _blow_up_hippocampus(path: str) -> None:
    """A failed segmentation: a 5×5×5 block of white matter labelled left hippocampus."""
    img = nib.load(path)
    data = np.asarray(img.dataobj).copy()
    data[10:15, 12:17, 12:17] = 17
    nib.save(nib.MGHImage(data, img.affine, img.header), path)


def test_inspect_writes_exact_volumes_and_a_report_that_lists_the_outlier(cohort, tmp_path, capsys):
    manifest = build_manifest(ManifestSpec(data_dir=cohort))
    damaged = manifest.iloc[5]
    _blow_up_hippocampus(damaged["path"])
    out = tmp_path / "inspect"
    main(tiny_args("inspect", tmp_path / "run", cohort, "--out", str(out)))
    assert f"wrote {out / 'volumes.csv'} and {out / 'cohort.md'}" in capsys.readouterr().out

    volumes = pd.read_csv(out / "volumes.csv", dtype={"image_id": str, "subject": str, "visit": str})
    assert volumes["image_id"].tolist() == manifest["image_id"].tolist()
    for row in (0, 5, 20):
        ids, counts = np.unique(np.asarray(nib.load(manifest.at[row, "path"]).dataobj), return_counts=True)
        direct = dict(zip(ids.tolist(), counts.tolist(), strict=True))
        for label, (name, _) in FREESURFER_LUT.items():
            if name in volumes.columns:
                assert volumes.at[row, name] == direct.get(label, 0) * VOXEL_MM3, (row, name)
    assert volumes.at[5, "Left-Hippocampus"] >= 125 * VOXEL_MM3

    report = (out / "cohort.md").read_text()
    for group, part in manifest.groupby("label"):
        assert f"| {group} | {len(part)} | {part['subject'].nunique()} |" in report
    assert f"| all | {len(manifest)} | {manifest['subject'].nunique()} |" in report
    outliers = report.split("## Volume outliers")[1]
    hits = [line for line in outliers.splitlines() if "| Left-Hippocampus |" in line]
    assert len(hits) == 1 and hits[0].startswith(f"| {damaged['image_id']} | {damaged['subject']} |")


def test_default_out_is_the_run_folder(cohort, tmp_path):
    main(tiny_args("inspect", tmp_path / "run", cohort, "--outlier_z", "1000"))
    assert (tmp_path / "run" / "volumes.csv").is_file()
    assert "0 outlying volume(s)" in (tmp_path / "run" / "cohort.md").read_text()
    assert not (tmp_path / "run" / "split.csv").exists()  # inspect draws no split


@pytest.mark.parametrize(
    ("command", "options"),
    [("inspect", ("--config", "--out", "--outlier_z")), ("baseline", ("--config", "--folds", "--root"))],
)
def test_help_names_every_option(command: str, options: tuple[str, ...], capsys):
    with pytest.raises(SystemExit) as exit_:
        main([command, "--help"])
    assert exit_.value.code == 0
    text = capsys.readouterr().out
    assert all(option in text for option in (*options, "--data.", "--trainer."))


def test_the_overview_lists_both_commands(capsys):
    main(["--help"])
    text = capsys.readouterr().out
    assert "inspect" in text and "baseline" in text


def test_intensity_runs_are_refused_with_one_clear_line(cohort, tmp_path):
    with pytest.raises(OptionError, match="regional volumes are counted on label maps"):
        main(
            tiny_args(
                "inspect",
                tmp_path / "run",
                cohort,
                "--data.preprocessing.input_kind",
                "intensity",
                "--data.tabular.volumes",
                "[]",
            )
        )


def test_bad_options_exit_with_usage(tmp_path: Path):
    with pytest.raises(SystemExit) as exit_:
        main(["inspect", "--outlier_z", "many"])
    assert exit_.value.code != 0


def test_the_report_counts_a_tasks_classes_and_exclusions_by_reason(cohort, tmp_path):
    from adni_lightning.data.clinical import ClinicalSpec, TaskSpec, task_labels
    from adni_lightning.synth import CLINICAL_NAME

    task = ["--data.task.label", "progression", "--data.clinical.file", CLINICAL_NAME]
    fixture = ["--data.cohort.subjects", "24", "--data.cohort.size", "32", "--data.cohort.seed", "3"]
    out = tmp_path / "inspect"
    main(tiny_args("inspect", tmp_path / "run", cohort, "--out", str(out), *task, *fixture,
                   "--data.manifest.classes", "[sMCI, pMCI]"))  # fmt: skip
    assert (cohort / CLINICAL_NAME).is_file()  # the synthetic DataModule wrote the table its cohort lacked
    spec = ManifestSpec(data_dir=cohort, classes=("sMCI", "pMCI"))
    manifest = build_manifest(spec, None, task_labels(ClinicalSpec(file=CLINICAL_NAME), TaskSpec("progression"), spec))
    excluded = manifest.attrs["excluded"]
    report = (out / "cohort.md").read_text()
    counts = manifest["label"].value_counts()
    assert (
        "data.task: progression (horizon_months 36, reverters exclude, stable false). Images per class: "
        f"sMCI {counts.get('sMCI', 0)}, pMCI {counts.get('pMCI', 0)}." in report
    )
    assert f"| not MCI at this visit | {excluded['not MCI at this visit']} |" in report
    assert sum(excluded.values()) + len(manifest) == len(pd.read_csv(cohort / "ADNI_1p5T_Filtered.csv"))
