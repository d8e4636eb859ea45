"""``cv``: subject-grouped folds, honest out-of-fold predictions, resumable, and one report however it is run."""

from __future__ import annotations

import json
import logging
import os
import re
import shutil
import signal
import subprocess
import sys
import time
from pathlib import Path
from types import SimpleNamespace

import numpy as np
import pandas as pd
import pytest
import torch
import yaml
from matplotlib.image import imread

from adni_lightning.atomic import WriteError
from adni_lightning.commands import cv as cv_command
from adni_lightning.commands.cv import ENSEMBLE, OOF_FILE, CrossValidationError, report
from adni_lightning.data.clinical import TaskSpec
from adni_lightning.data.manifest import CSV_NAME, ManifestSpec, build_manifest
from adni_lightning.data.split import SplitError, SplitSpec, saved_form, split_subjects
from adni_lightning.evaluation.calibration import (
    CalibrationError,
    fit_temperature,
    load_temperature,
    scale_temperature,
)
from adni_lightning.main import main
from tests.commands.test_baseline import score_volumes
from tests.helpers import TINY_CONFIGS, tiny_args


def cv_main(args: list[str]) -> None:
    main(["cv", *args])


def baseline_main(args: list[str]) -> None:
    main(["baseline", *args])


REPO = Path(__file__).resolve().parents[2]


def cv_args(root: Path, cohort: Path, *extra: str, epochs: int = 2) -> list[str]:
    return [
        *TINY_CONFIGS,
        "--root",
        str(root),
        "--bootstrap",
        "200",
        "--trainer.default_root_dir",
        str(root.parent / "run"),
        "--data.manifest.data_dir",
        str(cohort),
        "--data.cache_dir",
        str(root.parent / "cache"),
        "--trainer.max_epochs",
        str(epochs),
        *extra,
    ]


def _weights(path: Path) -> dict[str, torch.Tensor]:
    return torch.load(path, weights_only=False)["state_dict"]


@pytest.fixture(scope="module")
def finished(tmp_path_factory, cohort_template) -> Path:
    """One complete 3-fold cv with a test split, shared by the read-only tests below."""
    base = tmp_path_factory.mktemp("cv")
    cohort = base / "K1data"
    shutil.copytree(cohort_template, cohort)
    cv_main(["--folds", "3", *cv_args(base / "cv", cohort, "--data.split.test_fraction", "0.2")])
    return base


def test_out_of_fold_predictions_cover_every_non_test_image_once(finished):
    root = finished / "cv"
    split = pd.read_csv(root / "split.csv", dtype=str)
    oof = pd.read_csv(root / "oof_predictions.csv", dtype={"image_id": str})
    for model, part in oof.groupby("model"):
        assert sorted(part["image_id"]) == sorted(split.loc[split["split"] != "test", "image_id"]), model
    cnn = oof[oof["model"] == "cnn"]
    held_out = split.set_index("image_id")["fold"].astype(int)
    assert (cnn["fold"] == cnn["image_id"].map(held_out)).all()  # each image predicted by the fold that held it out
    for fold in range(3):
        assert not (root / f"fold_{fold}" / "split.csv").exists()  # every fold reads the one split.csv
        val = set(split.loc[split["fold"] == str(fold), "image_id"])
        assert val == set(cnn.loc[cnn["fold"] == fold, "image_id"])
        assert not list((root / f"fold_{fold}" / "checkpoints").glob("best-*.ckpt"))  # nothing chosen on the fold
    metrics = pd.read_csv(root / "cv_metrics.csv")
    assert list(metrics.loc[metrics["model"] == "cnn", "fold"].astype(str)) == ["0", "1", "2", "mean", "sd"]
    assert (root / "cv_report.md").read_text().count("last-epoch checkpoint") == 1
    assert (root / "cv_report.png").stat().st_size > 0


PROBABILITIES = ["p_CN", "p_MCI", "p_AD"]


