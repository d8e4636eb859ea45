"""Bad input becomes a precisely named bad row (CSV row, image, file, reason), never a traceback or a wrong reason;
``on_bad_rows: skip`` drops exactly those rows, within ``max_skipped_fraction``; long reports stay readable."""

from __future__ import annotations

import csv
import logging
import os
from pathlib import Path

import nibabel as nib
import numpy as np
import pandas as pd
import pytest

from adni_lightning.data.datamodule import ADNIDataModule
from adni_lightning.data.dataset import LoaderSpec
from adni_lightning.data.manifest import CSV_NAME, ManifestError, ManifestSpec, build_manifest
from adni_lightning.data.preprocess import Preprocessing
from adni_lightning.data.split import SplitSpec
from adni_lightning.data.volume_io import file_problem
from adni_lightning.errors import OptionError
from tests.conftest import write_mgz
from tests.helpers import tiny_args

SKIP = "(skipped, on_bad_rows: skip)"
REFUSE = "(set on_bad_rows: skip to train without them)"


def _datamodule(cohort: Path, tmp_path: Path, cache: str = "cache", **manifest: object) -> ADNIDataModule:
    return ADNIDataModule(
        manifest=ManifestSpec(data_dir=str(cohort), **manifest),
        preprocessing=Preprocessing(image_size=16),
        loader=LoaderSpec(batch_size=4, num_workers=0),
        split=SplitSpec(file=str(tmp_path / "run" / "split.csv")),
        cache_dir=str(tmp_path / cache),
    )


def _table(cohort: Path) -> pd.DataFrame:
    return pd.read_csv(cohort / CSV_NAME, dtype=str, keep_default_na=False)


def _save(cohort: Path, table: pd.DataFrame) -> None:
    table.to_csv(cohort / CSV_NAME, index=False, quoting=csv.QUOTE_ALL)


def _relabel(row: pd.Series, voxels: slice | None) -> None:
    """Rewrite a row's label map on its grid: all background, or left hippocampus (17) in a cube only."""
    image = nib.load(row["path"])
    data = np.zeros(image.shape, np.int16)
    if voxels is not None:
        data[voxels, voxels, voxels] = 17
    write_mgz(Path(row["path"]), data, image.affine)


def test_an_empty_label_map_is_one_bad_row_and_skip_trains_without_it(cohort, tmp_path, caplog):
    row = build_manifest(ManifestSpec(data_dir=cohort)).iloc[4]
    _relabel(row, None)
    where = f"{cohort / CSV_NAME}: CSV row {row['row']}, image {row['image_id']}, file {row['path']}"
    with pytest.raises(ManifestError) as refused:
        _datamodule(cohort, tmp_path, cache="refused").prepare_data()
    assert str(refused.value) == f"{where}: label map is empty (no labelled voxel) {REFUSE}"
    # Skip: the whole command trains without it, with the regional volumes as covariates (the synthetic config's).
    from adni_lightning.main import main

    run = tmp_path / "fit"
    with caplog.at_level(logging.WARNING):
        cli = main(tiny_args("fit", run, cohort, "--data.manifest.on_bad_rows", "skip", "--trainer.max_epochs", "1"))
    assert f"{where}: label map is empty (no labelled voxel) {SKIP}" in caplog.text
    used = [i for side in ("train", "val", "test") for i in cli.datamodule.datasets[side].rows["image_id"]]
    assert sorted(used) == sorted(i for i in _table(cohort)["Image Data ID"] if i != row["image_id"])
    assert cli.trainer.current_epoch == 1 and (run / "checkpoints" / "last.ckpt").is_file()


