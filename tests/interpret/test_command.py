"""``interpret``: the outputs of a run, and one-line errors for a checkpoint or split that does not fit."""

from __future__ import annotations

import sys
from pathlib import Path
from types import SimpleNamespace

import nibabel as nib
import numpy as np
import pandas as pd
import pytest
import torch
import yaml
from lightning.pytorch import Trainer

from adni_lightning.cli import DEFAULT_CONFIG
from adni_lightning.commands import parser
from adni_lightning.commands.interpret import NO_OCCLUSION, InterpretError
from adni_lightning.data.contract import ContractError
from adni_lightning.data.datamodule import ADNIDataModule
from adni_lightning.data.labels import DEFAULT_CHANNELS
from adni_lightning.interpret.callback import BY_CHANNEL, Interpreter
from adni_lightning.interpret.ranking import IMPORTANCE_COLUMNS, RANKING_COLUMNS
from adni_lightning.main import main, overview
from tests.helpers import tiny_args, trained_run

pytest.importorskip("captum")


def interpret_args(run: dict[str, Path], *extra: str) -> list[str]:
    return tiny_args(
        "interpret",
        run["run"],
        run["cohort"],
        "--ckpt_path",
        str(run["ckpt"]),
        "--ig_steps",
        "2",
        "--bootstrap",
        "50",
        *extra,
    )


def test_interpret_writes_every_output(run, capsys):
    main(interpret_args(run, "--max_images", "4"))
    out = run["run"] / "interpret"
    images = pd.read_csv(out / "images.csv", dtype={"image_id": str})
    split = pd.read_csv(run["run"] / "split.csv", dtype=str)
    assert len(images) == 4 and set(images["image_id"]) <= set(split.loc[split["split"] == "val", "image_id"])
    assert (images["occlusion_s"] > 0).all() and (images["ig_s"] > 0).all()
    assert (images["ig_convergence_delta"].abs() < 0.5).all()  # gradients flowed: IG's sum tracks the change of p
    # predict's own table, for the same images and probabilities; nothing in the training run's folder
    predictions = pd.read_csv(out / "predictions.csv", dtype={"image_id": str}).set_index("image_id")
    probabilities = ["p_CN", "p_MCI", "p_AD"]
    np.testing.assert_allclose(predictions.loc[images["image_id"], probabilities], images[probabilities], atol=1e-5)
    assert not (run["run"] / "predictions.csv").exists() and not (run["run"] / "predict").exists()
    assert f"interpret: 4 val image(s) explained into {out} (occlusion " in capsys.readouterr().out

    importance = pd.read_csv(out / "structure_importance.csv")
    assert list(importance.columns) == list(IMPORTANCE_COLUMNS)
    assert set(importance["class"]) == {"CN", "MCI", "AD"} and set(importance["image_id"]) == set(images["image_id"])
    # delta_p of one structure sums to 0 over the classes (probabilities sum to one before and after)
    assert importance.groupby(["image_id", "label_id"])["delta_p"].sum().abs().max() < 1e-5

    ranking = pd.read_csv(out / "structure_ranking.csv")
    assert list(ranking.columns) == list(RANKING_COLUMNS)
    assert set(ranking["level"]) == {"structure", "bilateral"}
    hippocampus = ranking[(ranking["level"] == "bilateral") & (ranking["structure"] == "Hippocampus")]
    assert set(hippocampus["label_ids"]) == {"17+53"}
    for _, part in ranking.groupby(["class", "level"]):
        assert list(part["rank"]) == list(range(1, len(part) + 1))
        assert (part["mean_delta_p"].abs().diff().dropna() <= 0).all()

    for name in ("structure_ranking.png", "structure_ranking_bilateral.png"):
        assert (out / name).stat().st_size > 0
    assert list((out / "tensorboard").glob("events.out.tfevents.*"))
    manifest = pd.read_csv(run["cohort"] / "ADNI_1p5T_Filtered.csv", dtype=str)
    group = dict(zip(manifest["Image Data ID"], manifest["Group"]))
    for row in images.itertuples():
        source = nib.load(run["cohort"] / group[row.image_id] / f"{row.image_id}.nii_aseg_deep.mgz")
        saved = nib.load(out / row.attribution_file)
        assert saved.shape == source.shape and np.allclose(saved.affine, source.affine)
    correct = images[images["predicted"] == images["group"]]
    for klass in correct["group"].unique():
        assert (out / f"mean_attribution_{klass}.png").is_file()
        assert nib.load(out / f"mean_attribution_{klass}.nii.gz").shape == (16, 16, 16)


