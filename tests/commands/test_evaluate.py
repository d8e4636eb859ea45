"""``evaluate``: another cohort scored with a checkpoint or an ensemble; its report is metrics.py's figures on its
predictions; a temperature is loaded, never fitted; the refusals come before anything is written.
"""

from __future__ import annotations

import shutil
import sys
from pathlib import Path

import numpy as np
import pandas as pd
import pytest
import torch

from adni_lightning.checkpoint import CheckpointError
from adni_lightning.data.contract import SUMMARY_KEY
from adni_lightning.data.manifest import CSV_NAME
from adni_lightning.evaluation.calibration import (
    CalibrationError,
    calibration_metrics,
    save_temperature,
    scale_temperature,
)
from adni_lightning.evaluation.external import FILES, NO_SUMMARY, EvaluationError
from adni_lightning.evaluation.metrics import (
    bootstrap_samples,
    frame_metrics,
    interval_table,
    metric_names,
    subject_level,
)
from adni_lightning.main import PROG, main, run_from_command_line
from adni_lightning.synth import generate_cohort
from tests.helpers import TINY_CONFIGS, trained_run

CLASSES = ["CN", "MCI", "AD"]
PROBS = [f"p_{c}" for c in CLASSES]
RESAMPLES = 50


def evaluate_args(root: Path, cohort: Path, ckpt: str | Path, *extra: str) -> list[str]:
    return [
        "evaluate",
        *TINY_CONFIGS,
        "--ckpt_path",
        str(ckpt),
        "--root",
        str(root),
        "--bootstrap",
        str(RESAMPLES),
        "--data.manifest.data_dir",
        str(cohort),
        "--data.cache_dir",
        str(root.parent / f"cache-{cohort.name}"),
        *extra,
    ]


def _predictions(root: Path) -> pd.DataFrame:
    return pd.read_csv(root / FILES["predictions"], dtype={"image_id": str, "subject": str, "site": str})


def _metrics(root: Path) -> pd.DataFrame:
    return pd.read_csv(root / FILES["metrics"]).set_index(["level", "metric"])


@pytest.fixture(scope="module")
def setup(tmp_path_factory, cohort_template) -> dict[str, Path]:
    """A tiny trained run, another cohort (other subjects, another seed), a temperature file, and one evaluation."""
    base = tmp_path_factory.mktemp("evaluate")
    paths = trained_run(base, cohort_template)
    paths["external"] = base / "external"
    generate_cohort(paths["external"], subjects=12, size=32, seed=11, workers=1)
    paths["calibration"] = base / "calibration.json"
    save_temperature(paths["calibration"], 2.5, CLASSES, "other predictions", 40)
    paths["plain"] = base / "plain"
    main(evaluate_args(paths["plain"], paths["external"], paths["ckpt"]))
    paths["scaled"] = base / "scaled"
    main(evaluate_args(paths["scaled"], paths["external"], paths["ckpt"], "--calibration", str(paths["calibration"])))
    return paths


def test_the_report_holds_metrics_py_figures_on_its_own_predictions(setup):
    root = setup["plain"]
    assert sorted(p.name for p in root.iterdir()) == sorted(FILES.values())  # no scratch folder left
    frame = _predictions(root).assign(model="cnn", fold=0)
    truth = pd.read_csv(setup["external"] / CSV_NAME, dtype=str)
    assert sorted(frame["image_id"]) == sorted("I" + truth["Image Data ID"].str.lstrip("I"))
    metrics = _metrics(root)
    for level, part in (("image", frame), ("subject", subject_level(frame, CLASSES))):
        expected = interval_table(frame_metrics(part, CLASSES), bootstrap_samples(part, CLASSES, RESAMPLES, 0))
        got = metrics.loc[level].loc[expected["metric"]].reset_index()
        pd.testing.assert_frame_equal(got[expected.columns], expected, check_dtype=False)
    report = (root / FILES["report"]).read_text()
    bacc = metrics.loc[("image", "bacc")]
    assert f"| balanced accuracy | {bacc['estimate']:.3f} [{bacc['ci_low']:.3f}, {bacc['ci_high']:.3f}]" in report
    sites = frame.assign(site=frame["subject"].str[:3])
    for site, part in sites.groupby("site"):
        assert metrics.loc[(f"site {int(site):03d}", "n_images"), "estimate"] == len(part)
        assert metrics.loc[(f"site {int(site):03d}", "bacc"), "estimate"] == frame_metrics(part, CLASSES)["bacc"]


def test_the_contract_records_the_training_side_and_the_report_sets_the_cohort_beside_it(setup):
    summary = torch.load(setup["ckpt"], weights_only=True)["data"][SUMMARY_KEY]
    split = pd.read_csv(setup["run"] / "split.csv", dtype=str)
    train = split[split["split"] == "train"]
    assert summary["images"] == {c: int((train["group"] == c).sum()) for c in CLASSES}
    assert summary["subjects"] == train["subject"].nunique()
    truth = pd.read_csv(setup["cohort"] / CSV_NAME, dtype={"Image Data ID": str}).set_index("Image Data ID")
    assert summary["age_mean"] == pytest.approx(truth.loc[train["image_id"], "Age"].astype(float).mean())
    assert {"Left-Hippocampus", "Right-Lateral-Ventricle"} <= set(summary["volumes"])
    report = (setup["plain"] / FILES["report"]).read_text()
    counts = " / ".join(str(summary["images"][c]) for c in CLASSES)
    assert (
        f"| training | {counts} | {summary['subjects']} | {summary['age_mean']:.1f} ± {summary['age_sd']:.1f} |"
        in report
    )
    assert "The 5 structures whose volume" in report and NO_SUMMARY not in report


