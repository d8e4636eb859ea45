"""The synthetic cohort must look like a real ADNI download to every loader, and carry a real disease signal."""

from __future__ import annotations

from pathlib import Path

import nibabel as nib
import numpy as np
import pandas as pd
import pytest

from adni_lightning import synth
from adni_lightning.commands import synth as synth_command
from adni_lightning.data.labels import FREESURFER_LUT
from adni_lightning.data.manifest import CSV_NAME
from adni_lightning.data.volumes import FASTSURFER_DEEP_LABELS

HEADER = (
    '"Image Data ID","Subject","Group","Sex","Age","Visit","Modality","Description","Type","Acq Date",'
    '"Format","Downloaded"'
)
SIZE = 48
SUBJECTS = 60
#: Every id FastSurfer's aparc.DKTatlas+aseg.deep.mgz may hold, background included.
DEEP_IDS = {0, *FASTSURFER_DEEP_LABELS}
LEFT = [17, 18, 4, 5, 10, 2, *range(1000, 1036)]
RIGHT = [53, 54, 43, 44, 49, 41, *range(2000, 2036)]


def _load(path: Path) -> np.ndarray:
    return np.asarray(nib.load(path).dataobj, dtype=np.int16)


def _path(root: Path, row: pd.Series) -> Path:
    image_id = row["Image Data ID"]
    return root / row["Group"] / f"{'' if image_id.startswith('I') else 'I'}{image_id}.nii_aseg_deep.mgz"


@pytest.fixture(scope="module")
def cohort(tmp_path_factory: pytest.TempPathFactory) -> tuple[Path, pd.DataFrame]:
    root = tmp_path_factory.mktemp("cohort")
    table = synth.generate_cohort(root, subjects=SUBJECTS, size=SIZE, seed=0, second_visit_fraction=0.4, workers=2)
    return root, table


@pytest.fixture(scope="module")
def volumes(cohort: tuple[Path, pd.DataFrame]) -> dict[str, np.ndarray]:
    root, table = cohort
    return {row["Image Data ID"]: _load(_path(root, row)) for _, row in table.iterrows()}


def test_csv_header_quoting_and_formats(cohort: tuple[Path, pd.DataFrame]) -> None:
    root, table = cohort
    lines = (root / CSV_NAME).read_text().splitlines()
    assert lines[0] == HEADER
    assert all(line.startswith('"') and line.endswith('"') and line.count('","') == 11 for line in lines)
    written = pd.read_csv(root / CSV_NAME, dtype=str)
    pd.testing.assert_frame_equal(written, table.astype(str))

    assert written["Image Data ID"].str.fullmatch(r"I\d{5,6}").all()
    assert written["Image Data ID"].is_unique
    assert written["Subject"].str.fullmatch(r"\d{3}_S_\d{4}").all()
    assert set(written["Sex"]) == {"M", "F"}
    assert written["Age"].str.fullmatch(r"\d{2}").all()
    assert written["Age"].astype(int).between(55, 93).all()
    assert set(written["Visit"]) == {"sc", "m12"}
    assert (written["Modality"] == "MRI").all() and (written["Type"] == "Processed").all()
    assert (written["Format"] == "NiFTI").all()
    assert written["Description"].str.contains("N3; Scaled").all()
    for column in ("Acq Date", "Downloaded"):
        assert written[column].str.fullmatch(r"\d{1,2}/\d{1,2}/\d{4}").all()


def test_groups_and_second_visits(cohort: tuple[Path, pd.DataFrame]) -> None:
    _, table = cohort
    per_subject = table.groupby("Subject")
    assert per_subject.ngroups == SUBJECTS
    groups = per_subject["Group"].first().value_counts()
    assert groups.to_dict() == {"MCI": 24, "CN": 21, "AD": 15}  # 40 / 35 / 25 %
    twice = per_subject.filter(lambda rows: len(rows) == 2)
    assert twice["Subject"].nunique() == round(0.4 * SUBJECTS)
    for _, rows in twice.groupby("Subject"):
        sc, m12 = rows.set_index("Visit").loc["sc"], rows.set_index("Visit").loc["m12"]
        assert (sc["Group"], sc["Sex"]) == (m12["Group"], m12["Sex"])
        assert m12["Age"] == sc["Age"] + 1
        assert pd.to_datetime(m12["Acq Date"], format="%m/%d/%Y") > pd.to_datetime(sc["Acq Date"], format="%m/%d/%Y")
        assert int(m12["Image Data ID"][1:]) > int(sc["Image Data ID"][1:])