def test_a_near_empty_label_map_is_named_with_its_volume_and_the_cohorts_median(cohort, tmp_path, caplog):
    manifest = build_manifest(ManifestSpec(data_dir=cohort))
    row = manifest.iloc[7]
    _relabel(row, slice(10, 13))  # 27 voxels of 8 mm: 13.8 ml
    dm = _datamodule(cohort, tmp_path, on_bad_rows="skip")
    dm.fill_cache()
    labelled = [sum(dm.cache.volumes(i, p).values()) / 1000 for i, p in zip(manifest["image_id"], manifest["path"])]
    reason = (
        f"label map nearly empty: labelled volume 13.8 ml is below 0.5 of the cohort's median "
        f"{np.median(labelled):.1f} ml (data.manifest.min_labelled_fraction)"
    )
    where = f"{cohort / CSV_NAME}: CSV row {row['row']}, image {row['image_id']}, file {row['path']}"
    assert list(dm.manifest()["image_id"]) == [i for i in manifest["image_id"] if i != row["image_id"]]
    # Another process, or a later run, finds the same from the sidecars, without decoding.
    with caplog.at_level(logging.WARNING):
        later = _datamodule(cohort, tmp_path, on_bad_rows="skip").manifest()
    assert list(later["image_id"]) == list(dm.manifest()["image_id"])
    assert f"{where}: {reason} {SKIP}" in caplog.text
    with pytest.raises(ManifestError) as refused:
        _datamodule(cohort, tmp_path).manifest()
    assert str(refused.value) == f"{where}: {reason} {REFUSE}"
    assert len(_datamodule(cohort, tmp_path, min_labelled_fraction=0.0).manifest()) == len(manifest)


def test_a_subject_whose_sex_differs_between_visits_is_bad_in_every_row(cohort, tmp_path, caplog):
    table = _table(cohort)
    subject = table["Subject"][table["Subject"].duplicated()].iloc[0]
    first, second = (int(i) for i in table.index[table["Subject"] == subject])
    old = table.at[second, "Sex"]
    new = "F" if old == "M" else "M"
    table.at[second, "Sex"] = new
    _save(cohort, table)
    ids = [f"I{table.at[i, 'Image Data ID'].lstrip('I')}" for i in (first, second)]
    rows = [first + 2, second + 2]
    reason = f"subject {subject} is recorded as {old} (CSV row {rows[0]}) and {new} (CSV row {rows[1]})"
    with pytest.raises(ManifestError) as refused:
        build_manifest(ManifestSpec(data_dir=cohort))
    heading, section, *lines = str(refused.value).splitlines()
    assert heading == (
        f"{cohort / CSV_NAME}: 2 of {len(table)} row(s) cannot be used {REFUSE}: 2 × sex differs between visits"
    )
    assert section == "  sex differs between visits (2 row(s)):"
    for line, row, image_id in zip(lines, rows, ids, strict=True):
        assert line.startswith(f"    CSV row {row}, image {image_id}, file {cohort}/") and line.endswith(reason)
    with caplog.at_level(logging.WARNING):
        kept = build_manifest(ManifestSpec(data_dir=cohort, on_bad_rows="skip"))
    assert set(kept["row"]) == set(range(2, len(table) + 2)) - set(rows)
    assert subject not in set(kept["subject"])


def test_a_group_with_spaces_around_it_is_read_without_them_and_said_so(cohort, caplog):
    table = _table(cohort)
    index = int(table.index[table["Group"] == "AD"][0])
    table.at[index, "Group"] = "AD "
    _save(cohort, table)
    with caplog.at_level(logging.WARNING):
        manifest = build_manifest(ManifestSpec(data_dir=cohort))
    assert len(manifest) == len(table)
    row = manifest.set_index("row").loc[index + 2]
    assert (row["group"], row["label"]) == ("AD", "AD")
    assert Path(row["path"]).parent == cohort / "AD"
    assert (
        f"{cohort / CSV_NAME}: values read without their surrounding spaces: Group in 1 row(s), "
        f"e.g. CSV row {index + 2}: 'AD '"
    ) in caplog.text


