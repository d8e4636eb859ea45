"""End-to-end runs of the CLI (`main([...])`) on a small synthetic cohort, on the CPU."""

from __future__ import annotations

import json
import os
import subprocess
import sys
from pathlib import Path

import pandas as pd
import pytest
import torch
import yaml
from tensorboard.backend.event_processing.event_accumulator import EventAccumulator

from adni_lightning.checkpoint import ResumeError
from adni_lightning.main import main
from adni_lightning.module import NonFiniteLossError
from tests.helpers import tiny_args

REPO = Path(__file__).resolve().parents[1]
DDP = ["--trainer.strategy", "ddp_spawn", "--trainer.devices", "2", "--trainer.accelerator", "cpu"]


def test_fast_dev_run(cohort, tmp_path):
    cli = main(tiny_args("fit", tmp_path / "run", cohort, "--trainer.fast_dev_run", "true"))
    assert cli.trainer.state.finished
    assert cli.model.net.image_encoder.out_features == 128
    assert cli.model.hparams.in_channels == cli.datamodule.in_channels == 9  # linked from the DataModule


def test_fit_writes_checkpoints_tensorboard_tags_and_split(cohort, tmp_path):
    run = tmp_path / "run"
    cli = main(tiny_args("fit", run, cohort, "--trainer.max_epochs", "2"))
    names = sorted(p.name for p in (run / "checkpoints").iterdir())
    assert len(names) == 2 and names[0].startswith("best-epoch") and names[1] == "last.ckpt"  # nothing else
    assert (run / "split.csv").is_file() and (run / "tensorboard" / "config.yaml").is_file()
    events = EventAccumulator(str(run / "tensorboard"), size_guidance={"images": 0}).Reload()
    tags = set(events.Tags()["scalars"])
    assert {"train/loss", "train/acc", "val/loss", "val/acc", "val/bacc", "val/f1", "val/auroc", "hp_metric"} <= tags
    assert len(events.Scalars("val/bacc")) == 2
    assert any(t.startswith("val/volumes/") for t in events.Tags()["images"])
    assert "val/confusion_matrix" in events.Tags()["images"]
    best = cli.trainer.checkpoint_callback.best_model_score  # the first ModelCheckpoint: val/bacc
    assert events.Scalars("hp_metric")[-1].value == pytest.approx(float(best))


@pytest.mark.filterwarnings("ignore:You requested to overfit")  # Lightning's note that it keeps the order: wanted
def test_overfitting_a_few_batches_drives_the_loss_to_zero(cohort, tmp_path):
    cli = main(
        tiny_args(
            "fit",
            tmp_path / "run",
            cohort,
            "--trainer.overfit_batches",
            "2",
            "--trainer.max_epochs",
            "60",
            "--data.augment",
            "[]",
            "--model.dropout",
            "0",
            "--model.optimizer.init_args.weight_decay",
            "0",
            "--model.optimizer.init_args.lr",
            "0.01",
            "--model.lr_scheduler",
            "null",
            "--trainer.check_val_every_n_epoch",
            "100",
            "--trainer.num_sanity_val_steps",
            "0",
        )
    )
    assert cli.trainer.callback_metrics["train/loss"] < 0.05
    assert cli.trainer.callback_metrics["train/acc"] == 1.0


def test_resume_continues_at_the_right_epoch_and_step(cohort, tmp_path):
    run = tmp_path / "run"
    first = main(tiny_args("fit", run, cohort, "--trainer.max_epochs", "2"))
    steps_per_epoch = first.trainer.num_training_batches
    assert first.trainer.global_step == 2 * steps_per_epoch
    with pytest.raises(ResumeError, match="resume with --ckpt_path last"):
        main(tiny_args("fit", run, cohort, "--trainer.max_epochs", "3"))
    resumed = main(tiny_args("fit", run, cohort, "--trainer.max_epochs", "3", "--ckpt_path", "last"))
    assert resumed.trainer.current_epoch == 3
    assert resumed.trainer.global_step == 3 * steps_per_epoch
    checkpoint = torch.load(run / "checkpoints" / "last.ckpt", weights_only=False)
    assert checkpoint["global_step"] == 3 * steps_per_epoch
    assert checkpoint["lr_schedulers"][0]["last_epoch"] == 3
    assert checkpoint["data"]["tabular"]["age_mean"] == pytest.approx(first.datamodule.encoder.age_mean)
    events = EventAccumulator(str(run / "tensorboard")).Reload()
    assert [e.step for e in events.Scalars("val/bacc")][-1] == 3 * steps_per_epoch - 1  # same TensorBoard run