def test_split_all_explains_the_whole_csv_with_each_images_side(run, tmp_path):
    out = tmp_path / "all"
    main(interpret_args(run, "--split", "all", "--max_images", "6", "--ig_steps", "0", "--out", str(out)))
    images = pd.read_csv(out / "images.csv", dtype={"image_id": str})
    sides = pd.read_csv(run["run"] / "split.csv", dtype=str).set_index("image_id")["split"]
    assert len(images) == 6 and (images["split"] == images["image_id"].map(sides)).all()
    assert "ig_s" not in images and not list((out / "attributions").glob("*.nii.gz"))  # --ig_steps 0: no IG
    # --max_images 6 in batches of 4: two batches scored (trainer.limit_predict_batches), their first 6 explained
    predictions = pd.read_csv(out / "predictions.csv", dtype={"image_id": str})
    assert len(predictions) == 8 and list(predictions["image_id"][:6]) == list(images["image_id"])


def _one_line_error(argv: list[str], error: type[Exception] = InterpretError) -> str:
    with pytest.raises(error) as caught:
        main(argv)
    message = str(caught.value)
    assert "\n" not in message
    return message


def test_no_test_split_is_a_one_line_error(run):
    message = _one_line_error(interpret_args(run, "--split", "test"))
    assert message.startswith("--split test:") and "no test images" in message and "test_fraction" in message


def test_a_checkpoints_preprocessing_is_adopted_as_predict_and_validate_adopt_it(run, tmp_path, capsys):
    """One rule for every command that scores a checkpoint: the images are read as the checkpoint was trained."""
    quick = ("--max_images", "2", "--ig_steps", "0")
    main(interpret_args(run, *quick, "--out", str(tmp_path / "as_trained")))
    capsys.readouterr()
    channels = '{"hippocampus": [17, 53], "amygdala": [18, 54]}'
    other = ("--data.preprocessing.image_size", "12", "--data.preprocessing.channels", channels)
    main(interpret_args(run, *quick, *other, "--out", str(tmp_path / "other")))
    printed = capsys.readouterr().out.splitlines()
    assert printed[:2] == [
        "predict: data.preprocessing.image_size 16 taken from the checkpoint (the config says 12)",
        "predict: data.preprocessing.channels ['hippocampus', 'amygdala', 'lateral_ventricle', 'inf_lat_vent', "
        "'cortex', 'white_matter', 'deep_grey', 'csf', 'hindbrain'] taken from the checkpoint (the config says "
        "['hippocampus', 'amygdala'])",
    ]
    expected = pd.read_csv(tmp_path / "as_trained" / "structure_importance.csv")
    pd.testing.assert_frame_equal(pd.read_csv(tmp_path / "other" / "structure_importance.csv"), expected)

    validate = tiny_args("validate", run["run"], run["cohort"], "--ckpt_path", str(run["ckpt"]), *other)
    main([*validate, "--trainer.logger", "false"])
    assert capsys.readouterr().out.splitlines()[0] == (
        "validate: data.preprocessing.image_size 16 taken from the checkpoint (the config says 12)"
    )


def test_a_checkpoint_of_other_tabular_features_is_a_one_line_error(run, tmp_path):
    out = tmp_path / "out"
    message = _one_line_error(interpret_args(run, "--data.tabular.volumes", "[]", "--out", str(out)), ContractError)
    assert message.startswith(
        f"--ckpt_path {run['ckpt']} does not fit this configuration: data.tabular.volumes: checkpoint "
        "['Left-Hippocampus', 'Right-Hippocampus', "
    )
    assert message.endswith(", config []")
    assert not out.exists()  # refused before anything is written


def test_integrated_gradients_under_inference_mode_is_a_one_line_error(tmp_path):
    interpreter = Interpreter(tmp_path / "out", ig_steps=2)
    with torch.inference_mode(), pytest.raises(InterpretError) as refused:
        interpreter.on_predict_start(Trainer(logger=False), torch.nn.Linear(1, 1))  # type: ignore[arg-type]
    assert str(refused.value) == (
        "Integrated Gradients needs gradients, which predict turns off under trainer.inference_mode true: "
        "pass --trainer.inference_mode false (or --ig_steps 0)"
    )


def test_more_than_one_process_is_a_one_line_error(tmp_path):
    trainer = SimpleNamespace(datamodule=ADNIDataModule(), world_size=2)
    with pytest.raises(InterpretError) as refused:
        Interpreter(tmp_path / "out", ig_steps=0).setup(trainer, torch.nn.Linear(1, 1), "predict")  # type: ignore[arg-type]
    assert str(refused.value) == (
        "interpret explains its images in one process, this run has 2: pass --trainer.devices 1"
    )
    assert not (tmp_path / "out").exists()


def test_missing_split_file_is_a_one_line_error(run, tmp_path):
    message = _one_line_error(interpret_args(run, "--data.split.file", str(tmp_path / "nowhere.csv")))
    assert "no split file" in message