def test_the_cnn_and_the_baseline_averaged_are_a_third_model_of_the_report(finished):
    root = finished / "cv"
    oof = pd.read_csv(root / "oof_predictions.csv", dtype={"image_id": str}).set_index(["model", "image_id"])
    members = (oof.loc["cnn", PROBABILITIES] + oof.loc["baseline", PROBABILITIES]) / 2
    ensemble = oof.loc[ENSEMBLE]
    pd.testing.assert_frame_equal(ensemble.loc[members.index, PROBABILITIES], members)
    assert (ensemble["fold"] == oof.loc["cnn"].loc[ensemble.index, "fold"]).all()  # same fold, same training side
    text = (root / "cv_report.md").read_text()
    assert f"## Model `{ENSEMBLE}`" in text and f"| `{ENSEMBLE}` − `baseline` | image |" in text
    test = pd.read_csv(root / "test_metrics.csv")
    assert f"{ENSEMBLE}-ensemble" in set(test["model"])  # on the test split too, the folds' mean


def test_cv_saves_the_temperature_of_all_its_out_of_fold_predictions(finished, capsys):
    root = finished / "cv"
    oof = pd.read_csv(root / "oof_predictions.csv")
    cnn = oof[oof["model"] == "cnn"]
    truth = cnn["group"].map({"CN": 0, "MCI": 1, "AD": 2}).to_numpy()
    saved = json.loads((root / "calibration.json").read_text())
    assert saved["temperature"] == fit_temperature(truth, cnn[PROBABILITIES].to_numpy())
    assert load_temperature(root / "calibration.json", ["CN", "MCI", "AD"]) == saved["temperature"]
    assert saved["n_images"] == len(cnn) and sorted(saved["cross_fitted"]) == ["0", "1", "2"]
    text = (root / "cv_report.md").read_text()
    assert "## Calibration" in text and "| `cnn` | temperature (cross-fitted) |" in text
    assert "| `baseline` | none |" in text


def _predict(out: Path, finished: Path, *extra: str) -> pd.DataFrame:
    main(tiny_args("predict", out, finished / "K1data", "--data.cache_dir", str(finished / "cache"), *extra))
    return pd.read_csv(out / "predictions.csv", dtype={"image_id": str}).set_index("image_id")


def test_predict_with_calibration_scales_the_plain_probabilities(finished, tmp_path, capsys):
    root = finished / "cv"
    calibration = root / "calibration.json"
    temperature = json.loads(calibration.read_text())["temperature"]
    checkpoints = [str(root / f"fold_{k}" / "checkpoints" / "last.ckpt") for k in (0, 1)]
    plain = _predict(tmp_path / "plain", finished, "--ckpt_path", checkpoints[0])
    scaled = _predict(tmp_path / "scaled", finished, "--ckpt_path", checkpoints[0], "--calibration", str(calibration))
    assert f"predict: probabilities scaled with temperature {temperature:.4f} of --calibration {calibration}" in (
        capsys.readouterr().out
    )
    assert "temperature" not in plain.columns
    np.testing.assert_allclose(scaled["temperature"], temperature, atol=1e-6)  # written with 6 decimals
    np.testing.assert_allclose(
        scaled[PROBABILITIES], scale_temperature(plain[PROBABILITIES].to_numpy(), temperature), atol=2e-6
    )
    assert not np.allclose(scaled[PROBABILITIES], plain[PROBABILITIES], atol=1e-3)
    assert scaled["predicted"].equals(plain["predicted"])  # the argmax, hence every argmax metric, is unchanged
    unscaled = scaled.drop(columns=[*PROBABILITIES, "temperature"])
    pd.testing.assert_frame_equal(unscaled, plain.drop(columns=PROBABILITIES))
    by_subject = pd.read_csv(tmp_path / "scaled" / "predictions_by_subject.csv")
    np.testing.assert_allclose(by_subject["temperature"], temperature, atol=1e-6)

    other = _predict(tmp_path / "plain1", finished, "--ckpt_path", checkpoints[1])
    pattern = str(root / "fold_[01]" / "checkpoints" / "last.ckpt")
    ensemble = _predict(tmp_path / "ensemble", finished, "--ckpt_path", pattern, "--calibration", str(calibration))
    members = [scale_temperature(p.loc[ensemble.index, PROBABILITIES].to_numpy(), temperature) for p in (plain, other)]
    np.testing.assert_allclose(ensemble[PROBABILITIES], (members[0] + members[1]) / 2, atol=4e-6)
    np.testing.assert_allclose(ensemble["temperature"], temperature, atol=1e-6)
    assert (ensemble["members"] == 2).all()


