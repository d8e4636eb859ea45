"""A cohort from another site differs where a site or a segmentation differs (ids, ages, head size, cortex label,
missing labels), never in the disease; and the default cohort keeps its bytes.
"""

from __future__ import annotations

import gzip
import hashlib
from pathlib import Path

import nibabel as nib
import numpy as np
import pandas as pd
import pytest
import yaml

from adni_lightning import synth
from adni_lightning.cli import CONFIG_DIR
from adni_lightning.commands import synth as synth_command
from adni_lightning.data.manifest import CSV_NAME, ManifestSpec, build_manifest
from adni_lightning.errors import OptionError
from adni_lightning.main import main

#: sha256 of the default cohort below (24 subjects, 32³, seed 3), computed on the generator before the site options
#: existed. Label maps enter decompressed: their bytes, not the zlib build's compression of them.
DEFAULT_DIGEST = "d6c2244cf76c7ef7f507508d53fab2912ddb2efc618686c57f1850fd525f32c6"
SHIFTED = synth.PRESETS["shifted"]
SIZE = 64
SUBJECTS = 40
FACES = [(-1, 0, 0), (1, 0, 0), (0, -1, 0), (0, 1, 0), (0, 0, -1), (0, 0, 1)]


def _digest(folder: Path) -> str:
    digest = hashlib.sha256()
    for path in sorted(folder.rglob("*")):
        if path.is_file():
            data = path.read_bytes()
            digest.update(str(path.relative_to(folder)).encode() + b"\0")
            digest.update(gzip.decompress(data) if path.suffix == ".mgz" else data)
    return digest.hexdigest()


def _labels(root: Path, truth: pd.DataFrame, image_id: str) -> np.ndarray:
    group = truth.set_index("image_id").loc[image_id, "group"]
    return np.asarray(nib.load(root / group / f"{image_id}{synth.FILE_SUFFIX}").dataobj, dtype=np.int16)


def _cohort(root: Path, **options: object) -> pd.DataFrame:
    """A cohort without second visits at the same seed as every other here; its truth table, in drawing order."""
    synth.generate_cohort(
        root, **{"subjects": SUBJECTS, "size": SIZE, "second_visit_fraction": 0, "workers": 1, **options}
    )
    return pd.read_csv(root / synth.TRUTH_NAME)


def test_the_default_cohort_keeps_its_bytes(tmp_path: Path) -> None:
    synth.generate_cohort(tmp_path / "default", subjects=24, size=32, seed=3, workers=1)
    assert _digest(tmp_path / "default") == DEFAULT_DIGEST


@pytest.fixture(scope="module")
def paired(tmp_path_factory: pytest.TempPathFactory) -> dict[str, tuple[Path, pd.DataFrame]]:
    """The default cohort and the shifted preset at the same seed: the same people, seen at another site."""
    base = tmp_path_factory.mktemp("sites")
    return {
        "default": (base / "default", _cohort(base / "default", seed=0)),
        "shifted": (base / "shifted", _cohort(base / "shifted", **{**SHIFTED, "seed": 0})),
    }


def test_same_people_same_disease_other_site(paired: dict[str, tuple[Path, pd.DataFrame]]) -> None:
    (_, default), (_, shifted) = paired["default"], paired["shifted"]
    assert shifted["image_id"].tolist() == default["image_id"].tolist()
    assert shifted["subject"].tolist() == ["999" + s[3:] for s in default["subject"]]
    assert default["subject"].str[:3].nunique() > 10  # the default keeps ADNI's many sites
    for column in ("group", "sex", "severity"):
        assert shifted[column].tolist() == default[column].tolist()
    drawn = default["age"] < 92  # not clipped at the top: the shifted age is known exactly
    assert (shifted["age"][drawn] == (default["age"][drawn] - 6).clip(lower=55)).all()  # ages stay within 55-92
    assert (shifted["age"] - default["age"]).mean() == pytest.approx(-6, abs=0.5)
    assert shifted["head_scale"].to_numpy() == pytest.approx(1.05 * default["head_scale"].to_numpy())


def test_labelled_volume_scales_with_the_cube_of_head_scale(paired: dict[str, tuple[Path, pd.DataFrame]]) -> None:
    (_, default), (_, shifted) = paired["default"], paired["shifted"]
    ratio = shifted["brain_voxels"] / default["brain_voxels"]
    assert ratio.mean() == pytest.approx(1.05**3, rel=0.01)
    assert ratio.between(1.05**3 - 0.03, 1.05**3 + 0.03).all()


