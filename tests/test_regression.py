"""A score task end to end: the model trains on the standardised score, predicts in its units, averages as an ensemble,
is refused by and refuses classification checkpoints, and is explained with the change of its predicted score."""

from __future__ import annotations

import math
import shutil
from pathlib import Path

import numpy as np
import pandas as pd
import pytest
import torch
import yaml
from tensorboard.backend.event_processing.event_accumulator import EventAccumulator

from adni_lightning.checkpoint import read_checkpoint
from adni_lightning.cli import CONFIG_DIR
from adni_lightning.data.clinical import normalise_visit
from adni_lightning.data.contract import ContractError
from adni_lightning.data.split import SCORE_STRATA
from adni_lightning.errors import OptionError
from adni_lightning.main import main
from adni_lightning.models import ResNet3d
from adni_lightning.module import ADNIClassifier
from tests.helpers import TINY_CONFIGS

#: Most tests here train score models (a shared fixture of tiny fits), so the file runs with the slow suite.
pytestmark = pytest.mark.slow

#: The session cohort's own generator options, so that the clinical table the synthetic DataModule writes is its.
FIXTURE = ["--data.cohort.subjects", "24", "--data.cohort.size", "32", "--data.cohort.seed", "3"]
MMSE = ["--config", str(CONFIG_DIR / "tasks" / "mmse.yaml")]
PREDICTION_COLUMNS = ["image_id", "subject", "group", "split", "target", "prediction"]


def _args(command: str, root: Path, cohort: Path, *extra: str, task: list[str] = MMSE) -> list[str]:
    """The tiny run with a task config after the packaged ones (its run folder is then overridden)."""
    where = ["--trainer.default_root_dir", str(root), "--data.manifest.data_dir", str(cohort)]
    where += ["--data.cache_dir", str(root.parent / "cache")]
    return [command, *TINY_CONFIGS, *task, *where, *FIXTURE, *extra]


@pytest.fixture(scope="module")
def score_runs(tmp_path_factory, cohort_template) -> dict[str, Path]:
    """Two MMSE runs of the tiny model on one split (seeds 1 and 2), each with its own predictions.csv."""
    base = tmp_path_factory.mktemp("score")
    cohort = base / "K1data"
    shutil.copytree(cohort_template, cohort)
    split = ["--data.split.file", str(base / "split.csv")]
    for seed, epochs in ((1, "2"), (2, "1")):
        root = base / f"run{seed}"
        main(_args("fit", root, cohort, "--trainer.max_epochs", epochs, "--seed_everything", str(seed), *split))
        main(_args("predict", root, cohort, "--ckpt_path", str(root / "checkpoints" / "last.ckpt"), *split))
    return {"base": base, "cohort": cohort, "run": base / "run1", "ckpt": base / "run1" / "checkpoints" / "last.ckpt"}


def _mmse(cohort: Path) -> dict[tuple[str, str], float]:
    """The synthetic table's MMSE by (subject, normalised visit)."""
    table = pd.read_csv(cohort / "ADNIMERGE.csv", dtype=str)
    return {(s, str(normalise_visit(v))): float(m) for s, v, m in zip(table["PTID"], table["VISCODE"], table["MMSE"])}


def test_a_score_model_trains_on_the_standardised_score_and_logs_its_metrics(score_runs):
    run = score_runs["run"]
    split = pd.read_csv(score_runs["base"] / "split.csv")
    assert set(split["group"]) == {"q1", "q2", "q3", "q4", "q5"}  # stratified by MMSE quintile
    assert split.groupby("subject")["split"].nunique().max() == 1
    checkpoint = read_checkpoint(score_runs["ckpt"])
    hparams = checkpoint["hyper_parameters"]
    assert (hparams["objective"], hparams["num_classes"], hparams["class_names"], hparams["loss"]) == (
        "regression",
        1,
        ["MMSE"],
        "mse",
    )
    assert checkpoint["data"]["task"] == "score MMSE"
    images = checkpoint["data"]["training_cohort"]["images"]  # counted by score stratum
    assert list(images) == list(SCORE_STRATA) and sum(images.values()) == (split["split"] == "train").sum()
    # the training split's statistics, kept with the weights
    predictions = pd.read_csv(run / "predictions.csv")
    train = predictions.loc[predictions["split"] == "train", "target"].to_numpy()
    state = checkpoint["state_dict"]
    assert float(state["target_mean"]) == pytest.approx(train.mean(), rel=1e-6)
    assert float(state["target_std"]) == pytest.approx(train.std(), rel=1e-6)
    best = [p.name for p in (run / "checkpoints").glob("best-*.ckpt")]
    assert len(best) == 1 and best[0].startswith("best-epoch") and "-mae" in best[0]  # monitored: val/mae, min
    saved = yaml.safe_load((run / "tensorboard" / "config.yaml").read_text())["checkpoint"]
    assert (saved["monitor"], saved["mode"]) == ("val/mae", "min")
    events = EventAccumulator(str(run / "tensorboard")).Reload()
    scalars = set(events.Tags()["scalars"])
    assert {"val/mae", "val/rmse", "val/r2", "val/pearson", "train/mae", "val/loss", "hp_metric"} <= scalars
    assert not {"val/bacc", "val/auroc"} & scalars
    assert all(math.isfinite(e.value) for name in ("train/loss", "val/loss") for e in events.Scalars(name))
    maes = [e.value for e in events.Scalars("val/mae")]
    assert events.Scalars("hp_metric")[-1].value == pytest.approx(min(maes))
    assert "val/predicted_vs_true" in events.Tags()["images"]