def test_a_directory_and_a_symbolic_link_loop_are_named_as_such(cohort, tmp_path):
    manifest = build_manifest(ManifestSpec(data_dir=cohort))
    folder, loop = (manifest.iloc[i] for i in (2, 6))
    Path(folder["path"]).unlink()
    Path(folder["path"]).mkdir()
    Path(loop["path"]).unlink()
    os.symlink(loop["path"], loop["path"])
    with pytest.raises(ManifestError) as refused:
        build_manifest(ManifestSpec(data_dir=cohort))
    lines = [line.strip() for line in str(refused.value).splitlines()]
    assert lines[0].endswith(f"{REFUSE}: 1 × is a directory, 1 × symbolic link loop")
    assert f"CSV row {folder['row']}, image {folder['image_id']}, file {folder['path']}: is a directory" in lines
    assert f"CSV row {loop['row']}, image {loop['image_id']}, file {loop['path']}: symbolic link loop" in lines
    skipped = build_manifest(ManifestSpec(data_dir=cohort, on_bad_rows="skip"))
    assert set(skipped["image_id"]) == set(manifest["image_id"]) - {folder["image_id"], loop["image_id"]}


def test_file_problem_names_each_way_a_path_is_not_a_file(tmp_path):
    (tmp_path / "file").write_bytes(b"x")
    (tmp_path / "folder").mkdir()
    os.symlink(tmp_path / "loop", tmp_path / "loop")
    os.symlink(tmp_path / "nowhere", tmp_path / "dangling")
    os.symlink(tmp_path / "file", tmp_path / "link")
    assert file_problem(tmp_path / "file") is None and file_problem(tmp_path / "link") is None
    assert file_problem(tmp_path / "missing") == "file not found"
    assert file_problem(tmp_path / "folder") == "is a directory"
    assert file_problem(tmp_path / "loop") == "symbolic link loop"
    dangling = f"broken symbolic link (to {tmp_path / 'nowhere'}, which does not exist)"
    assert file_problem(tmp_path / "dangling") == dangling
    assert file_problem(tmp_path / "file" / "below") == "cannot read (Not a directory)"


@pytest.mark.parametrize("separator, name", [(";", "semicolon"), ("\t", "tab")])
def test_a_csv_separated_by_semicolons_or_tabs_gets_a_hint(cohort, separator, name):
    _table(cohort).to_csv(cohort / CSV_NAME, index=False, sep=separator)
    header = (cohort / CSV_NAME).read_text().splitlines()[0]
    with pytest.raises(ManifestError) as refused:
        build_manifest(ManifestSpec(data_dir=cohort))
    assert str(refused.value) == (
        f"{cohort / CSV_NAME}: missing column(s) Image Data ID, Subject, Group, Sex, Age; found {header} "
        f"(the file looks {name}-separated: save it comma-separated, as IDA exports it)"
    )


def test_an_empty_csv_is_one_line_naming_it(cohort):
    columns = "Image Data ID, Subject, Group, Sex, Age"
    expected = f"expected the IDA collection export: a header line with {columns}, a row per image"
    (cohort / CSV_NAME).write_bytes(b"")
    with pytest.raises(ManifestError) as refused:
        build_manifest(ManifestSpec(data_dir=cohort))
    assert str(refused.value) == f"{cohort / CSV_NAME}: empty file (0 bytes); {expected}"
    (cohort / CSV_NAME).write_text("\n\n")
    with pytest.raises(ManifestError) as refused:
        build_manifest(ManifestSpec(data_dir=cohort))
    assert str(refused.value) == f"{cohort / CSV_NAME}: no header line (only blank lines); {expected}"


def test_skip_stops_when_it_would_drop_more_than_max_skipped_fraction(cohort, tmp_path):
    manifest = build_manifest(ManifestSpec(data_dir=cohort))
    gone = manifest.iloc[:20]
    for path in gone["path"]:
        Path(path).unlink()
    with pytest.raises(ManifestError) as refused:
        _datamodule(cohort, tmp_path, on_bad_rows="skip").manifest()
    listed = tmp_path / "cache" / "bad_rows.csv"
    first, *rest = str(refused.value).splitlines()
    assert first == (
        f"{cohort / CSV_NAME}: on_bad_rows: skip would drop 20 of 34 rows (59%), more than "
        "data.manifest.max_skipped_fraction 0.5 allows (fix the data, or set it to 0.59 to train on the rest): "
        f"20 × file not found; every row listed in {listed}"
    )
    assert rest[0] == "  file not found (20 row(s), the first 5):" and len(rest) == 6
    assert list(pd.read_csv(listed)["image_id"]) == list(gone["image_id"])
    assert not list(cohort.rglob("bad_*.csv"))  # never into the data folder
    kept = _datamodule(cohort, tmp_path, on_bad_rows="skip", max_skipped_fraction=0.59).manifest()
    assert list(kept["image_id"]) == list(manifest["image_id"][20:])
    with pytest.raises(OptionError, match=r"^data.manifest.max_skipped_fraction must be in \[0, 1\], got 1.5$"):
        ManifestSpec(max_skipped_fraction=1.5)


