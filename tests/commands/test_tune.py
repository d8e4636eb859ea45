"""``tune``: a search scored on training subjects only, a nested estimate, and workers that die and resume."""

from __future__ import annotations

import os
import shutil
import signal
import subprocess
import sys
import time
from pathlib import Path

import optuna
import pandas as pd
import pytest
import yaml
from optuna.trial import TrialState

from adni_lightning.commands.tune import TuneError
from adni_lightning.data.manifest import CSV_NAME
from adni_lightning.main import main
from adni_lightning.run import Run
from adni_lightning.study import FOLDER, RETRY_OF, StudyError, open_storage
from tests.helpers import TINY_CONFIGS

REPO = Path(__file__).resolve().parents[2]
SPACE = """
model.optimizer.init_args.lr: {low: 1.0e-3, high: 1.0e-2, log: true}
data.tabular.volumes: {choices: [[], [Left-Hippocampus, Right-Hippocampus]]}
"""


def tune_args(base: Path, cohort: Path, *extra: str, epochs: int = 1) -> list[str]:
    space = base / "space.yaml"
    space.write_text(SPACE)
    return [
        "tune",
        *TINY_CONFIGS,
        "--space",
        str(space),
        "--root",
        str(base / "tune"),
        "--inner_folds",
        "2",
        "--threads",
        "1",
        "--bootstrap",
        "50",
        "--trainer.default_root_dir",
        str(base / "run"),
        "--data.manifest.data_dir",
        str(cohort),
        "--data.cache_dir",
        str(base / "cache"),
        "--trainer.max_epochs",
        str(epochs),
        *extra,
    ]


def _study(root: Path, name: str) -> list[optuna.trial.FrozenTrial]:
    return optuna.load_study(study_name=name, storage=open_storage(None, root)).trials


@pytest.mark.slow
def test_a_search_keeps_its_choice_and_refuses_another_search_in_its_folder(cohort, tmp_path):
    main(tune_args(tmp_path, cohort, "--trials", "2"))
    root = tmp_path / "tune"
    trials = _study(root, "search")
    assert [t.state for t in trials] == [TrialState.COMPLETE] * 2
    for trial in trials:  # each trial's inner folds are ordinary runs, with curves
        for fold in (0, 1):
            assert list((root / "search" / f"trial_{trial.number}" / f"fold_{fold}" / "tensorboard").rglob("events*"))
    best = max(trials, key=lambda t: t.value)
    chosen = yaml.safe_load((root / "best_config.yaml").read_text())
    assert chosen["model"]["optimizer"]["init_args"]["lr"] == pytest.approx(best.params["model.optimizer.init_args.lr"])
    assert "a choice, not an estimate" in (root / "best_config.yaml").read_text().splitlines()[0]
    assert len(pd.read_csv(root / "trials.csv")) == 2
    Run([root / "best_config.yaml"])  # the choice is a config that fit takes as it is
    with pytest.raises(TuneError, match=r"holds a search with another settings") as refused:
        main(tune_args(tmp_path, cohort, "--trials", "3"))
    assert "\n" not in str(refused.value)
    with pytest.raises(TuneError, match=r"--metric loss is not one of \['bacc'"):
        main(tune_args(tmp_path, cohort, "--metric", "loss"))


def _permute_outer_fold(source: Path, target: Path, split_file: Path, fold: int) -> Path:
    """A copy of the cohort in which the diagnoses of outer fold ``fold``'s subjects are shuffled among them (files
    moved to their new group's folder), and the outer split file that deals the same subjects.
    """
    shutil.copytree(source, target)
    table = pd.read_csv(target / CSV_NAME, dtype=str)
    split = pd.read_csv(split_file, dtype={"image_id": str, "subject": str})
    subjects = sorted(set(split.loc[split["fold"] == fold, "subject"]))
    groups = table.drop_duplicates("Subject").set_index("Subject")["Group"]
    shuffled = dict(zip(subjects, [groups[s] for s in subjects[1:] + subjects[:1]]))
    assert any(shuffled[s] != groups[s] for s in subjects)  # the labels do change
    for index, row in table[table["Subject"].isin(subjects)].iterrows():
        new = shuffled[row["Subject"]]
        name = f"{row['Image Data ID']}.nii_aseg_deep.mgz"
        (target / new).mkdir(exist_ok=True)
        (target / row["Group"] / name).rename(target / new / name)
        table.loc[index, "Group"] = new
    table.to_csv(target / CSV_NAME, index=False)
    return target


