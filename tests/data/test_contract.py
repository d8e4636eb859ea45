"""The data contract: each differing field named by its option with both values; splits compared by assignment."""

from __future__ import annotations

import logging
from pathlib import Path

import pandas as pd
import pytest

from adni_lightning.data.clinical import TaskSpec
from adni_lightning.data.contract import SUMMARY_KEY, ContractError, check_contract, cohort_summary, data_contract
from adni_lightning.data.preprocess import Preprocessing
from adni_lightning.data.tabular import TabularEncoder

SPLIT = pd.DataFrame(
    {"image_id": ["I1", "I2", "I3", "I4"], "subject": ["a", "a", "b", "c"], "split": ["train", "train", "val", "val"]}
)


def _contract(split: pd.DataFrame | None = SPLIT, classes=("CN", "MCI", "AD"), volumes=(), **preprocessing) -> dict:
    encoder = TabularEncoder(volumes).fit([70.0, 80.0], [[0.1] * len(volumes), [0.2] * len(volumes)])
    return data_contract(classes, Preprocessing(**preprocessing), encoder, split)


def _refusal(trained: dict, current: dict) -> str:
    with pytest.raises(ContractError) as refused:
        check_contract(trained, current, "model.ckpt", Path("split.csv"))
    return str(refused.value)


def test_the_same_configuration_fits():
    check_contract(_contract(), _contract(), "model.ckpt", Path("split.csv"))


def test_each_differing_field_is_named_by_its_option_with_both_values():
    message = _refusal(_contract(image_size=16, crop=False), _contract(image_size=(16, 16, 24), classes=("CN", "AD")))
    assert message == (
        "model.ckpt does not fit this configuration: data.manifest.classes: checkpoint ['CN', 'MCI', 'AD'], config "
        "['CN', 'AD']; data.preprocessing.image_size: checkpoint [16, 16, 16], config [16, 16, 24]; "
        "data.preprocessing.crop: checkpoint False, config True"
    )
    assert _refusal(_contract(), _contract(volumes=("Left-Hippocampus",))).endswith(
        "data.tabular.volumes: checkpoint [], config ['Left-Hippocampus']"
    )
    hippocampus = {"hippocampus": [17, 53]}
    assert _refusal(_contract(channels=hippocampus), _contract(channels={"hippocampus": [17]})).endswith(
        "data.preprocessing.channels: checkpoint {'hippocampus': [17, 53]}, config {'hippocampus': [17]}"
    )
    intensity = _contract(input_kind="intensity")
    assert intensity["preprocessing"]["channels"] is None  # intensities have no channels to compare
    assert _refusal(intensity, _contract()).endswith(
        "data.preprocessing.input_kind: checkpoint intensity, config labelmap"
    )


def test_a_split_is_compared_image_by_image():
    moved = SPLIT.assign(split=["train", "train", "train", "val"])
    assert _refusal(_contract(), _contract(moved)).endswith(
        "data.split: 1 image(s) of split.csv are on another side than when the checkpoint was trained, e.g. I3: "
        "checkpoint val, config train (held-out images would be trained on)"
    )
    added = pd.concat([SPLIT, pd.DataFrame({"image_id": ["I5"], "subject": ["d"], "split": ["val"]})])
    assert _refusal(_contract(), _contract(added)).endswith(
        "data.split: 1 image(s) of split.csv were not in the checkpoint's split, e.g. I5 (now val): the split was "
        "drawn again or for other data"
    )
    check_contract(_contract(), _contract(SPLIT.iloc[:3]), "model.ckpt")  # a row skipped since: a subset, no leak
    check_contract(_contract(), _contract(None), "model.ckpt")  # predict over a new cohort compares no split


