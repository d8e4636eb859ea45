"""The checks of docs/CHECKS.md through the CLI: a checkpoint's contract, the cohort before anything is written,
evaluation commands that leave the training run alone, and options that cannot work, each with its message.
"""

from __future__ import annotations

import math
import shutil
import sys
from pathlib import Path

import pandas as pd
import pytest
import torch

from adni_lightning.checkpoint import CheckpointError
from adni_lightning.data.contract import ContractError
from adni_lightning.data.manifest import CSV_NAME
from adni_lightning.data.split import SplitError
from adni_lightning.main import main, run_from_command_line
from tests.helpers import tiny_args, trained_run

#: Every run here keeps a test side, so that ``test`` has something to score.
TEST_SIDE = ("--data.split.test_fraction", "0.2")


def args(command: str, root: Path, cohort: Path, *extra: str) -> list[str]:
    return tiny_args(command, root, cohort, *TEST_SIDE, *extra)


@pytest.fixture(scope="module")
def trained(tmp_path_factory, cohort_template) -> dict[str, Path]:
    """One epoch of a tiny model on the session cohort: the run the tests below evaluate, resume or copy."""
    return trained_run(tmp_path_factory.mktemp("checks"), cohort_template, *TEST_SIDE)


def _copy(trained: dict[str, Path], tmp_path: Path) -> Path:
    """A private copy of the trained run (its cache is rebuilt beside it on first use)."""
    return Path(shutil.copytree(trained["run"], tmp_path / "run"))


def _move_subject(split_file: Path, side: str, to: str) -> tuple[str, list[str]]:
    """Move a subject from ``side`` to ``to`` in a saved split, as a hand edit would; a subject whose class keeps
    another subject on ``side``. Returns its first image and all its images."""
    split = pd.read_csv(split_file, dtype=str)
    subjects = split.drop_duplicates("subject")
    on_side = subjects[subjects["split"] == side]
    crowded = on_side.groupby("group")["subject"].transform("size") > 1
    subject = on_side.loc[crowded, "subject"].iloc[0]
    images = split.loc[split["subject"] == subject, "image_id"].tolist()
    split.loc[split["subject"] == subject, "split"] = to
    split.to_csv(split_file, index=False)
    return images[0], images


@pytest.mark.parametrize("command", ["validate", "test"])
def test_a_subject_moved_from_training_to_validation_is_refused(trained, tmp_path, command):
    run = _copy(trained, tmp_path)
    first, images = _move_subject(run / "split.csv", "train", "val")
    ckpt = run / "checkpoints" / "last.ckpt"
    with pytest.raises(ContractError) as refused:
        main(args(command, run, trained["cohort"], "--ckpt_path", str(ckpt)))
    assert str(refused.value) == (
        f"--ckpt_path {ckpt} does not fit this configuration: data.split: {len(images)} image(s) of "
        f"{run / 'split.csv'} are on another side than when the checkpoint was trained, e.g. {first}: checkpoint "
        "train, config val (it would be scored on images it was trained on)"
    )
    assert not (run / command).exists()  # refused before anything was logged


def test_resuming_on_another_split_is_refused(trained, tmp_path):
    run = _copy(trained, tmp_path)
    first, images = _move_subject(run / "split.csv", "val", "train")
    last = run / "checkpoints" / "last.ckpt"
    before = last.read_bytes()
    with pytest.raises(ContractError) as refused:
        main(args("fit", run, trained["cohort"], "--trainer.max_epochs", "2", "--ckpt_path", "last"))
    assert str(refused.value) == (
        f"--ckpt_path last ({last}) does not fit this configuration: data.split: {len(images)} image(s) of "
        f"{run / 'split.csv'} are on another side than when the checkpoint was trained, e.g. {first}: checkpoint "
        "val, config train (held-out images would be trained on)"
    )
    assert last.read_bytes() == before