def test_files_are_conformed_int16_lia(cohort: tuple[Path, pd.DataFrame]) -> None:
    root, table = cohort
    expected = {_path(root, row) for _, row in table.iterrows()}
    assert set(root.glob("*/*.mgz")) == expected
    for path in sorted(expected)[:5]:
        img = nib.load(path)
        assert isinstance(img, nib.MGHImage)
        assert img.get_data_dtype().newbyteorder("=") == np.int16 and img.shape == (SIZE,) * 3  # MGH is big-endian
        assert nib.aff2axcodes(img.affine) == ("L", "I", "A")
        assert img.header.get_zooms() == pytest.approx((256 / SIZE,) * 3)
        assert img.affine @ [SIZE / 2, SIZE / 2, SIZE / 2, 1] == pytest.approx([0, 0, 0, 1], abs=1e-4)


def test_label_ids_are_those_of_fastsurfer_deep(volumes: dict[str, np.ndarray]) -> None:
    seen = set(np.unique(np.concatenate([np.unique(v) for v in volumes.values()])).tolist())
    assert seen <= DEEP_IDS
    assert seen <= set(FREESURFER_LUT)
    assert {17, 53, 18, 54, 4, 43, 5, 44, 2, 41, 10, 49, 16, 14} <= seen
    assert len({i for i in seen if 1000 <= i < 2000}) >= 20 and len({i for i in seen if i >= 2000}) >= 20
    assert not seen & {3, 42, 251, 252, 253, 254, 255, 1001, 1004, 1032, 1033}


def test_a_finer_grid_holds_every_structure(tmp_path: Path) -> None:
    table = synth.generate_cohort(tmp_path, subjects=1, size=128, seed=1, second_visit_fraction=0, workers=1)
    seen = set(np.unique(_load(_path(tmp_path, table.iloc[0]))).tolist())
    assert DEEP_IDS - {77} <= seen <= DEEP_IDS  # WM hypointensities are drawn at random, possibly none


def test_left_structures_lie_at_negative_ras_x(
    cohort: tuple[Path, pd.DataFrame], volumes: dict[str, np.ndarray]
) -> None:
    _, table = cohort
    affine = synth.conformed_affine(SIZE)
    x_of_axis0 = affine[0, 0] * np.arange(SIZE) + affine[0, 3]  # LIA: only axis 0 moves along x
    for image_id in table["Image Data ID"][:10]:
        labels = volumes[image_id]
        for ids, sign in ((LEFT, -1), (RIGHT, 1)):
            x = x_of_axis0[np.nonzero(np.isin(labels, ids))[0]]
            assert sign * x.mean() > 20
            assert np.mean(sign * x > 0) > 0.9  # pose jitter tilts the midline by a few mm
        for left, right in ((17, 53), (4, 43)):
            assert x_of_axis0[np.nonzero(labels == left)[0]].mean() < -10
            assert x_of_axis0[np.nonzero(labels == right)[0]].mean() > 10
        assert x_of_axis0[np.nonzero(labels == 17)[0]].max() < 0 < x_of_axis0[np.nonzero(labels == 53)[0]].min()


def test_disease_signal_is_graded(cohort: tuple[Path, pd.DataFrame], volumes: dict[str, np.ndarray]) -> None:
    root, table = cohort
    counts = pd.DataFrame(
        {
            "group": table["Group"].to_numpy(),
            "hippocampus": [np.isin(volumes[i], (17, 53)).sum() for i in table["Image Data ID"]],
            "ventricles": [np.isin(volumes[i], (4, 43)).sum() for i in table["Image Data ID"]],
        }
    )
    means = counts.groupby("group").mean()
    assert means.loc["CN", "hippocampus"] > means.loc["MCI", "hippocampus"] > means.loc["AD", "hippocampus"]
    assert means.loc["CN", "ventricles"] < means.loc["AD", "ventricles"]

    truth = pd.read_csv(root / synth.TRUTH_NAME).set_index("image_id").loc[table["Image Data ID"]]
    assert truth["hippocampus_voxels"].tolist() == counts["hippocampus"].tolist()
    assert truth.groupby("group")["severity"].mean()[["CN", "MCI", "AD"]].is_monotonic_increasing
    assert truth["severity"].between(0, 1).all()
    assert truth["rotation_x_deg"].abs().max() <= 4 and truth["translation_y_mm"].abs().max() <= 3


def test_same_seed_same_bytes_any_workers(tmp_path: Path) -> None:
    a = synth.generate_cohort(tmp_path / "a", subjects=5, size=SIZE, seed=7, workers=1)
    b = synth.generate_cohort(tmp_path / "b", subjects=5, size=SIZE, seed=7, workers=2)
    c = synth.generate_cohort(tmp_path / "c", subjects=5, size=SIZE, seed=8, workers=1)
    pd.testing.assert_frame_equal(a, b)
    for name in (CSV_NAME, synth.TRUTH_NAME):
        assert (tmp_path / "a" / name).read_bytes() == (tmp_path / "b" / name).read_bytes()
    for _, row in a.iterrows():
        assert _path(tmp_path / "a", row).read_bytes() == _path(tmp_path / "b", row).read_bytes()
    assert not a.equals(c)
    first_a, first_c = _load(_path(tmp_path / "a", a.iloc[0])), _load(_path(tmp_path / "c", c.iloc[0]))
    assert not np.array_equal(first_a, first_c)