def test_predictions_are_in_the_scores_units(score_runs):
    run, cohort = score_runs["run"], score_runs["cohort"]
    predictions = pd.read_csv(run / "predictions.csv", dtype={"image_id": str})
    assert list(predictions.columns) == PREDICTION_COLUMNS
    csv = pd.read_csv(cohort / "ADNI_1p5T_Filtered.csv", dtype=str)
    rows = zip(csv["Image Data ID"], csv["Subject"], csv["Visit"])
    visits = {f"I{i.lstrip('I')}": (s, str(normalise_visit(v))) for i, s, v in rows}
    truth = _mmse(cohort)
    assert [truth[visits[i]] for i in predictions["image_id"]] == predictions["target"].tolist()
    assert set(predictions["group"]) <= {"CN", "MCI", "AD"}  # the CSV's Group
    assert abs(predictions["prediction"].mean() - predictions["target"].mean()) < 5  # MMSE points, not z-scores
    by_subject = pd.read_csv(run / "predictions_by_subject.csv")
    assert list(by_subject.columns) == ["subject", "group", "images", "target", "prediction"]
    expected = predictions.groupby("subject")[["target", "prediction"]].mean()
    pd.testing.assert_frame_equal(by_subject.set_index("subject")[["target", "prediction"]], expected, atol=2e-6)


def test_predict_with_several_score_checkpoints_averages_their_predictions(score_runs, tmp_path):
    base = score_runs["base"]
    scoring = tmp_path / "scoring"
    main(
        _args("predict", scoring, score_runs["cohort"], "--ckpt_path", str(base / "run*" / "checkpoints" / "last.ckpt"))
    )
    ensemble = pd.read_csv(scoring / "predictions.csv").set_index("image_id")
    assert list(ensemble.columns) == [*PREDICTION_COLUMNS[1:], "members"] and (ensemble["members"] == 2).all()
    members = [pd.read_csv(base / f"run{seed}" / "predictions.csv").set_index("image_id") for seed in (1, 2)]
    expected = (members[0]["prediction"] + members[1]["prediction"]) / 2
    assert not np.allclose(members[0]["prediction"], members[1]["prediction"])
    pd.testing.assert_series_equal(ensemble["prediction"], expected.loc[ensemble.index], atol=2e-6)
    pd.testing.assert_series_equal(ensemble["target"], members[0]["target"].loc[ensemble.index])


def test_score_and_classification_checkpoints_refuse_each_other_in_one_line(score_runs, tmp_path):
    cohort = score_runs["cohort"]
    with pytest.raises(ContractError) as classification:
        main(_args("validate", score_runs["run"], cohort, "--ckpt_path", str(score_runs["ckpt"]), task=[]))
    assert str(classification.value) == (
        f"--ckpt_path {score_runs['ckpt']} does not fit this configuration: data.task: checkpoint score MMSE, config "
        "group; data.manifest.classes: checkpoint ['q1', 'q2', 'q3', 'q4', 'q5'], config ['CN', 'MCI', 'AD']"
    )
    group = tmp_path / "group"
    main(_args("fit", group, cohort, "--trainer.max_epochs", "1", task=[]))
    ckpt = group / "checkpoints" / "last.ckpt"
    with pytest.raises(ContractError) as score:
        main(_args("predict", group, cohort, "--ckpt_path", str(ckpt)))
    assert str(score.value) == (
        f"--ckpt_path {ckpt} does not fit this configuration: data.task: checkpoint group, config score MMSE; "
        "data.manifest.classes: checkpoint ['CN', 'MCI', 'AD'], config ['q1', 'q2', 'q3', 'q4', 'q5']"
    )


def test_calibration_is_refused_for_a_score_task(score_runs, tmp_path):
    calibration = tmp_path / "calibration.json"
    with pytest.raises(OptionError) as refused:
        main(_args("predict", tmp_path / "p", score_runs["cohort"], "--ckpt_path", str(score_runs["ckpt"]),
                   "--calibration", str(calibration)))  # fmt: skip
    assert str(refused.value) == (
        f"--calibration {calibration} scales class probabilities, and data.task score MMSE predicts a value, which "
        "has none: drop --calibration"
    )
    assert not (tmp_path / "p" / "predictions.csv").exists()