def test_resuming_at_another_image_size_is_refused_before_the_cache_is_built(trained, tmp_path):
    run = _copy(trained, tmp_path)
    with pytest.raises(ContractError) as refused:
        main(
            args(
                "fit",
                run,
                trained["cohort"],
                "--trainer.max_epochs",
                "2",
                "--ckpt_path",
                "last",
                "--data.preprocessing.image_size",
                "24",
            )
        )
    assert str(refused.value) == (
        f"--ckpt_path last ({run / 'checkpoints' / 'last.ckpt'}) does not fit this configuration: "
        "data.preprocessing.image_size: checkpoint [16, 16, 16], config [24, 24, 24]"
    )
    assert not (tmp_path / "cache").exists()


def test_predict_takes_the_preprocessing_from_the_checkpoint(trained, tmp_path, capsys):
    ckpt = str(trained["ckpt"])
    main(args("predict", tmp_path / "as_trained", trained["cohort"], "--ckpt_path", ckpt))
    capsys.readouterr()
    other = ("--data.preprocessing.image_size", "24", "--data.preprocessing.crop", "false")
    main(args("predict", tmp_path / "other", trained["cohort"], "--ckpt_path", ckpt, *other))
    printed = capsys.readouterr().out.splitlines()
    assert printed[:2] == [
        "predict: data.preprocessing.image_size 16 taken from the checkpoint (the config says 24)",
        "predict: data.preprocessing.crop True taken from the checkpoint (the config says False)",
    ]
    expected = pd.read_csv(tmp_path / "as_trained" / "predictions.csv")
    pd.testing.assert_frame_equal(pd.read_csv(tmp_path / "other" / "predictions.csv"), expected)
    assert "image_size: 16" in (tmp_path / "other" / "predict" / "config.yaml").read_text()


def test_a_model_of_other_widths_is_explained_in_one_line(trained):
    with pytest.raises(ContractError) as refused:
        main(
            args(
                "validate",
                trained["run"],
                trained["cohort"],
                "--ckpt_path",
                str(trained["ckpt"]),
                "--model.image_encoder.init_args.widths",
                "[8, 16]",
            )
        )
    assert str(refused.value) == (
        f"--ckpt_path {trained['ckpt']} does not fit this configuration: model.image_encoder.init_args.widths: "
        "checkpoint [4, 8], config [8, 16]"
    )


def test_a_truncated_checkpoint_is_named_as_such(trained, tmp_path):
    truncated = tmp_path / "truncated.ckpt"
    truncated.write_bytes(trained["ckpt"].read_bytes()[:5000])
    with pytest.raises(CheckpointError) as refused:
        main(args("validate", tmp_path / "run", trained["cohort"], "--ckpt_path", str(truncated)))
    assert str(refused.value) == f"{truncated} is truncated or not a checkpoint (5000 bytes; File is not a zip file)"


@pytest.mark.filterwarnings("ignore:The dirpath has changed")  # a copied or edited checkpoint: wanted
def test_validate_test_and_predict_leave_the_training_runs_events_and_config_untouched(trained, tmp_path):
    run = _copy(trained, tmp_path)
    logged = {p: p.read_bytes() for p in (run / "tensorboard").iterdir()}
    assert {p.name for p in logged} >= {"config.yaml", "hparams.yaml"} and len(logged) >= 3
    ckpt = str(run / "checkpoints" / "last.ckpt")
    for command in ("validate", "test", "predict"):
        main(args(command, run, trained["cohort"], "--ckpt_path", ckpt))
        assert (run / command / "config.yaml").is_file() and list((run / command).glob("events.out.tfevents.*"))
    assert {p: p.read_bytes() for p in (run / "tensorboard").iterdir()} == logged