def test_predict_refuses_a_calibration_of_other_classes_before_writing(finished, tmp_path):
    path = tmp_path / "calibration.json"
    path.write_text(json.dumps({"temperature": 1.5, "classes": ["CN", "AD"]}))
    checkpoint = str(finished / "cv" / "fold_0" / "checkpoints" / "last.ckpt")
    with pytest.raises(CalibrationError) as refused:
        _predict(tmp_path / "out", finished, "--ckpt_path", checkpoint, "--calibration", str(path))
    assert str(refused.value) == (
        f"--calibration {path}: fitted for classes ['CN', 'AD'], the model predicts ['CN', 'MCI', 'AD']"
    )
    assert not (tmp_path / "out" / "predictions.csv").exists()


def test_test_split_is_scored_by_each_fold_and_by_their_ensemble(finished):
    root = finished / "cv"
    test = pd.read_csv(root / "test_metrics.csv")
    cnn = test[test["model"] == "cnn"]
    assert sorted(cnn["fold"].astype(str)) == ["0", "1", "2"]
    assert "cnn-ensemble" in set(test["model"])
    members = [pd.read_csv(root / f"fold_{k}" / "test_predictions.csv").sort_values("image_id") for k in range(3)]
    assert len(members[0]) == (pd.read_csv(root / "split.csv")["split"] == "test").sum()


def test_held_out_labels_never_choose_the_fold_model(finished, tmp_path):
    """Permute the held-out fold's diagnoses: the model behind its out-of-fold predictions is unchanged."""
    reference = finished / "cv"
    cohort = tmp_path / "K1data"
    shutil.copytree(finished / "K1data", cohort)
    table = pd.read_csv(cohort / CSV_NAME, dtype=str)
    fold0 = pd.read_csv(reference / "split.csv", dtype=str).query("fold == '0'")["image_id"]
    rows = table.index[("I" + table["Image Data ID"].str.lstrip("I")).isin(set(fold0))]
    groups = table.loc[rows, "Group"].tolist()
    permuted = groups[1:] + groups[:1]
    assert permuted != groups
    for row, old, new in zip(rows, groups, permuted):
        name = f"I{table.at[row, 'Image Data ID'].lstrip('I')}.nii_aseg_deep.mgz"
        (cohort / new).mkdir(exist_ok=True)
        shutil.move(cohort / old / name, cohort / new / name)
        table.at[row, "Group"] = new
    table.to_csv(cohort / CSV_NAME, index=False)
    root = tmp_path / "cv"
    root.mkdir()
    shutil.copy(reference / "split.csv", root / "split.csv")  # the same folds, only the labels differ
    cv_main(
        [
            "--folds",
            "3",
            "--fold",
            "0",
            "--no_baseline",
            "true",
            # permuting images' labels gives some subjects visits of two classes: keep each image's own label
            *cv_args(root, cohort, "--data.split.test_fraction", "0.2", "--data.manifest.mixed_groups", "keep"),
        ]
    )
    ours, theirs = (_weights(r / "fold_0" / "checkpoints" / "last.ckpt") for r in (root, reference))
    assert ours.keys() == theirs.keys()
    assert all(torch.equal(ours[k], theirs[k]) for k in ours)