def test_thicker_cortex_and_missing_labels(paired: dict[str, tuple[Path, pd.DataFrame]]) -> None:
    fraction = {name: t["cortex_voxels"] / t["brain_voxels"] for name, (_, t) in paired.items()}
    assert (fraction["shifted"] > 1.5 * fraction["default"]).all()
    gone = (31, 63, 77)
    seen = {
        name: set().union(*(np.unique(_labels(root, t, i)).tolist() for i in t["image_id"]))
        for name, (root, t) in paired.items()
    }
    assert set(gone) <= seen["default"]
    assert not set(gone) & seen["shifted"]
    assert seen["shifted"] == seen["default"] - set(gone)


def test_the_disease_truth_holds(paired: dict[str, tuple[Path, pd.DataFrame]]) -> None:
    """Hippocampus over labelled volume (the ICV proxy), AD over CN: what a volumetric model learns."""
    ratios = {}
    for name, (_, truth) in paired.items():
        per_group = (truth["hippocampus_voxels"] / truth["brain_voxels"]).groupby(truth["group"]).mean()
        ratios[name] = per_group["AD"] / per_group["CN"]
    assert ratios["default"] < 0.9  # the signal is there
    assert ratios["shifted"] == pytest.approx(ratios["default"], abs=0.02)


def test_the_shifted_cohort_is_a_valid_download(paired: dict[str, tuple[Path, pd.DataFrame]]) -> None:
    (default_root, _), (shifted_root, _) = paired["default"], paired["shifted"]
    header = (default_root / CSV_NAME).read_text().splitlines()[0]
    assert (shifted_root / CSV_NAME).read_text().splitlines()[0] == header
    manifest = build_manifest(ManifestSpec(data_dir=shifted_root))
    assert len(manifest) == SUBJECTS
    assert manifest["subject"].str.fullmatch(r"999_S_\d{4}").all()


def _changed(tmp_path: Path, **options: object) -> tuple[np.ndarray, np.ndarray]:
    """One image of the default cohort and the same image with ``options``."""
    default = _cohort(tmp_path / "default", subjects=2, seed=0)
    other = _cohort(tmp_path / "other", subjects=2, seed=0, **options)
    image_id = default["image_id"].iloc[0]
    return _labels(tmp_path / "default", default, image_id), _labels(tmp_path / "other", other, image_id)


