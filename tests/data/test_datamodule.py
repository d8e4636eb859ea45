import pandas as pd
import pytest
import torch

from adni_lightning.data.augment import HemisphereFlip
from adni_lightning.data.contract import ContractError
from adni_lightning.data.datamodule import ADNIDataModule
from adni_lightning.data.dataset import LoaderSpec
from adni_lightning.data.labels import DEFAULT_CHANNELS
from adni_lightning.data.manifest import ManifestSpec
from adni_lightning.data.preprocess import Preprocessing
from adni_lightning.data.split import SplitError, SplitSpec


class TrainingStep:
    """Stands in for a Trainer in its first training step (what on_after_batch_transfer reads)."""

    training = True
    global_step = 0


def _datamodule(cohort, tmp_path, split_seed: int = 0, **kwargs) -> ADNIDataModule:
    defaults = dict(
        manifest=ManifestSpec(data_dir=str(cohort)),
        preprocessing=Preprocessing(image_size=16),
        loader=LoaderSpec(batch_size=4, num_workers=0),
        split=SplitSpec(seed=split_seed, file=str(tmp_path / "run" / "split.csv")),
        cache_dir=str(tmp_path / "cache"),
    )
    return ADNIDataModule(**{**defaults, **kwargs})


def test_shapes_are_known_right_after_init(tmp_path):
    assert ADNIDataModule().num_classes == 3
    assert ADNIDataModule().num_tabular_features == 3
    assert ADNIDataModule().in_channels == len(DEFAULT_CHANNELS)
    assert ADNIDataModule(preprocessing=Preprocessing(input_kind="intensity")).in_channels == 1
    two = ADNIDataModule(
        preprocessing=Preprocessing(channels={"hippocampus": [17, 53]}), manifest=ManifestSpec(classes=("CN", "AD"))
    )
    assert two.in_channels == 1 and two.num_classes == 2
    with pytest.raises(ValueError, match="9999"):
        ADNIDataModule(preprocessing=Preprocessing(channels={"x": [9999]}))


def test_prepare_setup_and_batches(cohort, tmp_path):
    dm = _datamodule(cohort, tmp_path)
    dm.prepare_data()
    dm.setup("fit")
    split = pd.read_csv(tmp_path / "run" / "split.csv")
    assert (split.groupby("subject")["split"].nunique() == 1).all()
    train_subjects = set(dm.datasets["train"].rows["subject"])
    assert not train_subjects & set(dm.datasets["val"].rows["subject"])
    train_ages = dm.datasets["train"].rows["age"]
    assert dm.encoder.age_mean == pytest.approx(train_ages.mean())  # training split only
    assert dm.encoder.age_mean != pytest.approx(dm.manifest()["age"].mean())
    batch = next(iter(dm.train_dataloader()))
    assert batch["volume"].shape == (4, 1, 16, 16, 16) and batch["volume"].dtype == torch.uint8
    assert "image" not in batch and batch["split"] == ["train"] * 4
    assert batch["tabular"].shape == (4, 3) and batch["tabular"].dtype == torch.float32
    assert batch["label"].dtype == torch.long and len(batch["image_id"]) == 4
    out = dm.on_after_batch_transfer(dict(batch), 0)
    assert out["image"].shape == (4, dm.in_channels, 16, 16, 16) and out["image"].dtype == torch.float32
    assert out["image"].sum(dim=1).max() <= 1  # one structure per voxel at most
    assert out["image"].sum() > 0
    assert dm.train_class_counts.sum() == len(dm.datasets["train"])


def test_split_file_is_reused_not_redrawn_and_other_options_are_refused(cohort, tmp_path):
    first = _datamodule(cohort, tmp_path, split_seed=1)
    first.prepare_data()
    path = tmp_path / "run" / "split.csv"
    edited = pd.read_csv(path, dtype=str)
    moved = edited.loc[edited["split"] == "train", "subject"].iloc[0]
    edited.loc[edited["subject"] == moved, "split"] = "val"  # a hand edit: a redrawn split would undo it
    edited.to_csv(path, index=False)
    second = _datamodule(cohort, tmp_path, split_seed=1)
    second.prepare_data()
    second.setup("validate")
    pd.testing.assert_frame_equal(pd.read_csv(path, dtype=str), edited)
    assert moved in set(second.datasets["val"].rows["subject"])
    with pytest.raises(SplitError) as refused:
        _datamodule(cohort, tmp_path, split_seed=2).prepare_data()
    assert str(refused.value) == (
        f"{path} was drawn with other options than this run asks for: data.split.seed 1 (saved) vs 2 (asked); "
        "pass the saved options, point data.split.file elsewhere, or delete it and split.json to draw a new split"
    )


def test_state_dict_carries_training_statistics(cohort, tmp_path):
    dm = _datamodule(cohort, tmp_path)
    dm.prepare_data()
    dm.setup("fit")
    state = dm.checkpoint_state()
    other = _datamodule(cohort, tmp_path)
    other.encoder.fit([50.0, 60.0])
    other.restore_checkpoint_state(state)
    assert other.encoder.state_dict() == dm.encoder.state_dict()
    with pytest.raises(ValueError, match="classes"):
        _datamodule(
            cohort, tmp_path, manifest=ManifestSpec(data_dir=str(cohort), classes=("CN", "AD"))
        ).restore_checkpoint_state(state)