def test_single_folds_then_aggregation_give_the_same_report(finished, tmp_path):
    root = tmp_path / "cv"
    for fold in (2, 0, 1):
        cv_main(
            [
                "--folds",
                "3",
                "--fold",
                str(fold),
                *cv_args(root, finished / "K1data", "--data.split.test_fraction", "0.2"),
            ]
        )
        if fold == 2:
            assert "folds 0, 1 are not finished" in (root / "cv_report.md").read_text()
    ours = pd.read_csv(root / "cv_metrics.csv")
    theirs = pd.read_csv(finished / "cv" / "cv_metrics.csv")
    pd.testing.assert_frame_equal(ours, theirs)
    assert (root / "cv_report.md").read_text() == (finished / "cv" / "cv_report.md").read_text()


def test_too_many_folds_and_a_foreign_configuration_are_refused(finished, tmp_path):
    cohort = finished / "K1data"
    with pytest.raises(ValueError, match=r"30 folds need at least 30 non-test subjects per group.*AD \d+"):
        cv_main(["--folds", "30", *cv_args(tmp_path / "cv", cohort)])
    with pytest.raises(CrossValidationError, match="another configuration .*data.*preprocessing.*image_size"):
        cv_main(
            [
                "--folds",
                "3",
                *cv_args(
                    finished / "cv",
                    cohort,
                    "--data.split.test_fraction",
                    "0.2",
                    "--data.preprocessing.image_size",
                    "12",
                ),
            ]
        )


@pytest.mark.slow
def test_killed_cv_skips_finished_folds_and_resumes_the_interrupted_one(cohort, tmp_path):
    root = tmp_path / "cv"
    command = [
        sys.executable,
        "-m",
        "adni_lightning",
        "cv",
        "--folds",
        "2",
        "--no_baseline",
        "true",
        *cv_args(root, cohort, epochs=8),
    ]
    process = subprocess.Popen(
        command,
        cwd=REPO,
        stdout=subprocess.DEVNULL,
        stderr=subprocess.DEVNULL,
        env={**os.environ, "PYTHONPATH": str(REPO)},
    )
    interrupted = root / "fold_1" / "checkpoints" / "last.ckpt"
    deadline = time.monotonic() + 300
    while not interrupted.exists() and process.poll() is None and time.monotonic() < deadline:
        time.sleep(0.05)
    process.send_signal(signal.SIGKILL)
    process.wait()
    assert (root / "fold_0" / "oof_predictions.csv").exists() and not (root / "fold_1" / "oof_predictions.csv").exists()
    finished_fold = (root / "fold_0" / "oof_predictions.csv").stat().st_mtime_ns
    epoch_at_kill = torch.load(interrupted, weights_only=False)["epoch"]
    assert epoch_at_kill < 7
    cv_main(["--folds", "2", "--no_baseline", "true", *cv_args(root, cohort, epochs=8)])
    assert (root / "fold_0" / "oof_predictions.csv").stat().st_mtime_ns == finished_fold  # skipped
    resumed = torch.load(interrupted, weights_only=False)
    assert resumed["epoch"] == 7
    reference = tmp_path / "reference"
    cv_main(["--folds", "2", "--no_baseline", "true", "--fold", "1", *cv_args(reference, cohort, epochs=8)])
    ours, theirs = _weights(interrupted), _weights(reference / "fold_1" / "checkpoints" / "last.ckpt")
    assert all(torch.equal(ours[k], theirs[k]) for k in ours)  # the resumed fold ends where an uninterrupted one does


def test_repeats_draw_new_folds_and_summarise_the_spread(cohort, tmp_path):
    root = tmp_path / "cv"
    cv_main(["--folds", "2", "--repeats", "2", "--no_baseline", "true", *cv_args(root, cohort, epochs=1)])
    first, second = (pd.read_csv(root / f"repeat_{r}" / "split.csv").set_index("image_id")["fold"] for r in (0, 1))
    assert not first.equals(second.loc[first.index])  # another seed, other folds
    table = pd.read_csv(root / "repeats.csv")
    assert list(table["repeat"]) == [0, 1] and set(table["model"]) == {"cnn"}
    summary = pd.read_csv(root / "repeats_summary.csv").set_index("model")
    assert summary.at["cnn", "bacc_mean"] == pytest.approx(table["bacc"].mean(), abs=1e-4)
    assert summary.at["cnn", "bacc_std"] == pytest.approx(table["bacc"].std(ddof=1), abs=1e-4)