def test_bare_ids_drop_the_prefix_in_the_csv_only(tmp_path: Path) -> None:
    table = synth.generate_cohort(tmp_path, subjects=4, size=SIZE, seed=3, bare_ids=True, workers=1)
    written = pd.read_csv(tmp_path / CSV_NAME, dtype=str)
    assert written["Image Data ID"].str.fullmatch(r"\d{5,6}").all()
    for _, row in table.iterrows():
        assert (tmp_path / row["Group"] / f"I{row['Image Data ID']}.nii_aseg_deep.mgz").is_file()
    truth = pd.read_csv(tmp_path / synth.TRUTH_NAME)
    assert sorted(truth["image_id"]) == sorted("I" + written["Image Data ID"])


def test_cli(tmp_path: Path, capsys: pytest.CaptureFixture[str]) -> None:
    out = tmp_path / "cohort"
    synth_command.main(
        [
            "--out",
            str(out),
            "--subjects",
            "3",
            "--size",
            "32",
            "--seed",
            "5",
            "--second_visit_fraction",
            "1",
            "--bare_ids",
            "true",
            "--workers",
            "1",
        ]
    )
    table = pd.read_csv(out / CSV_NAME, dtype=str)
    assert len(table) == 6 and table["Subject"].nunique() == 3
    assert table["Image Data ID"].str.fullmatch(r"\d{5,6}").all()
    assert nib.load(_path(out, table.iloc[0])).shape == (32, 32, 32)
    assert "wrote 6 images of 3 subjects" in capsys.readouterr().out


@pytest.mark.parametrize("kwargs", [{"subjects": 0}, {"size": 4}, {"second_visit_fraction": 1.5}])
def test_rejects_bad_arguments(tmp_path: Path, kwargs: dict) -> None:
    with pytest.raises(ValueError):
        synth.generate_cohort(tmp_path, **{"subjects": 2, "size": 32, "workers": 1, **kwargs})


def _files(folder: Path) -> dict[str, bytes]:
    return {str(p.relative_to(folder)): p.read_bytes() for p in sorted(folder.rglob("*")) if p.is_file()}


def _synth(*args: str) -> list[str]:
    return ["--subjects", "3", "--size", "16", "--workers", "1", *args]


def test_synth_never_writes_over_a_download(cohort: tuple[Path, pd.DataFrame], tmp_path: Path) -> None:
    """A real download (no marker): its CSV and label maps stay byte-identical, and the refusal is one line."""
    download = tmp_path / "K1data"
    root, _ = cohort
    for path in [root / CSV_NAME, *sorted(root.glob("*/*.mgz"))[:4]]:
        (download / path.relative_to(root)).parent.mkdir(parents=True, exist_ok=True)
        (download / path.relative_to(root)).write_bytes(path.read_bytes())
    before = _files(download)
    with pytest.raises(synth.CohortFolderError) as refused:
        synth_command.main(_synth("--out", str(download)))
    found = ", ".join(sorted(p.name for p in download.iterdir()))
    assert str(refused.value) == (
        f"{download} holds other files ({found}) and no earlier synthetic cohort: refusing to generate a synthetic "
        "cohort there; point --out at a folder that does not exist yet"
    )
    assert _files(download) == before


def test_synth_out_naming_a_file_is_one_line(tmp_path: Path) -> None:
    target = tmp_path / "notes.csv"
    target.write_text("mine\n")
    with pytest.raises(synth.CohortFolderError) as refused:
        synth_command.main(_synth("--out", str(target)))
    assert str(refused.value) == (
        f"{target} is a file, not a folder: refusing to generate a synthetic cohort there; point --out at a folder "
        "that does not exist yet"
    )
    assert target.read_text() == "mine\n"


def test_synth_says_where_first_and_writes_again_into_its_own_cohort(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch, caplog: pytest.LogCaptureFixture
) -> None:
    monkeypatch.chdir(tmp_path)
    with caplog.at_level("INFO", logger="adni_lightning"):
        synth_command.main(_synth("--out", "demo"))
        synth_command.main(_synth("--out", "demo", "--seed", "4"))  # an earlier synthetic cohort: replaced
    lines = [r.getMessage() for r in caplog.records if "synthetic" in r.getMessage()]
    assert lines == [f"generating a synthetic cohort (3 subjects, 16³ voxels) in {tmp_path / 'demo'}"] * 2
    assert pd.read_csv(tmp_path / "demo" / CSV_NAME)["Subject"].nunique() == 3
