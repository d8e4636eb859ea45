import csv
import logging
from pathlib import Path

import pandas as pd
import pytest

from adni_lightning.data.manifest import ManifestError, ManifestSpec, build_manifest, normalise_image_id

CSV = "ADNI_1p5T_Filtered.csv"


def _spec(root: Path, **kwargs) -> ManifestSpec:
    return ManifestSpec(csv_path=root / CSV, data_dir=root, **kwargs)


def _rewrite(root: Path, edit) -> pd.DataFrame:
    """Edit the cohort's CSV as text columns and write it back quoted, as IDA does."""
    table = pd.read_csv(root / CSV, dtype=str, keep_default_na=False)
    table = edit(table)
    table.to_csv(root / CSV, index=False, quoting=csv.QUOTE_ALL)
    return table


def test_a_clean_cohort_joins_every_row(cohort):
    table = pd.read_csv(cohort / CSV, dtype=str)
    manifest = build_manifest(_spec(cohort))
    assert len(manifest) == len(table)
    assert list(manifest.columns) == [
        "row",
        "image_id",
        "subject",
        "group",
        "label",
        "target",
        "sex",
        "age",
        "visit",
        "path",
    ]
    first = manifest.iloc[0]
    assert Path(first["path"]) == cohort / first["group"] / f"{first['image_id']}.nii_aseg_deep.mgz"
    assert first["row"] == 2  # CSV line numbers, header is line 1
    assert set(manifest["target"]) == {0, 1, 2}
    assert manifest["subject"].nunique() < len(manifest)  # some subjects have a second visit


@pytest.mark.parametrize(
    "raw, expected",
    [("I45108", "I45108"), ("45108", "I45108"), ("45108.0", "I45108"), (" I7 ", "I7"), ("X12", None), ("", None)],
)
def test_normalise_image_id(raw, expected):
    assert normalise_image_id(raw) == expected


def test_ids_without_the_i_join_files_named_with_it(cohort):
    _rewrite(cohort, lambda t: t.assign(**{"Image Data ID": t["Image Data ID"].str.lstrip("I")}))
    manifest = build_manifest(_spec(cohort))
    assert manifest["image_id"].str.startswith("I").all()
    assert all(Path(p).is_file() for p in manifest["path"])


def test_files_named_without_the_i_are_found(cohort):
    for path in cohort.glob("*/I*.mgz"):
        path.rename(path.with_name(path.name[1:]))
    manifest = build_manifest(_spec(cohort))
    assert all(Path(p).name[0].isdigit() for p in manifest["path"])