def test_a_temperature_changes_calibration_as_scale_temperature_says_and_no_argmax_metric(setup):
    plain, scaled = _metrics(setup["plain"]), _metrics(setup["scaled"])
    frame = _predictions(setup["scaled"])
    y = frame["group"].map({c: i for i, c in enumerate(CLASSES)}).to_numpy()
    proba = frame[PROBS].to_numpy()
    expected = calibration_metrics(y, scale_temperature(proba, 2.5))
    for name in ("ece", "brier", "nll"):
        assert scaled.loc[("image", f"{name}_scaled"), "estimate"] == pytest.approx(expected[name], abs=1e-12)
        assert scaled.loc[("image", name), "estimate"] == plain.loc[("image", name), "estimate"]
    assert scaled.loc[("image", "brier_scaled"), "estimate"] != scaled.loc[("image", "brier"), "estimate"]
    assert scaled.loc[("image", "temperature"), "estimate"] == 2.5
    classification = [key for key in plain.index if key[0] in ("image", "subject") and key[1] in metric_names(CLASSES)]
    assert len(classification) == 2 * len(metric_names(CLASSES))
    pd.testing.assert_frame_equal(scaled.loc[classification], plain.loc[classification])
    assert (frame[[f"scaled_{c}" for c in PROBS]].to_numpy().argmax(axis=1) == proba.argmax(axis=1)).all()
    assert "after (T = 2.500)" in (setup["scaled"] / FILES["report"]).read_text()
    assert (setup["scaled"] / FILES["figure"]).read_bytes()[:4] == b"\x89PNG"


def _relabelled(source: Path, target: Path) -> Path:
    """A copy of ``source`` whose subjects each take the next subject's group (files moved to match)."""
    shutil.copytree(source, target)
    table = pd.read_csv(target / CSV_NAME, dtype=str)
    subjects = sorted(table["Subject"].unique())
    group = table.drop_duplicates("Subject").set_index("Subject")["Group"]
    moved = dict(zip(subjects, group.loc[subjects[1:] + subjects[:1]]))
    for row in table.itertuples():
        new = moved[row.Subject]
        (target / new).mkdir(exist_ok=True)
        name = f"{row._1}.nii_aseg_deep.mgz"
        (target / row.Group / name).rename(target / new / name)
    table["Group"] = table["Subject"].map(moved)
    table.to_csv(target / CSV_NAME, index=False)
    return target


def test_the_cohorts_labels_fit_nothing(setup, tmp_path):
    permuted = _relabelled(setup["external"], tmp_path / "permuted")
    root = tmp_path / "out"
    main(evaluate_args(root, permuted, setup["ckpt"], "--calibration", str(setup["calibration"])))
    before = _predictions(setup["scaled"]).sort_values("image_id", ignore_index=True)
    after = _predictions(root).sort_values("image_id", ignore_index=True)
    assert (before["group"] != after["group"]).any()
    columns = [*PROBS, *(f"scaled_{c}" for c in PROBS)]
    assert np.array_equal(before[columns].to_numpy(), after[columns].to_numpy())
    assert _metrics(root).loc[("image", "temperature"), "estimate"] == 2.5


@pytest.mark.filterwarnings("ignore:The dirpath has changed")  # copied checkpoints: saved from another folder
def test_an_ensembles_probabilities_are_the_mean_of_its_members(setup, tmp_path):
    members = tmp_path / "members"
    (members / "m0").mkdir(parents=True)
    shutil.copy(setup["ckpt"], members / "m0" / "last.ckpt")
    checkpoint = torch.load(setup["ckpt"], weights_only=True)
    checkpoint["state_dict"]["net.classifier.bias"] += torch.tensor([1.0, 0.0, -1.0])
    (members / "m1").mkdir()
    torch.save(checkpoint, members / "m1" / "last.ckpt")
    main(evaluate_args(tmp_path / "m1", setup["external"], members / "m1" / "last.ckpt"))
    main(evaluate_args(tmp_path / "both", setup["external"], members / "m*" / "last.ckpt"))
    first, second = (_predictions(p).set_index("image_id")[PROBS] for p in (setup["plain"], tmp_path / "m1"))
    ensemble = _predictions(tmp_path / "both").set_index("image_id")[PROBS]
    assert not np.allclose(first, second.loc[first.index], atol=1e-3)
    np.testing.assert_allclose(ensemble.loc[first.index], (first + second.loc[first.index]) / 2, atol=3e-6)
    assert "the mean probability of 2 checkpoints" in (tmp_path / "both" / FILES["report"]).read_text()