def _reddish_rows(png: Path) -> int:
    """Rows of ``png`` holding caption-red pixels (the report's figure is otherwise blue, black and white)."""
    image = imread(png)[..., :3]
    red = (image[..., 0] > 0.55) & (image[..., 1] < 0.3) & (image[..., 2] < 0.3)
    return int(red.any(axis=1).sum())


def test_report_only_trains_nothing_and_marks_the_missing_folds_in_every_file(finished, tmp_path, capsys):
    root = tmp_path / "cv"
    shutil.copytree(finished / "cv", root)
    (root / "fold_1" / "oof_predictions.csv").unlink()  # fold 1 interrupted, fold 2 never started
    shutil.rmtree(root / "fold_2")
    for name in ("cv_metrics.csv", "test_metrics.csv", "cv_report.md", "cv_report.png", "oof_predictions.csv"):
        (root / name).unlink()
    last = root / "fold_1" / "checkpoints" / "last.ckpt"
    stamp = last.stat().st_mtime_ns
    args = cv_args(root, finished / "K1data", "--data.split.test_fraction", "0.2")
    same = ["--data.cache_dir", str(finished / "cache"), "--trainer.default_root_dir", str(finished / "run")]
    cv_main(["--folds", "3", "--report_only", "true", *args, *same])  # the configuration of the copied folds
    assert not (root / "fold_2").exists() and last.stat().st_mtime_ns == stamp  # nothing trained
    assert not (root / "fold_1" / "oof_predictions.csv").exists()
    assert (
        capsys.readouterr().out.splitlines()[-1] == f"cv: report in {root / 'cv_report.md'} (folds [1, 2] not finished)"
    )
    note = "over the finished folds only: folds 1, 2 are not finished"
    metrics = pd.read_csv(root / "cv_metrics.csv", keep_default_na=False)
    for model in ("cnn", "baseline", ENSEMBLE):
        rows = metrics[metrics["model"] == model]
        assert rows["fold"].tolist() == ["0", "1", "2", "mean", "sd"]
        assert rows["note"].tolist() == ["", "not finished", "not finished", note, note]
    test = pd.read_csv(root / "test_metrics.csv", keep_default_na=False)
    assert test.loc[test["model"] == "cnn", ["fold", "note"]].values.tolist() == [
        ["0", ""],
        ["1", "not finished"],
        ["2", "not finished"],
    ]
    assert set(test.loc[test["model"].str.endswith("-ensemble"), "note"]) == {note}
    text = (root / "cv_report.md").read_text()
    assert "> **folds 1, 2 are not finished: these figures cover folds 0 only.**" in text
    assert _reddish_rows(root / "cv_report.png") > 5 and _reddish_rows(finished / "cv" / "cv_report.png") == 0
    calibration = pd.read_csv(root / "cv_calibration.csv")
    assert set(calibration["model"]) == {"cnn", "baseline", ENSEMBLE} and set(calibration["note"]) == {note}
    assert "Temperature scaling of `cnn` needs two finished folds to be cross-fitted: not shown." in text
    assert "the finished folds only: folds 1, 2 are not finished), is saved in `calibration.json`" in text
    fitted_on = json.loads((root / "calibration.json").read_text())["fitted_on"]
    assert fitted_on == "cv out-of-fold predictions of cnn, folds 0"
    assert _reddish_rows(root / "cv_reliability.png") > 5 and _reddish_rows(finished / "cv" / "cv_reliability.png") == 0


def test_report_only_needs_folds_and_takes_no_fold(tmp_path, cohort):
    root = tmp_path / "cv"
    with pytest.raises(CrossValidationError) as refused:
        cv_main(["--folds", "3", "--report_only", "true", *cv_args(root, cohort)])
    assert str(refused.value) == (
        f"cv --report_only: {root / 'split.csv'} not found: no fold of a cross-validation has run in {root}; run its "
        "folds first (cv --fold K), or pass the --root they ran in"
    )
    assert list(root.iterdir()) == []
    with pytest.raises(CrossValidationError) as refused:
        cv_main(["--folds", "3", "--report_only", "true", "--fold", "1", *cv_args(root, cohort)])
    assert str(refused.value) == "cv: --report_only trains nothing, so --fold 1 has no meaning: pass one of them"