def test_help_describes_every_option(capsys):
    with pytest.raises(SystemExit):
        parser("interpret").parse_args(["--help"])
    text = capsys.readouterr().out
    options = [a for a in parser("interpret")._actions if a.option_strings and a.dest not in ("help", "print_config")]
    assert {a.dest for a in options} >= {"config", "ckpt_path", "split", "out", "ig_steps", "max_images"}
    for action in options:
        assert action.help and action.option_strings[0] in text, action.dest
    assert "Which brain structures drive a prediction" in text and "95% intervals" in text
    assert "interpret  Which brain structures drive a prediction" in overview()


def test_intensity_inputs_get_voxel_attribution_only(run, capsys):
    """The label maps read as intensities: a pipeline check of the intensity path, not of its anatomy."""
    root = run["base"] / "intensity"
    kind = ("--data.preprocessing.input_kind", "intensity", "--data.tabular.volumes", "[]")
    main(tiny_args("fit", root, run["cohort"], "--trainer.max_epochs", "1", *kind))
    main(
        tiny_args(
            "interpret",
            root,
            run["cohort"],
            "--ckpt_path",
            str(root / "checkpoints" / "last.ckpt"),
            "--ig_steps",
            "2",
            "--max_images",
            "2",
            *kind,
        )
    )
    assert NO_OCCLUSION in capsys.readouterr().out
    out = root / "interpret"
    assert not (out / "structure_importance.csv").exists()
    assert len(list((out / "attributions").glob("*_ig.nii.gz"))) == 2


@pytest.mark.slow
def test_occupancy_inputs_are_occluded_by_channel_and_attributed(run, capsys):
    root = run["base"] / "occupancy"
    encoding = ("--data.preprocessing.label_encoding", "occupancy")
    main(tiny_args("fit", root, run["cohort"], "--trainer.max_epochs", "1", *encoding))
    checkpoint = str(root / "checkpoints" / "last.ckpt")
    main(
        tiny_args(
            "interpret",
            root,
            run["cohort"],
            "--ckpt_path",
            checkpoint,
            "--ig_steps",
            "2",
            "--max_images",
            "2",
            "--bootstrap",
            "20",
            *encoding,
        )
    )
    assert BY_CHANNEL in capsys.readouterr().out
    out = root / "interpret"
    importance = pd.read_csv(out / "structure_importance.csv")
    assert set(importance["structure"]) <= set(DEFAULT_CHANNELS) and "hippocampus" in set(importance["structure"])
    hippocampus = importance[importance["structure"] == "hippocampus"]
    assert set(hippocampus["label_id"]) == {"17+53"} and (hippocampus["voxels"] > 0).all()
    assert importance.groupby(["image_id", "structure"])["delta_p"].sum().abs().max() < 1e-5  # probabilities move
    assert importance["delta_p"].abs().max() > 0
    assert len(list((out / "attributions").glob("*_ig.nii.gz"))) == 2


def test_missing_captum_says_how_to_install_it(monkeypatch):
    from adni_lightning.interpret.attribution import captum_attr

    monkeypatch.setitem(sys.modules, "captum.attr", None)
    with pytest.raises(ImportError, match=r"pip install 'adni_lightning\[interpret\]'"):
        captum_attr()


@pytest.mark.slow
def test_a_wide_and_deep_run_trains_saves_and_is_interpreted(tmp_path, cohort_template, capsys):
    """``--model.fusion wide_deep``: a run trains, its checkpoint rebuilds the network, IG and occlusion run on it."""
    wide_deep = ("--model.fusion", "wide_deep", "--model.deep_weight_decay", "0.5")
    run = trained_run(tmp_path, cohort_template, *wide_deep)
    checkpoint = torch.load(run["ckpt"], map_location="cpu", weights_only=True)
    assert (checkpoint["hyper_parameters"]["fusion"], checkpoint["hyper_parameters"]["deep_weight_decay"]) == (
        "wide_deep",
        0.5,
    )
    assert checkpoint["state_dict"]["net.deep.classifier.weight"].abs().sum() > 0  # the deep branch moved off zero
    decay = yaml.safe_load(DEFAULT_CONFIG.read_text())["model"]["optimizer"]["init_args"]["weight_decay"]
    assert [group["weight_decay"] for group in checkpoint["optimizer_states"][0]["param_groups"]] == [decay, 0.5]
    main(interpret_args(run, "--max_images", "2", *wide_deep))
    images = pd.read_csv(run["run"] / "interpret" / "images.csv", dtype={"image_id": str})
    assert len(images) == 2 and (images["occlusion_s"] > 0).all() and (images["ig_s"] > 0).all()
    assert (images["ig_convergence_delta"].abs() < 0.5).all()
    assert "interpret: 2 val image(s) explained" in capsys.readouterr().out