def test_a_report_of_ten_thousand_rows_counts_by_reason_first_and_lists_every_row_in_a_csv(cohort, tmp_path):
    table = _table(cohort)
    extra = 10_000 - len(table)
    numbers = np.arange(extra)
    added = pd.DataFrame(
        {
            "Image Data ID": [f"I{900_000 + n}" for n in numbers],
            "Subject": [f"{n:03d}_S_9999" for n in numbers],
            "Group": "CN",
            "Sex": np.where(numbers % 500 == 1, "X", "M"),
            "Age": np.where(numbers % 700 == 2, "7", "70"),
        }
    )
    _save(cohort, pd.concat([table, added], ignore_index=True).fillna(""))
    run = tmp_path / "run"
    with pytest.raises(ManifestError) as refused:
        build_manifest(ManifestSpec(data_dir=cohort), report_dir=run)
    message = str(refused.value)
    sex, age = int((numbers % 500 == 1).sum()), int((numbers % 700 == 2).sum())
    missing = extra - sex - age
    first, *lines = message.splitlines()
    assert first == (
        f"{cohort / CSV_NAME}: {extra} of 10000 row(s) cannot be used {REFUSE}: {missing} × file not found, "
        f"{sex} × sex not M or F, {age} × age outside the plausible range; every row listed in {run / 'bad_rows.csv'}"
    )
    assert lines[0] == f"  file not found ({missing} row(s), the first 5):"
    assert lines[6] == f"  sex not M or F ({sex} row(s), the first 5):"
    assert lines[12] == f"  age outside the plausible range ({age} row(s), the first 5):"
    assert len(lines) == 18 and len(message) < 6000
    assert lines[1].startswith(f"    CSV row {len(table) + 2}, image I900000, file {cohort}/CN/I900000")
    listed = pd.read_csv(run / "bad_rows.csv")
    assert list(listed.columns) == ["row", "image_id", "file", "reason"]
    assert list(listed["row"]) == list(range(len(table) + 2, 10_002))
    assert listed.loc[listed["image_id"] == "I900001", "reason"].item() == "sex 'X' is not M or F"


def test_small_label_maps_compares_with_the_median_of_the_maps_given():
    from adni_lightning.data.volumes import small_label_maps

    labelled = {"I1": 1_000_000.0, "I2": 1_100_000.0, "I3": 900_000.0, "I4": 3.0}
    assert small_label_maps(labelled, 0.5) == {
        "I4": "label map nearly empty: labelled volume 0.003 ml is below 0.5 of the cohort's median 950.0 ml "
        "(data.manifest.min_labelled_fraction)"
    }
    assert small_label_maps(labelled, 0.0) == {} and small_label_maps({}, 0.5) == {}


def test_a_long_report_says_when_its_full_list_cannot_be_written(cohort, tmp_path):
    manifest = build_manifest(ManifestSpec(data_dir=cohort))
    for path in manifest["path"][:6]:
        Path(path).unlink()
    (tmp_path / "file").write_text("")
    for folder, note in [
        (tmp_path / "file" / "run", f"the full list could not be written to {tmp_path}/file/run/bad_rows.csv"),
        (None, "rows beyond the first 5 of a reason are not shown"),
    ]:
        with pytest.raises(ManifestError) as refused:
            build_manifest(ManifestSpec(data_dir=cohort), report_dir=folder)
        first = str(refused.value).splitlines()[0]
        assert first.startswith(f"{cohort / CSV_NAME}: 6 of 34 row(s) cannot be used {REFUSE}: 6 × file not found; ")
        assert first.endswith(note if folder is None else f"{note} (Not a directory)")