def test_a_root_that_is_a_file_is_one_line(tmp_path, cohort):
    taken = tmp_path / "cv"
    taken.write_text("a user's file")
    with pytest.raises(WriteError) as refused:
        cv_main(["--folds", "3", *cv_args(taken, cohort)])
    assert str(refused.value) == f"--root {taken} is a file, not a folder: pass a folder (it is created if missing)"
    assert taken.read_text() == "a user's file"


def test_baseline_reuses_the_split_of_cv_with_its_options(finished, tmp_path, caplog):
    root = finished / "cv"
    saved = (root / "split.csv").read_bytes(), (root / "split.json").read_bytes()
    base = [*TINY_CONFIGS, "--root", str(root), "--data.manifest.data_dir", str(finished / "K1data")]
    base += ["--data.cache_dir", str(finished / "cache"), "--data.split.test_fraction", "0.2", "--folds", "3"]
    with caplog.at_level(logging.INFO, logger="adni_lightning"):
        baseline_main(base)
    assert "has no split.json" not in caplog.text
    assert ((root / "split.csv").read_bytes(), (root / "split.json").read_bytes()) == saved


def test_concurrent_fold_processes_share_one_split_and_configuration(cohort, tmp_path):
    """Two ``cv --fold K`` processes on one root, started together as a SLURM array would."""
    root = tmp_path / "cv"
    command = [sys.executable, "-m", "adni_lightning", "cv", "--folds", "2", "--no_baseline", "true"]
    env = {**os.environ, "PYTHONPATH": str(REPO), "OMP_NUM_THREADS": "1"}
    processes = [
        subprocess.Popen(
            [*command, "--fold", str(fold), *cv_args(root, cohort, epochs=1)],
            cwd=REPO,
            env=env,
            stdout=subprocess.DEVNULL,
            stderr=subprocess.PIPE,
            text=True,
        )
        for fold in (0, 1)
    ]
    errors = [process.communicate(timeout=300)[1] for process in processes]
    assert [process.returncode for process in processes] == [0, 0], errors
    assert not [p.name for p in root.rglob("*.tmp")]
    spec = SplitSpec(folds=2, fold=0)
    expected = saved_form(split_subjects(build_manifest(ManifestSpec(data_dir=cohort)), spec))
    pd.testing.assert_frame_equal(pd.read_csv(root / "split.csv", dtype={"image_id": str, "subject": str}), expected)
    assert json.loads((root / "split.json").read_text()) == spec.options()
    assert yaml.safe_load((root / "cv_config.yaml").read_text())["folds"] == 2
    cv_main(["--folds", "2", "--no_baseline", "true", "--report_only", "true", *cv_args(root, cohort, epochs=1)])
    metrics = pd.read_csv(root / "cv_metrics.csv", keep_default_na=False)
    assert metrics["fold"].tolist() == ["0", "1", "mean", "sd"] and set(metrics["note"]) == {""}


def test_a_fold_stopped_after_training_writes_its_predictions_on_the_next_run(cohort, tmp_path):
    """The fold's last.ckpt has all its epochs but no out-of-fold file: the rerun predicts without training."""
    args = ["--folds", "3", "--fold", "0", *cv_args(tmp_path / "cv", cohort)]
    cv_main(args)
    fold = tmp_path / "cv" / "fold_0"
    written = pd.read_csv(fold / OOF_FILE)
    (fold / OOF_FILE).unlink()
    before = (fold / "checkpoints" / "last.ckpt").read_bytes()
    cv_main(args)
    assert (fold / "checkpoints" / "last.ckpt").read_bytes() == before
    pd.testing.assert_frame_equal(pd.read_csv(fold / OOF_FILE), written)