def test_cortex_grows_into_its_own_white_matter_only(tmp_path: Path) -> None:
    before, after = _changed(tmp_path, cortex_thickening=1)
    changed = before != after
    assert changed.sum() > 1000
    was, now = before[changed], after[changed]
    assert set(np.unique(was).tolist()) == {2, 41}
    assert ((now // 1000) == np.where(was == 2, 1, 2)).all()  # the left cortex grows into left white matter
    padded = np.pad(before, 1)
    for i, j, k in np.argwhere(changed):  # one layer: each new cortex voxel touched that label before
        faces = [padded[i + 1 + a, j + 1 + b, k + 1 + c] for a, b, c in FACES]
        assert after[i, j, k] in faces


def test_missing_labels_become_the_tissue_round_them(tmp_path: Path) -> None:
    before, after = _changed(tmp_path, missing_labels=[63, 31])
    changed = before != after
    assert (changed == np.isin(before, (31, 63))).all() and changed.any()
    assert set(np.unique(after[before == 31]).tolist()) <= {4, 2}  # choroid plexus lies in the lateral ventricle
    assert set(np.unique(after[before == 63]).tolist()) <= {43, 41}
    assert synth.SyntheticCohort(missing_labels=[63, 31, 31]).missing_labels == (31, 63)


@pytest.mark.parametrize(
    ("option", "value", "expected"),
    [
        ("site", 1000, "from 1 to 999 (3 digits of a subject id), or null"),
        ("age_shift", -25.0, "from -20 to 20 (years)"),
        ("head_scale", 1.5, "from 0.5 to 1.25 (a larger head leaves the 256 mm view)"),
        ("cortex_thickening", -1, "0 or more (voxels)"),
        (
            "missing_labels",
            (17,),
            f"ids among {list(synth.MISSABLE_LABELS)} (the structures without a disease effect)",
        ),
    ],
)
def test_a_site_option_that_cannot_work_is_named(option: str, value: object, expected: str) -> None:
    with pytest.raises(OptionError) as refused:
        synth.SyntheticCohort(**{option: value})
    assert str(refused.value) == f"synthetic cohort option {option}={value!r}: it must be {expected}"


def test_no_disease_marker_can_go_missing() -> None:
    markers = {17, 53, 18, 54, 4, 43, 5, 44, 14}  # hippocampus, amygdala, ventricles: the disease effects
    assert not markers & set(synth.MISSABLE_LABELS)
    assert not {0, 2, 41} & set(synth.MISSABLE_LABELS) and max(synth.MISSABLE_LABELS) < 1000


def _run(*args: str) -> None:
    synth_command.main(["--subjects", "3", "--size", "16", "--workers", "1", *args])


def test_synth_preset_and_explicit_options(tmp_path: Path, capsys: pytest.CaptureFixture[str]) -> None:
    _run("--out", str(tmp_path / "preset"), "--preset", "shifted")
    truth = pd.read_csv(tmp_path / "preset" / synth.TRUTH_NAME)
    assert truth["subject"].str.startswith("999_S_").all()
    _run("--out", str(tmp_path / "ref"), "--seed", "1")
    reference = pd.read_csv(tmp_path / "ref" / synth.TRUTH_NAME)  # the preset's seed: the same people
    assert (truth["age"] == (reference["age"] - 6).clip(lower=55)).all() and (reference["age"] < 92).all()

    _run("--out", str(tmp_path / "mixed"), "--site", "7", "--preset", "shifted", "--seed", "3")  # explicit wins
    mixed = pd.read_csv(tmp_path / "mixed" / CSV_NAME, dtype=str)
    _run("--out", str(tmp_path / "seed3"), "--seed", "3")
    seed3 = pd.read_csv(tmp_path / "seed3" / CSV_NAME, dtype=str)
    assert sorted(mixed["Subject"]) == sorted("007" + s[3:] for s in seed3["Subject"])
    assert "wrote 4 images of 3 subjects (CN 1, MCI 1, AD 2)" in capsys.readouterr().out.splitlines()[-1]


def test_synth_refuses_a_bad_site_option_before_writing(tmp_path: Path) -> None:
    with pytest.raises(OptionError) as refused:  # python -m adni_lightning prints it as one line, exit 1
        _run("--out", str(tmp_path / "c"), "--head_scale", "2")
    assert str(refused.value) == (
        "synthetic cohort option head_scale=2.0: it must be from 0.5 to 1.25 (a larger head leaves the 256 mm view)"
    )
    assert not (tmp_path / "c").exists()


def test_a_datamodule_generates_the_shifted_site(tmp_path: Path) -> None:
    from adni_lightning.synth import SyntheticDataModule

    cohort = synth.SyntheticCohort(**{**SHIFTED, "subjects": 3, "size": 16})
    dm = SyntheticDataModule(cohort=cohort, manifest=ManifestSpec(data_dir=str(tmp_path / "site")))
    dm.prepare_cohort()
    truth = pd.read_csv(tmp_path / "site" / synth.TRUTH_NAME)
    assert truth["subject"].str.startswith("999_S_").all() and len(dm.manifest()) == len(truth)


def test_the_shifted_config_is_the_preset(capsys: pytest.CaptureFixture[str]) -> None:
    config = yaml.safe_load((CONFIG_DIR / "synthetic_shifted.yaml").read_text())["data"]["init_args"]
    assert config["cohort"] == {k: list(v) if isinstance(v, tuple) else v for k, v in SHIFTED.items()}
    assert (
        config["manifest"]["data_dir"]
        != yaml.safe_load((CONFIG_DIR / "synthetic.yaml").read_text())["data"]["init_args"]["manifest"]["data_dir"]
    )
    stacked = ["--config", str(CONFIG_DIR / "synthetic.yaml"), "--config", str(CONFIG_DIR / "synthetic_shifted.yaml")]
    with pytest.raises(SystemExit):
        main(["fit", *stacked, "--print_config"])
    printed = yaml.safe_load(capsys.readouterr().out)["data"]["init_args"]["cohort"]
    assert printed == {**printed, **config["cohort"], "subjects": 200, "size": 96}