def _damage_everything(cohort: Path) -> dict[int, str]:
    """One of each bad-input case, each on its own row; returns CSV line → the reason expected."""
    table = pd.read_csv(cohort / CSV, dtype=str, keep_default_na=False)
    paths = {
        i: cohort / table.loc[i, "Group"] / f"{table.loc[i, 'Image Data ID']}.nii_aseg_deep.mgz"
        for i in range(len(table))
    }
    table.loc[0, "Group"] = "SMC"
    table.loc[1, "Sex"] = "X"
    table.loc[2, "Age"] = ""
    table.loc[3, "Age"] = "7"
    table.loc[4, "Image Data ID"] = "scan-4"
    table.loc[5, "Image Data ID"] = table.loc[6, "Image Data ID"]
    paths[7].unlink()
    blob = paths[8].read_bytes()
    paths[8].write_bytes(blob[: len(blob) // 3])
    paths[9].write_bytes(b"\x1f\x8b not really gzip")
    table.loc[10, "Subject"] = ""
    table.to_csv(cohort / CSV, index=False, quoting=csv.QUOTE_ALL)
    return {
        2: "group 'SMC' is not one of the classes",
        3: "sex 'X' is not M or F",
        4: "age '' is missing or not a number",
        5: "age 7 is outside the plausible range",
        6: "image id is not of the form",
        7: "appears 2 times in the CSV",
        8: "appears 2 times in the CSV",
        9: "file not found",
        10: "truncated",
        11: "unreadable header",
        12: "subject id is empty",
    }


def test_every_bad_row_is_reported_at_once_with_row_id_file_and_reason(cohort):
    expected = _damage_everything(cohort)
    with pytest.raises(ManifestError) as err:
        build_manifest(_spec(cohort))
    lines = [line.strip() for line in str(err.value).splitlines() if line.strip().startswith("CSV row")]
    assert len(lines) == len(expected)
    for line_no, reason in expected.items():
        [line] = [text for text in lines if text.startswith(f"CSV row {line_no},")]
        assert reason in line, line
    assert "K1data" in [text for text in lines if "file not found" in text][0]  # the path is named
    assert "on_bad_rows: skip" in str(err.value)


def test_skip_drops_exactly_the_bad_rows_and_logs_them(cohort, caplog):
    expected = _damage_everything(cohort)
    total = len(pd.read_csv(cohort / CSV))
    with caplog.at_level(logging.WARNING):
        manifest = build_manifest(_spec(cohort, on_bad_rows="skip"))
    assert len(manifest) == total - len(expected)
    assert not set(manifest["row"]) & set(expected)
    assert "cannot be used" in caplog.text and "skipped, on_bad_rows: skip" in caplog.text


def test_group_map_merges_and_excludes_groups_explicitly(cohort, caplog):
    table = _rewrite(cohort, lambda t: t.assign(Group=t["Group"].replace({"MCI": "LMCI"})))
    (cohort / "LMCI").mkdir()
    for path in (cohort / "MCI").iterdir():
        path.rename(cohort / "LMCI" / path.name)
    manifest = build_manifest(_spec(cohort, group_map={"LMCI": "MCI"}))
    assert set(manifest["label"]) == {"CN", "MCI", "AD"}
    assert (manifest.loc[manifest["group"] == "LMCI", "label"] == "MCI").all()
    with caplog.at_level(logging.INFO):
        without = build_manifest(_spec(cohort, group_map={"LMCI": None}))
    assert len(without) == (table["Group"] != "LMCI").sum()
    assert "excluded by group_map" in caplog.text


def test_missing_columns_and_missing_csv(cohort):
    with pytest.raises(ManifestError, match="CSV not found"):
        build_manifest(ManifestSpec(csv_path=cohort / "nope.csv", data_dir=cohort))
    _rewrite(cohort, lambda t: t.drop(columns=["Sex"]))
    with pytest.raises(ManifestError, match="missing column\\(s\\) Sex"):
        build_manifest(_spec(cohort))


def test_inconsistent_shapes_are_reported(cohort):
    import numpy as np

    from tests.conftest import write_mgz

    manifest = build_manifest(_spec(cohort))
    odd = manifest.iloc[3]
    write_mgz(Path(odd["path"]), np.zeros((20, 20, 20), np.int16))
    with pytest.raises(ManifestError, match=r"shape \(20, 20, 20\) differs from the cohort's \(32, 32, 32\)"):
        build_manifest(_spec(cohort))


def test_an_empty_file_is_named_with_its_row_in_one_line_and_skippable(cohort, caplog):
    manifest = build_manifest(_spec(cohort))
    row = manifest.iloc[4]
    Path(row["path"]).write_bytes(b"")  # nibabel alone raises a bare TypeError here
    where = f"{cohort / CSV}: CSV row {row['row']}, image {row['image_id']}, file {row['path']}: empty file (0 bytes)"
    with pytest.raises(ManifestError) as err:
        build_manifest(_spec(cohort))
    assert str(err.value) == f"{where} (set on_bad_rows: skip to train without them)"
    with caplog.at_level(logging.WARNING):
        skipped = build_manifest(_spec(cohort, on_bad_rows="skip"))
    assert list(skipped["image_id"]) == [i for i in manifest["image_id"] if i != row["image_id"]]
    assert f"{where} (skipped, on_bad_rows: skip)" in caplog.text


def _second_visit_relabelled(root: Path) -> tuple[str, list[int], str, str]:
    """Give one subject's second row another class (moving its file, whose folder is its group)."""
    table = pd.read_csv(root / CSV, dtype=str, keep_default_na=False)
    subject = table["Subject"][table["Subject"].duplicated()].iloc[0]
    first, second = table.index[table["Subject"] == subject][:2]
    old = table.at[second, "Group"]
    new = next(g for g in ("CN", "MCI", "AD") if g != old)
    name = f"I{table.at[second, 'Image Data ID'].lstrip('I')}.nii_aseg_deep.mgz"
    (root / new).mkdir(exist_ok=True)
    (root / old / name).rename(root / new / name)
    _rewrite(root, lambda t: t.assign(Group=[new if i == second else g for i, g in enumerate(t["Group"])]))
    return subject, [int(first) + 2, int(second) + 2], old, new


def test_a_subject_with_rows_of_two_classes_is_reported_and_the_policy_applied(cohort, caplog):
    subject, (first, second), old, new = _second_visit_relabelled(cohort)
    with pytest.raises(ManifestError) as refused:
        build_manifest(_spec(cohort))
    assert str(refused.value) == (
        f"{cohort / CSV}: 1 subject(s) have rows of different classes:\n"
        f"  subject {subject}: {old} (CSV row {first}), {new} (CSV row {second})\n"
        "(set data.manifest.mixed_groups: keep to keep each image with its own row's class, or drop to leave these "
        "subjects out)"
    )
    with caplog.at_level(logging.INFO):
        kept = build_manifest(_spec(cohort, mixed_groups="keep"))
    assert list(kept.loc[kept["subject"] == subject, "label"]) == [old, new]
    assert f"subject {subject}: {old} (CSV row {first}), {new} (CSV row {second})" in caplog.text
    assert "each image keeps its own row's class (mixed_groups: keep)" in caplog.text
    caplog.clear()
    with caplog.at_level(logging.WARNING):
        dropped = build_manifest(_spec(cohort, mixed_groups="drop"))
    assert subject not in set(dropped["subject"]) and len(dropped) == len(kept) - 2
    assert "these subjects are left out (mixed_groups: drop)" in caplog.text