def test_a_fold_trained_with_other_torch_threads_is_named(tmp_path, caplog):
    """CPU kernels split their sums by thread: a fold run with other threads cannot be bit-identical to it."""
    from adni_lightning.commands.cv import _check_threads

    (tmp_path / "fold_1").mkdir()
    theirs = torch.get_num_threads() + 1
    (tmp_path / "fold_1" / "environment.json").write_text(json.dumps({"torch": {"threads": theirs}}))
    with caplog.at_level("WARNING", logger="adni_lightning.commands.cv"):
        _check_threads(tmp_path, 3)
    assert caplog.messages == [
        f"cv: this process trains with {torch.get_num_threads()} torch thread(s), fold 1 trained with {theirs} "
        f"({tmp_path / 'fold_1' / 'environment.json'}): its weights will not be bit-identical to a run with {theirs}; "
        f"set OMP_NUM_THREADS={theirs} to match"
    ]
    caplog.clear()
    (tmp_path / "fold_1" / "environment.json").write_text(json.dumps({"torch": {"threads": torch.get_num_threads()}}))
    _check_threads(tmp_path, 3)
    assert not caplog.messages


@pytest.mark.slow
def test_each_fold_of_a_full_cv_is_the_fold_run_alone(cohort, tmp_path):
    """The same split file, the same weights bit for bit (at the same torch threads: see _check_threads)."""
    same = ["--folds", "3", "--no_baseline", "true", "--bootstrap", "50", "--data.split.test_fraction", "0.2"]
    alone, full = tmp_path / "alone" / "cv", tmp_path / "full" / "cv"
    cv_main([*same, "--fold", "2", *cv_args(alone, cohort, epochs=1)])  # first in this process: nothing ran before
    cv_main([*same, *cv_args(full, cohort, epochs=1)])  # fold 2 last, after two folds and their predictions
    assert (alone / "split.csv").read_bytes() == (full / "split.csv").read_bytes()
    assert not list(full.glob("fold_*/split.csv"))  # a fold reads the one file by its index
    ours, theirs = (_weights(root / "fold_2" / "checkpoints" / "last.ckpt") for root in (full, alone))
    assert ours.keys() == theirs.keys() and all(torch.equal(ours[k], theirs[k]) for k in ours)
    for name in ("oof_predictions.csv", "test_predictions.csv"):
        pd.testing.assert_frame_equal(pd.read_csv(full / "fold_2" / name), pd.read_csv(alone / "fold_2" / name))
    first = _weights(full / "fold_0" / "checkpoints" / "last.ckpt")
    assert not all(torch.equal(first[k], ours[k]) for k in ours)  # the folds did train on different sides


@pytest.mark.parametrize(
    ("options", "message"),
    [
        (["--folds", "1"], "cv: --folds must be at least 2, got 1"),
        (["--folds", "3", "--fold", "3"], "cv: --fold 3 is not in [0, 3)"),
        (["--repeats", "0"], "cv: --repeats must be at least 1, got 0"),
        (["--bootstrap", "0"], "cv: --bootstrap must be at least 1 (resamples for the CIs), got 0"),
        (["--report_only", "true", "--fold", "1"], "cv: --report_only trains nothing, so --fold 1 has no meaning"),
    ],
)
def test_impossible_options_are_refused_before_anything_is_written(options, message, cohort, tmp_path):
    with pytest.raises(CrossValidationError, match=re.escape(message)):
        cv_main([*cv_args(tmp_path / "cv", cohort), *options])
    assert not (tmp_path / "cv").exists() and not (tmp_path / "run").exists()


def test_baseline_needs_two_folds(cohort, tmp_path):
    with pytest.raises(SplitError, match=re.escape("--folds 1: cross-validation needs at least 2 folds")):
        main(tiny_args("baseline", tmp_path / "run", cohort, "--folds", "1", "--root", str(tmp_path / "cv")))
    assert not (tmp_path / "cv").exists()


