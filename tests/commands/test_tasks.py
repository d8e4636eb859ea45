"""A task's model goes through the commands after ``fit`` as the default's does: they read only each image's class."""

from __future__ import annotations

import shutil

import pandas as pd
import pytest

from adni_lightning.cli import CONFIG_DIR
from adni_lightning.errors import ProjectError
from adni_lightning.main import main
from tests.helpers import TINY_CONFIGS

#: The session cohort's own generator options, so that the clinical table the synthetic DataModule writes is its.
FIXTURE = ["--data.cohort.subjects", "24", "--data.cohort.size", "32", "--data.cohort.seed", "3"]
AD_VS_CN = ["--config", str(CONFIG_DIR / "tasks" / "ad_vs_cn.yaml")]


@pytest.mark.slow
def test_an_ad_vs_cn_model_predicts_and_is_interpreted_with_its_own_classes(cohort_template, tmp_path):
    pytest.importorskip("captum")
    cohort, root = tmp_path / "K1data", tmp_path / "run"
    shutil.copytree(cohort_template, cohort)

    def args(command: str, *extra: str) -> list[str]:  # the task config first: its run folder is overridden
        where = ["--trainer.default_root_dir", str(root), "--data.manifest.data_dir", str(cohort)]
        where += ["--data.cache_dir", str(tmp_path / "cache")]
        return [command, *TINY_CONFIGS, *AD_VS_CN, *where, *FIXTURE, *extra]

    main(args("fit", "--trainer.max_epochs", "1"))
    ckpt = str(root / "checkpoints" / "last.ckpt")
    split = pd.read_csv(root / "split.csv")
    assert set(split["group"]) == {"CN", "AD"}  # MCI visits left out, stratified by the visit's diagnosis
    main(args("predict", "--ckpt_path", ckpt))
    predictions = pd.read_csv(root / "predictions.csv", dtype={"image_id": str})
    assert [c for c in predictions.columns if c.startswith("p_")] == ["p_CN", "p_AD"]
    assert set(predictions["image_id"]) == set(split["image_id"])
    assert predictions[["p_CN", "p_AD"]].sum(axis=1).round(5).eq(1).all()
    main(args("interpret", "--ckpt_path", ckpt, "--ig_steps", "2", "--bootstrap", "20", "--max_images", "2"))
    images = pd.read_csv(root / "interpret" / "images.csv")
    assert len(images) == 2 and set(images["group"]) <= {"CN", "AD"}


@pytest.mark.slow
def test_a_score_task_cross_validates_against_its_ridge_baseline(cohort_template, tmp_path):
    cohort, root = tmp_path / "K1data", tmp_path / "cv"
    shutil.copytree(cohort_template, cohort)
    mmse = ["--config", str(CONFIG_DIR / "tasks" / "mmse.yaml"), *FIXTURE]
    where = ["--data.manifest.data_dir", str(cohort), "--data.cache_dir", str(tmp_path / "cache")]
    where += ["--trainer.default_root_dir", str(tmp_path / "run"), "--trainer.max_epochs", "1"]
    main(["cv", "--folds", "2", "--root", str(root), *TINY_CONFIGS, *mmse, *where])
    oof = pd.read_csv(root / "oof_predictions.csv", dtype={"image_id": str})
    assert set(oof["model"]) == {"cnn", "baseline", "cnn+baseline"}
    assert not [c for c in oof.columns if c.startswith("p_")]
    cnn, baseline, mean = (oof[oof["model"] == m].set_index("image_id") for m in ("cnn", "baseline", "cnn+baseline"))
    assert len(cnn) == len(baseline) == len(mean) > 0
    assert cnn["target"].between(0, 30).all() and (cnn["target"] == baseline["target"].loc[cnn.index]).all()
    expected = (cnn["prediction"] + baseline["prediction"].loc[cnn.index]) / 2
    assert (mean["prediction"].loc[cnn.index] - expected).abs().max() < 1e-5  # the ensemble is the mean
    report = (root / "cv_report.md").read_text()
    assert "MAE" in report and "cnn+baseline" in report and "No calibration section and no temperature" in report
    assert (root / "cv_scatter.png").is_file() and not (root / "calibration.json").exists()


@pytest.mark.parametrize("command", ["tune", "evaluate"])
def test_the_commands_of_classes_refuse_a_score_task_in_one_line(command, tmp_path):
    mmse = ["--config", str(CONFIG_DIR / "tasks" / "mmse.yaml"), "--trainer.default_root_dir", str(tmp_path / "run")]
    extra = ["--ckpt_path", str(tmp_path / "x.ckpt")] if command == "evaluate" else []
    with pytest.raises(ProjectError, match=rf"^{command}: data.task score MMSE is a regression") as refused:
        main([command, *TINY_CONFIGS, *mmse, "--data.manifest.data_dir", str(tmp_path / "K1data"), *extra])
    assert "\n" not in str(refused.value)
    assert list(tmp_path.iterdir()) == []  # refused before anything is written


def test_inspect_describes_a_score_task_by_its_score_and_strata(cohort_template, tmp_path):
    cohort = tmp_path / "K1data"
    shutil.copytree(cohort_template, cohort)
    mmse = ["--config", str(CONFIG_DIR / "tasks" / "mmse.yaml"), *FIXTURE, "--data.manifest.data_dir", str(cohort)]
    main(["inspect", *TINY_CONFIGS, *mmse, "--data.cache_dir", str(tmp_path / "cache"), "--out", str(tmp_path / "out")])
    volumes = pd.read_csv(tmp_path / "out" / "volumes.csv", dtype={"image_id": str, "subject": str})
    assert volumes["score"].between(0, 30).all() and set(volumes["group"]) <= {"q1", "q2", "q3", "q4", "q5"}
    by_subject = volumes.groupby("subject").agg(score=("score", "first"), stratum=("group", "first"))
    means = by_subject.groupby("stratum")["score"].mean()
    assert means.is_monotonic_increasing  # q1 holds the lowest scores
    report = (tmp_path / "out" / "cohort.md").read_text()
    score = volumes["score"]
    assert f"data.task: score MMSE, a regression: {score.mean():.2f} ± {score.std():.2f}" in report