def test_brain_age_predicts_the_age_without_age_as_an_input(cohort_template, tmp_path):
    cohort = tmp_path / "K1data"
    shutil.copytree(cohort_template, cohort)
    age = ["--data.task.label", "score", "--data.task.column", "Age"]  # no clinical table
    root = tmp_path / "run"
    main(_args("fit", root, cohort, "--trainer.max_epochs", "1", *age, task=[]))
    checkpoint = read_checkpoint(root / "checkpoints" / "last.ckpt")
    volumes = len(
        yaml.safe_load((CONFIG_DIR / "synthetic.yaml").read_text())["data"]["init_args"]["tabular"]["volumes"]
    )
    assert checkpoint["hyper_parameters"]["num_tabular_features"] == 2 + volumes  # sex and volumes; no age
    assert checkpoint["state_dict"]["net.tabular_net.fc.weight"].shape[1] == 2 + volumes
    assert checkpoint["data"]["task"] == "score Age"
    assert not (cohort / "ADNIMERGE.csv").exists()
    main(_args("predict", root, cohort, "--ckpt_path", str(root / "checkpoints" / "last.ckpt"), *age, task=[]))
    predictions = pd.read_csv(root / "predictions.csv", dtype={"image_id": str})
    csv = pd.read_csv(cohort / "ADNI_1p5T_Filtered.csv", dtype=str)
    ages = {f"I{i.lstrip('I')}": float(a) for i, a in zip(csv["Image Data ID"], csv["Age"])}
    assert predictions["target"].tolist() == [ages[i] for i in predictions["image_id"]]


def test_the_regression_losses_are_taken_on_the_standardised_score():
    model = ADNIClassifier(lambda c: ResNet3d(c, widths=(4,), blocks=(1,)), num_classes=1, objective="regression")
    model.target_mean.fill_(10.0)
    model.target_std.fill_(2.0)
    outputs, labels = torch.tensor([[0.0], [1.0]]), torch.tensor([10.0, 16.0])  # standardised: 0 and 3
    losses = {}
    for loss in ("mse", "mae", "huber"):
        model.hparams["loss"] = loss
        losses[loss] = float(model._loss(outputs, labels))
    assert losses == {"mse": 2.0, "mae": 1.0, "huber": 0.75}
    assert model.in_units(outputs).tolist() == [10.0, 12.0]
    with pytest.raises(OptionError) as classification:
        ADNIClassifier(loss="huber")
    assert str(classification.value) == (
        "model.loss huber is a regression loss, and this task is a classification (cross-entropy): drop model.loss, "
        "or set data.task.label score"
    )
    with pytest.raises(OptionError) as outputs:
        ADNIClassifier(objective="regression")
    assert str(outputs.value) == "model.objective regression predicts one score, not 3 outputs"
    with pytest.raises(OptionError) as weighted:
        ADNIClassifier(num_classes=1, objective="regression", class_weighted_loss=True)
    assert str(weighted.value) == "model.class_weighted_loss weights classes: a regression has none (drop the option)"


def test_an_explained_score_model_reports_the_change_of_its_predicted_score(score_runs, tmp_path):
    pytest.importorskip("captum")
    out = tmp_path / "explained"
    main(_args("interpret", score_runs["run"], score_runs["cohort"], "--ckpt_path", str(score_runs["ckpt"]),
               "--data.split.file", str(score_runs["base"] / "split.csv"), "--ig_steps", "2", "--bootstrap", "20",
               "--max_images", "2", "--out", str(out)))  # fmt: skip
    images = pd.read_csv(out / "images.csv")
    assert list(images.columns[:6]) == PREDICTION_COLUMNS and not any(c.startswith("p_") for c in images.columns)
    assert set(images["ig_class"]) == {"score"}
    predictions = pd.read_csv(score_runs["run"] / "predictions.csv").set_index("image_id")
    assert np.allclose(images["prediction"], predictions.loc[images["image_id"], "prediction"], atol=1e-4)
    importance = pd.read_csv(out / "structure_importance.csv")
    assert set(importance["class"]) == {"score"} and len(importance) > 10
    assert np.allclose(importance.groupby("image_id")["predicted"].first(), images.set_index("image_id")["prediction"])
    ranking = pd.read_csv(out / "structure_ranking.csv")
    assert set(ranking["class"]) == {"score"}
    assert (out / "mean_attribution_score.nii.gz").is_file() and (out / "structure_ranking.png").is_file()


@pytest.mark.parametrize("base", ["synthetic", "adni"])
def test_the_mmse_config_stacks_on_the_data_configs(base, capsys):
    with pytest.raises(SystemExit) as exit_:
        main(["fit", "--config", str(CONFIG_DIR / f"{base}.yaml"), *MMSE, "--print_config"])
    assert exit_.value.code in (0, None)
    printed = yaml.safe_load(capsys.readouterr().out)
    assert printed["data"]["init_args"]["clinical"]["file"] == "ADNIMERGE.csv"
    task = printed["data"]["init_args"]["task"]
    assert (task["label"], task["column"]) == ("score", "MMSE")
    assert printed["model"]["loss"] == "mse"