def test_resume_last_without_a_checkpoint_is_an_error(cohort, tmp_path):
    with pytest.raises(ResumeError, match="no .*last.ckpt to resume from"):
        main(tiny_args("fit", tmp_path / "run", cohort, "--ckpt_path", "last"))


def _subprocess_fit(run: Path, data: Path, *extra: str) -> subprocess.CompletedProcess:
    env = {**os.environ, "PYTHONPATH": str(REPO)}
    command = [
        sys.executable,
        "-m",
        "adni_lightning",
        *tiny_args("fit", run, data, "--trainer.max_epochs", "3", *extra),
    ]
    return subprocess.run(command, cwd=REPO, env=env, capture_output=True, text=True, timeout=300)


@pytest.mark.parametrize("device_cache", ["false", "true"], ids=["loader", "device_cache"])
def test_a_run_killed_mid_epoch_and_resumed_matches_the_uninterrupted_run(cohort, tmp_path, device_cache):
    """Killed mid-epoch and resumed, a run ends with the weights of the loader path's uninterrupted run, bit for
    bit, on either data path: the same batches, augmentations and steps.
    """
    path = ("--data.loader.device_cache", device_cache)
    straight = _subprocess_fit(tmp_path / "straight", cohort, "--data.loader.device_cache", "false")
    assert straight.returncode == 0, straight.stderr[-3000:]
    steps = torch.load(tmp_path / "straight" / "checkpoints" / "last.ckpt", weights_only=False)["global_step"] // 3
    kill = json.dumps({"class_path": "tests.helpers.KillAtStep", "init_args": {"step": steps + steps // 2}})
    killed = _subprocess_fit(tmp_path / "killed", cohort, *path, f"--trainer.callbacks+={kill}")
    assert killed.returncode == -9, killed.stderr[-3000:]
    assert ("device cache: 34 volumes" in killed.stderr) == (device_cache == "true")
    assert torch.load(tmp_path / "killed" / "checkpoints" / "last.ckpt", weights_only=False)["global_step"] == steps
    resumed = _subprocess_fit(tmp_path / "killed", cohort, *path, "--ckpt_path", "last")
    assert resumed.returncode == 0, resumed.stderr[-3000:]
    a = torch.load(tmp_path / "straight" / "checkpoints" / "last.ckpt", weights_only=False)
    b = torch.load(tmp_path / "killed" / "checkpoints" / "last.ckpt", weights_only=False)
    assert a["global_step"] == b["global_step"] == 3 * steps
    for name, tensor in a["state_dict"].items():
        torch.testing.assert_close(b["state_dict"][name], tensor, rtol=0, atol=0, msg=name)
    callback = next(k for k in a["callbacks"] if "'monitor': 'val/bacc'" in k)
    assert a["callbacks"][callback]["best_model_score"] == b["callbacks"][callback]["best_model_score"]


def test_a_nan_in_a_batch_stops_training_and_names_the_images(cohort, tmp_path):
    inject = json.dumps({"class_path": "tests.helpers.InjectNaN", "init_args": {"batch_idx": 1}})
    with pytest.raises(NonFiniteLossError) as err:
        main(tiny_args("fit", tmp_path / "run", cohort, f"--trainer.callbacks+={inject}"))
    message = str(err.value)
    assert "train loss is nan at epoch 0, step 1" in message
    assert "non-finite inputs in I" in message
    split = pd.read_csv(tmp_path / "run" / "split.csv")
    named = [i for i in split["image_id"] if i in message]
    assert len(named) == 4  # the whole batch is listed


def test_predict_writes_probabilities_that_sum_to_one(cohort, tmp_path):
    run = tmp_path / "run"
    main(tiny_args("fit", run, cohort, "--trainer.max_epochs", "1"))
    main(tiny_args("predict", run, cohort, "--ckpt_path", str(run / "checkpoints" / "last.ckpt")))
    predictions = pd.read_csv(run / "predictions.csv")
    assert list(predictions.columns) == ["image_id", "subject", "group", "split", "p_CN", "p_MCI", "p_AD", "predicted"]
    sides = pd.read_csv(run / "split.csv").set_index("image_id")["split"]
    assert (predictions["split"] == predictions["image_id"].map(sides)).all()  # every image marked with its side
    assert len(predictions) == len(pd.read_csv(cohort / "ADNI_1p5T_Filtered.csv"))
    probabilities = predictions[["p_CN", "p_MCI", "p_AD"]].to_numpy()
    assert abs(probabilities.sum(axis=1) - 1).max() < 1e-5
    assert (predictions["predicted"] == predictions[["p_CN", "p_MCI", "p_AD"]].idxmax(axis=1).str[2:]).all()


def test_print_config_round_trips(cohort, tmp_path, capsys):
    with pytest.raises(SystemExit):
        main(tiny_args("fit", tmp_path / "run", cohort, "--print_config"))
    printed = capsys.readouterr().out
    config = tmp_path / "config.yaml"
    config.write_text(printed)
    with pytest.raises(SystemExit):
        main(["fit", "--config", str(config), "--print_config"])
    again = capsys.readouterr().out
    assert yaml.safe_load(again) == yaml.safe_load(printed)
    data = yaml.safe_load(printed)["data"]["init_args"]
    assert data["preprocessing"]["image_size"] == 16
    assert {"manifest", "preprocessing", "split", "loader", "augment", "cohort"} <= set(data)  # the config groups


@pytest.mark.parametrize("flat", ["--data.image_size", "--data.val_fraction", "--data.flip_prob"])
def test_old_flat_keys_are_a_parser_error(cohort, tmp_path, capsys, flat):
    with pytest.raises(SystemExit) as exit_:
        main(tiny_args("fit", tmp_path / "run", cohort, flat, "1"))
    assert exit_.value.code == 2
    assert flat.split(".")[-1] in capsys.readouterr().err


def test_bf16_mixed_on_cpu(cohort, tmp_path):
    from tests.helpers import RecordConvDtype

    recorder = RecordConvDtype()
    cli = main(
        tiny_args(
            "fit",
            tmp_path / "run",
            cohort,
            "--trainer.fast_dev_run",
            "2",
            "--trainer.precision",
            "bf16-mixed",
            "--trainer.callbacks+=tests.helpers.RecordConvDtype",
        )
    )
    recorder = next(c for c in cli.trainer.callbacks if isinstance(c, RecordConvDtype))
    assert recorder.dtypes == {torch.bfloat16}
    assert torch.isfinite(cli.trainer.callback_metrics["train/loss"])
    assert cli.model.net.classifier.weight.dtype == torch.float32  # master weights stay fp32


def test_ddp_two_processes_sync_metrics_over_the_whole_validation_set(cohort, tmp_path):
    run = tmp_path / "run"
    # An even validation set split over 2 ranks without padding, so synced metrics must equal one process's.
    main(tiny_args("fit", run, cohort, "--trainer.max_epochs", "1"))
    val = pd.read_csv(run / "split.csv").query("split == 'val'")
    assert len(val) % 2 == 0, "the test cohort's validation split must be even"
    ckpt = str(run / "checkpoints" / "last.ckpt")
    single = main(tiny_args("validate", run, cohort, "--ckpt_path", ckpt)).trainer.callback_metrics
    ddp = main(
        tiny_args(
            "fit",
            tmp_path / "ddp",
            cohort,
            "--trainer.max_epochs",
            "1",
            "--data.split.file",
            str(run / "split.csv"),
            *DDP,
        )
    )
    assert ddp.trainer.world_size == 2 and ddp.trainer.state.finished
    assert {"val/acc", "val/bacc", "val/auroc", "train/loss"} <= set(ddp.trainer.callback_metrics)
    validated = main(
        tiny_args(
            "validate",
            tmp_path / "ddp",
            cohort,
            "--ckpt_path",
            ckpt,
            "--data.split.file",
            str(run / "split.csv"),
            *DDP,
        )
    )
    for name in ("val/acc", "val/bacc", "val/f1", "val/auroc", "val/loss"):
        assert float(validated.trainer.callback_metrics[name]) == pytest.approx(float(single[name]), abs=1e-5), name


def test_ddp_on_the_device_cache_trains_as_on_the_loader_path(cohort, tmp_path):
    """Two processes, each holding the whole cohort: each rank's shards are the loader path's, so are the weights."""
    runs = {}
    for name, cache in {"loader": "false", "cache": "true"}.items():
        cli = main(
            tiny_args(
                "fit",
                tmp_path / name,
                cohort,
                "--trainer.max_epochs",
                "2",
                "--data.split.file",
                str(tmp_path / "split.csv"),
                "--data.loader.device_cache",
                cache,
                *DDP,
            )
        )
        assert cli.trainer.world_size == 2 and cli.trainer.state.finished
        runs[name] = torch.load(tmp_path / name / "checkpoints" / "last.ckpt", weights_only=False)
    assert runs["loader"]["global_step"] == runs["cache"]["global_step"] > 0
    for name, tensor in runs["loader"]["state_dict"].items():
        torch.testing.assert_close(runs["cache"]["state_dict"][name], tensor, rtol=0, atol=0, msg=name)


def test_predict_on_a_new_cohort_uses_the_checkpoints_age_statistics(cohort, tmp_path):
    from adni_lightning.synth import generate_cohort

    run = tmp_path / "run"
    trained = main(tiny_args("fit", run, cohort, "--trainer.max_epochs", "1"))
    new = generate_cohort(tmp_path / "new", subjects=5, size=32, seed=11, workers=1)
    predicted = main(
        tiny_args(
            "predict", tmp_path / "scoring", tmp_path / "new", "--ckpt_path", str(run / "checkpoints" / "last.ckpt")
        )
    )
    assert predicted.datamodule.encoder.state_dict() == trained.datamodule.encoder.state_dict()
    rows = pd.read_csv(tmp_path / "scoring" / "predictions.csv")
    assert sorted(rows["image_id"]) == sorted("I" + new["Image Data ID"].str.lstrip("I"))
    assert not (tmp_path / "scoring" / "split.csv").exists()  # no split is drawn to score a cohort


def test_predict_with_several_checkpoints_averages_their_probabilities(cohort, tmp_path):
    runs = []
    for seed in (1, 2):
        run = tmp_path / f"run{seed}"
        main(
            tiny_args(
                "fit",
                run,
                cohort,
                "--trainer.max_epochs",
                "1",
                "--seed_everything",
                str(seed),
                "--data.split.file",
                str(tmp_path / "split.csv"),
            )
        )
        main(tiny_args("predict", run, cohort, "--ckpt_path", str(run / "checkpoints" / "last.ckpt")))
        runs.append(pd.read_csv(run / "predictions.csv").set_index("image_id"))
    scoring = tmp_path / "scoring"
    main(tiny_args("predict", scoring, cohort, "--ckpt_path", str(tmp_path / "run*" / "checkpoints" / "last.ckpt")))
    ensemble = pd.read_csv(scoring / "predictions.csv").set_index("image_id")
    columns = ["p_CN", "p_MCI", "p_AD"]
    expected = (runs[0][columns] + runs[1][columns]) / 2
    pd.testing.assert_frame_equal(ensemble[columns], expected.loc[ensemble.index], atol=2e-6)
    assert (ensemble["members"] == 2).all() and not (scoring / "ensemble_members").exists()
    assert (ensemble["predicted"] == ensemble[columns].idxmax(axis=1).str[2:]).all()


def test_predictions_by_subject_average_a_subjects_images(cohort, tmp_path):
    run = tmp_path / "run"
    main(tiny_args("fit", run, cohort, "--trainer.max_epochs", "1"))
    main(tiny_args("predict", run, cohort, "--ckpt_path", str(run / "checkpoints" / "last.ckpt")))
    images = pd.read_csv(run / "predictions.csv")
    subjects = pd.read_csv(run / "predictions_by_subject.csv").set_index("subject")
    assert len(subjects) == images["subject"].nunique() and subjects.index.is_unique
    twice = images["subject"].value_counts().index[0]
    assert subjects.at[twice, "images"] == 2
    mean = images.loc[images["subject"] == twice, "p_AD"].mean()
    assert subjects.at[twice, "p_AD"] == pytest.approx(mean, abs=1e-6)