@pytest.mark.filterwarnings("ignore:The dirpath has changed")  # a copied or edited checkpoint: wanted
def test_predictions_come_from_the_trained_model_in_the_class_order(trained, tmp_path):
    """A checkpoint whose classifier ignores its input: known logits, so known probabilities per class column."""
    checkpoint = torch.load(trained["ckpt"], map_location="cpu", weights_only=True)
    logits = [-1.0, 2.0, 0.5]  # CN, MCI, AD: the configured order
    checkpoint["state_dict"]["net.classifier.weight"].zero_()
    checkpoint["state_dict"]["net.classifier.bias"].copy_(torch.tensor(logits))
    known = tmp_path / "known.ckpt"
    torch.save(checkpoint, known)
    main(args("predict", tmp_path / "scoring", trained["cohort"], "--ckpt_path", str(known)))
    predictions = pd.read_csv(tmp_path / "scoring" / "predictions.csv")
    total = sum(math.exp(x) for x in logits)
    for name, logit in zip(["CN", "MCI", "AD"], logits):
        assert predictions[f"p_{name}"].to_numpy() == pytest.approx(math.exp(logit) / total, abs=1e-6), name
    assert (predictions["predicted"] == "MCI").all()


def test_a_single_class_cohort_is_refused_before_anything_is_written(cohort, tmp_path):
    table = pd.read_csv(cohort / CSV_NAME, dtype=str)
    table[table["Group"] == "CN"].to_csv(cohort / CSV_NAME, index=False)
    subjects = table.loc[table["Group"] == "CN", "Subject"].nunique()
    run = tmp_path / "run"
    with pytest.raises(SplitError) as refused:
        main(args("fit", run, cohort))
    assert str(refused.value) == (
        f"{run / 'split.csv'}: no subject of class MCI, AD (subjects per class: CN {subjects}, MCI 0, AD 0); every "
        "class of data.manifest.classes needs subjects to train and validate on (map or drop groups with group_map)"
    )
    assert not run.exists() and not (tmp_path / "cache").exists()


def test_another_fold_reads_the_saved_k_fold_split_and_another_seed_is_refused(cohort, tmp_path):
    run = tmp_path / "run"
    folds = ("--data.split.folds", "3", "--trainer.fast_dev_run", "true")
    main(args("fit", run, cohort, *folds, "--data.split.fold", "0"))
    saved = (run / "split.csv").read_bytes(), (run / "split.json").read_bytes()
    main(args("fit", run, cohort, *folds, "--data.split.fold", "1"))  # a fold is an index into the one file
    assert ((run / "split.csv").read_bytes(), (run / "split.json").read_bytes()) == saved
    with pytest.raises(SplitError) as refused:
        main(args("fit", run, cohort, *folds, "--data.split.fold", "1", "--data.split.seed", "5"))
    assert str(refused.value) == (
        f"{run / 'split.csv'} was drawn with other options than this run asks for: data.split.seed 0 (saved) vs 5 "
        "(asked); pass the saved options, point data.split.file elsewhere, or delete it and split.json to draw a new "
        "split"
    )


@pytest.mark.parametrize(
    "option, value, message",
    [
        ("--data.loader.batch_size", "0", "data.loader.batch_size must be at least 1, got 0"),
        (
            "--data.split.val_fraction",
            "1.5",
            "data.split.val_fraction 1.5 and data.split.test_fraction 0.0 must each be in [0, 1) and leave training "
            "data",
        ),
    ],
)
def test_an_option_that_cannot_work_ends_the_command_in_one_line(
    cohort, tmp_path, monkeypatch, capsys, option, value, message
):
    """jsonargparse wraps an option group's own error in a page about union types: the message is found under it."""
    monkeypatch.setattr(sys, "argv", ["adni_lightning", *tiny_args("fit", tmp_path / "run", cohort, option, value)])
    with pytest.raises(SystemExit) as exit_:
        run_from_command_line()
    assert exit_.value.code == 1
    err = capsys.readouterr().err
    assert err.splitlines()[-1] == f"python -m adni_lightning fit: error: {message}"
    assert "Traceback" not in err and not (tmp_path / "run").exists()