@pytest.mark.slow
def test_the_outer_fold_chooses_nothing(cohort, tmp_path):
    """Permuting the diagnoses of outer fold 0's subjects leaves outer fold 0's every trial and choice bit-identical."""
    first, second = tmp_path / "a", tmp_path / "b"
    first.mkdir()
    main(tune_args(first, cohort, "--trials", "2", "--outer_folds", "2"))
    second.mkdir()
    (second / "tune").mkdir()
    permuted = _permute_outer_fold(cohort, second / "K1data", first / "tune" / "split.csv", 0)
    split = pd.read_csv(first / "tune" / "split.csv", dtype=str)
    groups = pd.read_csv(permuted / CSV_NAME, dtype=str).set_index("Image Data ID")["Group"]
    split.assign(group=split["image_id"].map(groups)).to_csv(second / "tune" / "split.csv", index=False)
    shutil.copy(first / "tune" / "split.json", second / "tune" / "split.json")
    main(tune_args(second, permuted, "--trials", "2", "--outer_folds", "2"))

    a, b = _study(first / "tune", "outer_0"), _study(second / "tune", "outer_0")
    assert [(t.params, t.value) for t in a] == [(t.params, t.value) for t in b]
    chosen = [pd.read_csv(d / "tune" / "chosen.csv").iloc[0].to_dict() for d in (first, second)]
    assert chosen[0] == chosen[1]
    # the outer fold's labels did reach its predictions: the held-out diagnoses differ in the reports
    oof = [pd.read_csv(d / "tune" / "fold_0" / "oof_predictions.csv", dtype=str) for d in (first, second)]
    assert (oof[0]["group"] != oof[1]["group"]).any()
    report = (first / "tune" / "cv_report.md").read_text()
    for section in ("## Model `tuned`", "## Model `default`", "## Model `baseline`", "Paired differences vs `default`"):
        assert section in report
    tune_report = (first / "tune" / "tune_report.md").read_text()
    assert "## Chosen per outer fold" in tune_report and "model.optimizer.init_args.lr" in tune_report


@pytest.mark.slow
def test_a_worker_killed_mid_trial_loses_only_that_trial_and_the_rerun_resumes_it(cohort, tmp_path):
    args = tune_args(tmp_path, cohort, "--trials", "2", epochs=30)
    env = {**os.environ, "PYTHONPATH": str(REPO), "OMP_NUM_THREADS": "1"}
    worker = subprocess.Popen([sys.executable, "-m", "adni_lightning", *args], env=env, stdout=subprocess.DEVNULL)
    last = tmp_path / "tune" / "search" / "trial_0" / "fold_0" / "checkpoints" / "last.ckpt"
    deadline = time.monotonic() + 240
    while not last.exists() and worker.poll() is None and time.monotonic() < deadline:
        time.sleep(0.2)
    assert worker.poll() is None, "the worker ended before it could be killed"
    os.kill(worker.pid, signal.SIGKILL)
    worker.wait()

    main(args)
    trials = _study(tmp_path / "tune", "search")
    assert [t.state for t in trials] == [TrialState.FAIL, TrialState.COMPLETE, TrialState.COMPLETE]
    retry = trials[1]
    assert retry.user_attrs[RETRY_OF] == 0 and retry.user_attrs[FOLDER] == "trial_0"
    assert retry.params == trials[0].params
    events = list((tmp_path / "tune" / "search" / "trial_0" / "fold_0" / "tensorboard").rglob("events*"))
    assert len(events) >= 2  # the fold resumed from its last checkpoint (a second session of curves)


@pytest.mark.slow
def test_two_tune_workers_on_one_folder_share_the_trials(cohort, tmp_path):
    args = tune_args(tmp_path, cohort, "--trials", "3", epochs=3)
    env = {**os.environ, "PYTHONPATH": str(REPO), "OMP_NUM_THREADS": "1"}
    with pytest.raises(StudyError, match="search: no trial completed"):  # cohort, cache and study; no trial
        main([*args, "--timeout", "0"])
    workers = [
        subprocess.Popen([sys.executable, "-m", "adni_lightning", *args], env=env, stdout=subprocess.DEVNULL)
        for _ in range(2)
    ]
    assert [w.wait(timeout=600) for w in workers] == [0, 0]
    trials = _study(tmp_path / "tune", "search")
    assert sorted(t.number for t in trials) == [0, 1, 2]
    assert [t.state for t in trials] == [TrialState.COMPLETE] * 3
    assert len({t.user_attrs["worker"] for t in trials}) == 2