@pytest.mark.filterwarnings("ignore:The dirpath has changed")  # copied checkpoints: saved from another folder
def test_an_old_checkpoint_without_a_summary_still_evaluates(setup, tmp_path, capsys):
    checkpoint = torch.load(setup["ckpt"], weights_only=True)
    del checkpoint["data"][SUMMARY_KEY]
    checkpoint["data"]["version"] = 1
    old = tmp_path / "old.ckpt"
    torch.save(checkpoint, old)
    main(evaluate_args(tmp_path / "out", setup["external"], old))
    assert f"evaluate: {NO_SUMMARY}: the report shows this cohort alone" in capsys.readouterr().out
    report = (tmp_path / "out" / FILES["report"]).read_text()
    assert f"{NO_SUMMARY}: this cohort alone is shown." in report and "| training |" not in report
    pd.testing.assert_frame_equal(_predictions(tmp_path / "out"), _predictions(setup["plain"]))


def _with_smc(source: Path, target: Path) -> tuple[Path, int]:
    """A copy of ``source`` whose first subject is in group SMC; returns it and that subject's image count."""
    shutil.copytree(source, target)
    table = pd.read_csv(target / CSV_NAME, dtype=str)
    first = table["Subject"] == table["Subject"].iloc[0]
    (target / "SMC").mkdir()
    for row in table[first].itertuples():
        name = f"{row._1}.nii_aseg_deep.mgz"
        (target / row.Group / name).rename(target / "SMC" / name)
    table.loc[first, "Group"] = "SMC"
    table.to_csv(target / CSV_NAME, index=False)
    return target, int(first.sum())


def _refusals(setup: dict[str, Path], tmp_path: Path) -> list[tuple[list[str], type, str]]:
    ckpt, external, root = setup["ckpt"], setup["external"], tmp_path / "out"
    nowhere = str(tmp_path / "nowhere" / "*.ckpt")
    other = tmp_path / "other.json"
    save_temperature(other, 1.5, ["CN", "AD"], "elsewhere", 10)
    smc, n_smc = _with_smc(external, tmp_path / "smc")
    return [
        (
            evaluate_args(root, external, nowhere),
            CheckpointError,
            f"--ckpt_path {nowhere}: no file matches this pattern (relative to {Path.cwd()}); check the folder, or "
            "pass each checkpoint with its own --ckpt_path",
        ),
        (
            evaluate_args(root, external, ckpt, "--calibration", str(other)),
            CalibrationError,
            f"--calibration {other}: fitted for classes ['CN', 'AD'], the model predicts ['CN', 'MCI', 'AD']",
        ),
        (
            evaluate_args(root, external, ckpt, "--data.tabular.volumes", "[Left-Hippocampus]"),
            EvaluationError,
            f"the cohort would be read otherwise than {ckpt} was trained on: data.tabular.volumes: checkpoint "
            "['Left-Hippocampus', 'Right-Hippocampus', 'Left-Amygdala', 'Right-Amygdala', 'Left-Lateral-Ventricle', "
            "'Right-Lateral-Ventricle', 'Left-Inf-Lat-Vent', 'Right-Inf-Lat-Vent'], config ['Left-Hippocampus']; pass "
            "the checkpoint's values (its training config) for these options",
        ),
        (
            evaluate_args(root, smc, ckpt, "--data.manifest.classes", "[CN, MCI, AD, SMC]"),
            EvaluationError,
            f"{smc / CSV_NAME}: the cohort's class(es) ['SMC'] ({n_smc} images) are not among the classes "
            f"['CN', 'MCI', 'AD'] that {ckpt} predicts: map them with data.manifest.group_map (null leaves them out)",
        ),
    ]


def test_refusals_are_one_line_before_anything_is_written(setup, tmp_path):
    for args, error, message in _refusals(setup, tmp_path):
        with pytest.raises(error) as refused:
            main(args)
        assert str(refused.value) == message
        assert not (tmp_path / "out").exists()


def test_a_refusal_on_the_command_line_exits_1_with_its_line(setup, tmp_path, monkeypatch, capsys):
    args, _, message = _refusals(setup, tmp_path)[3]
    monkeypatch.setattr(sys, "argv", [PROG, *args])
    with pytest.raises(SystemExit) as exit_:
        run_from_command_line()
    assert exit_.value.code == 1
    assert capsys.readouterr().err.splitlines()[-1] == f"{PROG} evaluate: error: {message}"
    assert not (tmp_path / "out").exists()


def test_a_checkpoint_s_preprocessing_is_taken_as_by_every_scoring_command(setup, tmp_path, capsys):
    """The one rule: the cohort is read as the checkpoint was trained (here 16³, the config says 8³)."""
    root = tmp_path / "adopted"
    main(evaluate_args(root, setup["external"], setup["ckpt"], "--data.preprocessing.image_size", "8"))
    assert "evaluate: data.preprocessing.image_size 16 taken from the checkpoint (the config says 8)" in (
        capsys.readouterr().out.splitlines()
    )
    pd.testing.assert_frame_equal(_predictions(root), _predictions(setup["plain"]))