def test_a_checkpoint_older_than_the_contract_is_checked_on_what_it_holds(caplog):
    full = _contract()
    old = {key: full[key] for key in ("tabular", "split_digest", "classes")}
    with caplog.at_level(logging.WARNING):
        check_contract(old, _contract(image_size=24), "old.ckpt")
    assert "old.ckpt predates the data contract: its classes, tabular features and split are checked" in caplog.text
    message = _refusal(old, _contract(SPLIT.assign(split="train")))
    assert message.startswith("model.ckpt does not fit this configuration: data.split: split.csv is not the split")
    with pytest.raises(ContractError) as refused:
        check_contract(None, full, "foreign.ckpt")
    assert str(refused.value) == (
        "foreign.ckpt holds no data contract (no 'data' entry): it was not written by adni_lightning"
    )


ROWS = pd.DataFrame(
    {
        "image_id": ["I1", "I2", "I3", "I4"],
        "subject": ["a", "a", "b", "c"],
        "label": ["CN", "CN", "AD", "AD"],
        "age": [70.0, 71.0, 80.0, 75.0],
        "sex": ["F", "F", "M", "F"],
    }
)
VOLUMES = pd.DataFrame({"Left-Hippocampus": [4.0, 3.0, 2.0, 3.0], "LabelledVolume": [1000.0, 1000.0, 500.0, 1000.0]})


def test_a_cohort_summary_counts_images_subjects_sexes_and_icv_normalised_volumes():
    summary = cohort_summary(ROWS, ("CN", "MCI", "AD"), VOLUMES)
    assert summary["images"] == {"CN": 2, "MCI": 0, "AD": 2}
    assert summary["subjects"] == 3
    assert summary["sex"] == {"F": 2, "M": 1}  # one per subject
    assert summary["age_mean"] == 74.0 and summary["age_sd"] == pytest.approx(ROWS["age"].std())
    assert summary["volumes"] == {"Left-Hippocampus": pytest.approx({"mean": 0.0035, "sd": 0.0005773502691896})}
    assert cohort_summary(ROWS, ("CN", "AD"), None)["volumes"] == {}


def test_the_training_summary_is_stored_but_never_compared():
    summary = cohort_summary(ROWS, ("CN", "MCI", "AD"), VOLUMES)
    trained = data_contract(("CN", "MCI", "AD"), Preprocessing(), TabularEncoder().fit([70.0, 80.0]), SPLIT, summary)
    assert trained[SUMMARY_KEY] == summary
    check_contract(trained, _contract(), "model.ckpt")  # the configuration's own summary: none
    other = cohort_summary(ROWS.assign(age=60.0), ("CN", "MCI", "AD"), None)
    check_contract(trained, {**_contract(), SUMMARY_KEY: other}, "model.ckpt")
    old = {key: value for key, value in trained.items() if key != SUMMARY_KEY}
    check_contract(old, _contract(), "old.ckpt")


def test_a_checkpoint_trained_for_another_task_is_refused_in_one_line():
    progression = TaskSpec(label="progression").contract()
    trained = data_contract(
        ("sMCI", "pMCI"), Preprocessing(), TabularEncoder().fit([70.0, 80.0]), SPLIT, task=progression
    )
    check_contract(trained, {**trained}, "model.ckpt")
    shorter = TaskSpec(label="progression", horizon_months=24).contract()
    assert _refusal(trained, {**trained, "task": shorter}) == (
        "model.ckpt does not fit this configuration: data.task: checkpoint progression (horizon_months 36, reverters "
        "exclude, stable false), config progression (horizon_months 24, reverters exclude, stable false)"
    )
    # a checkpoint written before the task was in the contract was trained for the CSV's Group
    old = {key: value for key, value in _contract().items() if key != "task"}
    check_contract(old, _contract(), "old.ckpt")
    column = TaskSpec(label="column", column="DX", class_map={"MCI": None}).contract()
    message = _refusal(old, {**_contract(classes=("CN", "AD")), "task": column})
    assert message == (
        "model.ckpt does not fit this configuration: data.task: checkpoint group, config column DX (class_map "
        "{'MCI': None}); data.manifest.classes: checkpoint ['CN', 'MCI', 'AD'], config ['CN', 'AD']"
    )
    assert "\n" not in message