def test_restoring_a_checkpoint_trained_on_another_split_is_refused(cohort, tmp_path):
    """The guard behind ``on_load_checkpoint``: a Trainer resuming without the CLI, and interpret."""
    dm = _datamodule(cohort, tmp_path)
    dm.prepare_data()
    dm.setup("fit")
    state = dm.checkpoint_state()
    path = tmp_path / "run" / "split.csv"
    split = pd.read_csv(path, dtype=str)
    val = split[split["split"] == "val"]
    subject = val.loc[val["group"] == val["group"].mode()[0], "subject"].iloc[0]
    moved = split.loc[split["subject"] == subject, "image_id"].tolist()
    split.loc[split["subject"] == subject, "split"] = "train"
    split.to_csv(path, index=False)
    resumed = _datamodule(cohort, tmp_path)
    resumed.setup("fit")
    with pytest.raises(ContractError) as refused:
        resumed.restore_checkpoint_state(state)
    assert str(refused.value) == (
        f"the checkpoint does not fit this configuration: data.split: {len(moved)} image(s) of {path} are on another "
        f"side than when the checkpoint was trained, e.g. {moved[0]}: checkpoint val, config train (held-out images "
        "would be trained on)"
    )


def test_empty_test_split_says_how_to_get_one(cohort, tmp_path):
    dm = _datamodule(cohort, tmp_path)
    dm.prepare_data()
    dm.setup("test")
    with pytest.raises(ValueError, match="test_fraction"):
        dm.test_dataloader()


def test_synthetic_cohort_is_generated_when_absent(tmp_path):
    from adni_lightning.synth import SyntheticCohort, SyntheticDataModule

    dm = SyntheticDataModule(
        cohort=SyntheticCohort(subjects=9, size=24, seed=1),
        manifest=ManifestSpec(data_dir=str(tmp_path / "synthetic")),
        preprocessing=Preprocessing(image_size=12),
        loader=LoaderSpec(num_workers=0),
        split=SplitSpec(val_fraction=0.4, file=str(tmp_path / "split.csv")),  # 2 AD subjects: 1 of them validates
    )
    dm.prepare_data()
    assert (tmp_path / "synthetic" / "ADNI_1p5T_Filtered.csv").is_file()
    dm.setup("predict")
    assert len(dm.datasets["predict"]) == len(dm.manifest())


def test_flip_happens_only_in_training(cohort, tmp_path):
    dm = _datamodule(cohort, tmp_path, augment=[HemisphereFlip(probability=1.0)])
    dm.prepare_data()
    dm.setup("fit")
    batch = next(iter(dm.val_dataloader()))

    plain = dm.on_after_batch_transfer(dict(batch), 0)["image"]
    dm.trainer = TrainingStep()
    flipped = dm.on_after_batch_transfer(dict(batch), 0)["image"]
    torch.testing.assert_close(flipped, plain.flip(2))  # default channels merge left and right
    assert not torch.equal(flipped, plain)


def test_collate_matches_torch_default_collate(cohort, tmp_path):
    from torch.utils.data import default_collate

    from adni_lightning.data.dataset import collate_volumes

    dm = _datamodule(cohort, tmp_path)
    dm.prepare_data()
    dm.setup("fit")
    items = [dm.datasets["train"][i] for i in range(3)]
    ours, reference = collate_volumes(items), default_collate(items)
    assert set(ours) == set(reference)
    for key in ("volume", "tabular", "label"):
        assert torch.equal(ours[key], reference[key]) and ours[key].dtype == reference[key].dtype
    assert ours["image_id"] == reference["image_id"] and ours["group"] == reference["group"]


def test_a_label_map_flip_swaps_left_and_right_labels(cohort, tmp_path):
    """With channels that keep the hemispheres apart, the flip must move the left hippocampus channel's voxels
    into the right hippocampus channel (the DataModule passes the swap table)."""
    apart = Preprocessing(image_size=16, channels={"left_hippocampus": [17], "right_hippocampus": [53]})
    dm = _datamodule(cohort, tmp_path, preprocessing=apart, augment=[HemisphereFlip(probability=1.0)])
    dm.prepare_data()
    dm.setup("fit")
    batch = next(iter(dm.val_dataloader()))

    plain = dm.on_after_batch_transfer(dict(batch), 0)
    dm.trainer = TrainingStep()
    flipped = dm.on_after_batch_transfer(dict(batch), 0)
    assert plain["image"][:, 0].sum() > 0
    torch.testing.assert_close(flipped["image"][:, 1], plain["image"][:, 0].flip(1))  # left → mirrored right
    torch.testing.assert_close(flipped["image"][:, 0], plain["image"][:, 1].flip(1))


def test_volumes_as_covariates_need_label_maps(cohort, tmp_path):
    from adni_lightning.data.tabular import TabularSpec

    dm = _datamodule(
        cohort,
        tmp_path,
        preprocessing=Preprocessing(input_kind="intensity"),
        tabular=TabularSpec(("Left-Hippocampus",)),
    )
    with pytest.raises(ValueError, match="data.tabular.volumes needs label maps"):
        dm.prepare_data()
    assert not (tmp_path / "run" / "split.csv").exists()  # refused before anything is written