def test_a_score_task_gets_the_regression_report_with_the_ridge_baseline(tmp_path, monkeypatch, capsys):
    """Folds that predict a score (no ``p_`` columns): regression metrics for the CNN, the ridge baseline on the same
    folds and their mean, paired differences, the test split, a scatter, and no calibration.
    """
    volumes, split = score_volumes()
    rng = np.random.default_rng(0)
    volumes["group"] += rng.normal(0, 1, len(volumes))  # a part of the score that the volumes do not show
    monkeypatch.setattr(cv_command, "regional_volumes", lambda manifest, cache: volumes)
    dm = SimpleNamespace(task=TaskSpec(label="score", column="MMSE"), cache=None, split_spec=SplitSpec())
    score = volumes.set_index("image_id")["group"]
    columns = ["image_id", "subject", "group", "split"]
    for fold in range(3):
        for side, name, rows in (
            ("val", OOF_FILE, split[split["fold"] == fold]),
            ("test", "test_predictions.csv", split[split["split"] == "test"]),
        ):
            truth = score[rows["image_id"]].to_numpy()
            frame = rows[columns].assign(
                group="MCI", split=side, target=truth, prediction=truth + rng.normal(0, 0.1, len(truth))
            )
            (tmp_path / f"fold_{fold}").mkdir(exist_ok=True)
            frame.to_csv(tmp_path / f"fold_{fold}" / name, index=False)
    manifest = volumes[["image_id", "subject", "visit"]]
    report(tmp_path, manifest, split, [], 3, True, 40, dm)

    assert "temperature" not in capsys.readouterr().out
    assert not (tmp_path / "calibration.json").exists() and not (tmp_path / "cv_calibration.csv").exists()
    assert (tmp_path / "cv_scatter.png").is_file()
    metrics = pd.read_csv(tmp_path / "cv_metrics.csv")
    assert sorted(metrics["model"].unique()) == ["baseline", "cnn", ENSEMBLE]
    assert ["mae", "rmse", "r2", "r"] == [c for c in metrics.columns if c in ("mae", "rmse", "r2", "r")]
    oof = pd.read_csv(tmp_path / "oof_predictions.csv", dtype={"image_id": str}).set_index(["model", "image_id"])
    members = (oof.loc["cnn", "prediction"] + oof.loc["baseline", "prediction"]) / 2
    pd.testing.assert_series_equal(oof.loc[ENSEMBLE, "prediction"].loc[members.index], members)
    assert len(members) == (split["split"] != "test").sum()
    text = (tmp_path / "cv_report.md").read_text()
    assert "Regression of MMSE." in text and f"## Model `{ENSEMBLE}`" in text
    assert "| `cnn` − `baseline` | image |" in text and f"| `{ENSEMBLE}` − `baseline` | image |" in text
    assert "- baseline: ridge regression of MMSE on ICV-normalised regional volumes + age + sex" in text
    assert f"- {ENSEMBLE}: the mean of the `cnn` model's and the baseline's predictions" in text
    assert "- No calibration section and no temperature" in text and "## Calibration" not in text
    cnn_mae = metrics.loc[(metrics["model"] == "cnn") & (metrics["fold"] == "mean"), "mae"].item()
    baseline_mae = metrics.loc[(metrics["model"] == "baseline") & (metrics["fold"] == "mean"), "mae"].item()
    assert cnn_mae < 0.2 < 0.5 < baseline_mae  # the CNN's predictions are the truth plus a little noise

    test = pd.read_csv(tmp_path / "test_metrics.csv")
    models = ["baseline", "cnn", ENSEMBLE]
    assert sorted(test["model"].unique()) == sorted([*models, *(f"{m}-ensemble" for m in models)])
    cnn_test = (
        pd.concat([pd.read_csv(tmp_path / f"fold_{k}" / "test_predictions.csv") for k in range(3)])
        .groupby("image_id")[["target", "prediction"]]
        .mean()
    )
    row = test[test["model"] == "cnn-ensemble"].iloc[0]
    assert row["mae"] == pytest.approx(np.abs(cnn_test["prediction"] - cnn_test["target"]).mean(), abs=1e-4)
    assert {"mae_ci", "rmse_ci", "r2_ci", "r_ci"} <= set(test.columns)
