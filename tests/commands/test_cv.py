"""``cv``: subject-grouped folds, honest out-of-fold predictions, resumable, and one report however it is run."""

from __future__ import annotations

import os
import shutil
import signal
import subprocess
import sys
import time
from pathlib import Path

import pandas as pd
import pytest
import torch

from adni_lightning.commands.cv import CrossValidationError
from adni_lightning.commands.cv import main as cv_main
from adni_lightning.data.manifest import CSV_NAME
from tests.helpers import TINY

REPO = Path(__file__).resolve().parents[2]


def cv_args(root: Path, cohort: Path, *extra: str, epochs: int = 2) -> list[str]:
    return [
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
        *TINY,
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
        sides = pd.read_csv(root / f"fold_{fold}" / "split.csv", dtype=str)
        val = set(sides.loc[sides["split"] == "val", "image_id"])
        assert val == set(cnn.loc[cnn["fold"] == fold, "image_id"])
        assert not list((root / f"fold_{fold}" / "checkpoints").glob("best-*.ckpt"))  # nothing chosen on the fold
    metrics = pd.read_csv(root / "cv_metrics.csv")
    assert list(metrics.loc[metrics["model"] == "cnn", "fold"].astype(str)) == ["0", "1", "2", "mean", "sd"]
    assert (root / "cv_report.md").read_text().count("last-epoch checkpoint") == 1
    assert (root / "cv_report.png").stat().st_size > 0


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
    fold0 = pd.read_csv(reference / "fold_0" / "split.csv", dtype=str).query("split == 'val'")["image_id"]
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
    (root / "fold_0").mkdir(parents=True)
    shutil.copy(reference / "split.csv", root / "split.csv")  # the same folds, only the labels differ
    shutil.copy(reference / "fold_0" / "split.csv", root / "fold_0" / "split.csv")
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
