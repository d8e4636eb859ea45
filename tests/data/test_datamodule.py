import logging
from pathlib import Path

import nibabel as nib
import numpy as np
import pandas as pd
import pytest
import torch

from adni_lightning.data.augment import HemisphereFlip
from adni_lightning.data.cache import CacheDirError
from adni_lightning.data.contract import ContractError
from adni_lightning.data.datamodule import ADNIDataModule
from adni_lightning.data.dataset import LoaderSpec
from adni_lightning.data.labels import DEFAULT_CHANNELS
from adni_lightning.data.manifest import CSV_NAME, ManifestError, ManifestSpec, build_manifest
from adni_lightning.data.preprocess import Preprocessing
from adni_lightning.data.split import SplitError, SplitSpec, split_digest


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


def test_fold_runs_read_one_shared_split_and_a_checkpoint_of_one_fold_is_refused_for_another(cohort, tmp_path):
    """``cv``'s fold runs: one split.csv with a fold column, a fold is an index into it; nothing else is written."""
    path = tmp_path / "cv" / "split.csv"
    folds = {}
    for fold in (1, 0, 2):
        dm = _datamodule(cohort, tmp_path, split=SplitSpec(folds=3, fold=fold, test_fraction=0.2, file=str(path)))
        dm.prepare_data()
        dm.setup("fit")
        folds[fold] = dm
    assert sorted(p.name for p in path.parent.iterdir()) == ["split.csv", "split.json"]
    saved = pd.read_csv(path, dtype=str)
    assert set(saved["split"]) == {"cv", "test"}
    for fold, dm in folds.items():
        val = set(saved.loc[saved["fold"] == str(fold), "image_id"])
        assert set(dm.datasets["val"].rows["image_id"]) == val
        assert set(dm.datasets["train"].rows["image_id"]) == set(saved.loc[saved["split"] == "cv", "image_id"]) - val
        assert set(dm.datasets["test"].rows["image_id"]) == set(saved.loc[saved["split"] == "test", "image_id"])
    state = folds[1].checkpoint_state()
    folds[1].check_checkpoint_state(state, "fit", "fold 1's last.ckpt")
    with pytest.raises(ContractError) as refused:
        folds[2].check_checkpoint_state(state, "fit", "fold 1's last.ckpt")
    moved = folds[2].split.merge(folds[1].split, on="image_id").query("split_x != split_y")
    first = moved.iloc[0]
    why = (
        "it would be scored on images it was trained on"
        if first["split_y"] == "train"
        else "held-out images would be trained on"
    )
    assert str(refused.value) == (
        f"fold 1's last.ckpt does not fit this configuration: data.split: {len(moved)} image(s) of {path} are on "
        f"another side than when the checkpoint was trained, e.g. {first['image_id']}: checkpoint {first['split_y']}, "
        f"config {first['split_x']} ({why})"
    )


def test_predict_over_everything_marks_the_fold_sides_of_a_k_fold_file(cohort, tmp_path):
    path = tmp_path / "cv" / "split.csv"
    _datamodule(cohort, tmp_path, split=SplitSpec(folds=3, fold=0, file=str(path))).prepare_data()
    dm = _datamodule(cohort, tmp_path, split=SplitSpec(folds=3, fold=2, file=str(path)))
    marked = dm._marked_with_saved_split(dm.manifest()).set_index("image_id")["split"]
    saved = pd.read_csv(path, dtype=str).set_index("image_id")
    assert (marked == saved["fold"].map({"2": "val", "0": "train", "1": "train"})).all()


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


def _corrupt_body(row: pd.Series) -> str:
    """Flip the gzip trailer's CRC32: the header still reads, the voxels no longer decode."""
    blob = bytearray(Path(row["path"]).read_bytes())
    blob[-8] ^= 0xFF
    Path(row["path"]).write_bytes(bytes(blob))
    return "cannot decode voxels (IsalError: Error -6 Incorrect checksum"


def _make_fractional(row: pd.Series) -> str:
    """Rewrite as float voxels half-way between ids: same grid and header shape, no label map."""
    image = nib.load(row["path"])
    nib.save(nib.MGHImage(np.asarray(image.dataobj, np.float32) + 0.5, image.affine), row["path"])
    return "voxel values are not integers: this is an intensity image, not a label map"


def _break_two_files(cohort) -> dict[str, tuple[int, str, str]]:
    """Two faults behind intact headers (the manifest's check passes them); image id → (CSV row, file, reason)."""
    manifest = build_manifest(ManifestSpec(data_dir=str(cohort)))
    return {
        row["image_id"]: (row["row"], row["path"], damage(row))
        for row, damage in ((manifest.iloc[2], _corrupt_body), (manifest.iloc[5], _make_fractional))
    }


def test_decode_faults_name_their_csv_rows_all_at_once(cohort, tmp_path):
    broken = _break_two_files(cohort)
    dm = _datamodule(cohort, tmp_path)
    with pytest.raises(ManifestError) as err:
        dm.prepare_data()
    heading, *lines = str(err.value).splitlines()
    total = len(build_manifest(ManifestSpec(data_dir=str(cohort))))
    assert heading == (
        f"{cohort / CSV_NAME}: 2 of {total} image files cannot be used "
        "(set on_bad_rows: skip to train without them): 1 × cannot decode voxels, 1 × voxel values are not integers"
    )
    assert len(lines) == 4 and lines[0] == "  cannot decode voxels (1 row(s)):"
    assert lines[2] == "  voxel values are not integers (1 row(s)):"
    for line, (image_id, (row, path, reason)) in zip(lines[1::2], broken.items()):
        assert line.startswith(f"    CSV row {row}, image {image_id}, file {path}: {reason}"), line


def test_one_decode_fault_is_one_line(cohort, tmp_path):
    row = build_manifest(ManifestSpec(data_dir=str(cohort))).iloc[5]
    reason = _make_fractional(row)
    with pytest.raises(ManifestError) as err:
        _datamodule(cohort, tmp_path).prepare_data()
    assert str(err.value) == (
        f"{cohort / CSV_NAME}: CSV row {row['row']}, image {row['image_id']}, file {row['path']}: {reason} "
        "(set on_bad_rows: skip to train without them)"
    )


def test_skipped_decode_faults_stay_out_for_other_processes_and_later_runs(cohort, tmp_path, caplog):
    broken = _break_two_files(cohort)
    skip = ManifestSpec(data_dir=str(cohort), on_bad_rows="skip")
    dm = _datamodule(cohort, tmp_path, manifest=skip)
    other = _datamodule(cohort, tmp_path, manifest=skip)  # another DDP rank, which read the CSV early
    assert set(broken) <= set(other.manifest()["image_id"])  # nothing decoded yet
    with caplog.at_level(logging.WARNING, logger="adni_lightning"):
        dm.prepare_data()
    for image_id, (row, path, _) in broken.items():
        assert f"CSV row {row}, image {image_id}, file {path}: " in caplog.text
    assert "skipped, on_bad_rows: skip" in caplog.text
    dm.setup("fit")
    everything = set(build_manifest(ManifestSpec(data_dir=str(cohort)))["image_id"])
    used = {i for side in ("train", "val", "test") for i in dm.datasets[side].rows["image_id"]}
    assert used == everything - set(broken)
    # The other rank, and a later `validate`: setup without prepare_data sees the same images and split.
    for later in (other, _datamodule(cohort, tmp_path, manifest=skip)):
        later.setup("validate")
        assert split_digest(later.split) == split_digest(dm.split)
        assert set(later.manifest()["image_id"]) == everything - set(broken)
    # With on_bad_rows: error, a later run names them from the record, before anything is decoded again.
    with pytest.raises(ManifestError, match="2 of .* image files cannot be used"):
        _datamodule(cohort, tmp_path).manifest()


def test_a_cache_directory_that_cannot_be_written_is_named_before_the_split(cohort, tmp_path):
    (tmp_path / "file").write_text("")
    dm = _datamodule(cohort, tmp_path, cache_dir=str(tmp_path / "file" / "cache"))
    with pytest.raises(CacheDirError, match="point data.cache_dir at a writable folder"):
        dm.prepare_data()


def _listing(folder: Path) -> dict[str, bytes]:
    return {str(p.relative_to(folder)): p.read_bytes() for p in sorted(folder.rglob("*")) if p.is_file()}


def test_the_default_cache_of_real_data_is_the_users_not_the_data_folder(cohort, tmp_path, user_cache):
    before = _listing(cohort)
    dm = _datamodule(cohort, tmp_path, cache_dir=None)
    dm.prepare_data()
    dm.setup("fit")
    assert _listing(cohort) == before  # a shared, read-only download works: nothing is written into it
    folder = cohort.resolve()
    assert dm.cache.root.parent == user_cache / "adni_lightning"
    assert dm.cache.root.name.startswith(f"{folder.name}-") and len(dm.cache.root.name) == len(folder.name) + 13
    assert len(list(dm.cache.root.glob("*.npy"))) == len(dm.manifest())
    other = tmp_path / "other" / "K1data"
    assert ADNIDataModule(manifest=ManifestSpec(data_dir=str(other))).cache.root != dm.cache.root  # one per cohort
    assert ADNIDataModule(manifest=ManifestSpec(data_dir=str(cohort)), cache_dir="x").cache.root == Path("x")


def test_the_synthetic_cohorts_cache_stays_in_the_folder_it_owns(cohort, tmp_path, user_cache):
    from adni_lightning.synth import MARKER_NAME, SyntheticDataModule

    def cache_of(folder):
        return SyntheticDataModule(manifest=ManifestSpec(data_dir=str(folder))).cache.root

    assert cache_of(tmp_path / "synthetic") == tmp_path / "synthetic" / ".cache"  # to be generated
    assert cache_of(cohort) == cohort / ".cache"  # an earlier synthetic cohort
    (cohort / MARKER_NAME).unlink()  # a download read with the synthetic config: not its folder
    assert cache_of(cohort).parent == user_cache / "adni_lightning"


def test_workers_are_capped_by_the_cores_with_one_info_line(cohort, tmp_path, caplog, recwarn):
    from adni_lightning.data.dataset import available_cores

    cores = available_cores()
    dm = _datamodule(cohort, tmp_path, loader=LoaderSpec(batch_size=4, num_workers=cores + 6))
    with caplog.at_level(logging.INFO, logger="adni_lightning"):
        dm.prepare_data()
        dm.setup("fit")
        loaders = [dm.train_dataloader(), dm.val_dataloader()]
    assert [loader.num_workers for loader in loaders] == [cores, cores]
    capped = [r.getMessage() for r in caplog.records if "num_workers" in r.getMessage()]
    assert capped == [f"data.loader.num_workers {cores + 6}: using {cores}, the cores available"]
    assert all(r.levelno == logging.INFO for r in caplog.records if "num_workers" in r.getMessage())
    assert not [w for w in recwarn if "worker" in str(w.message)]  # torch's "suggested max" warning


def test_a_checkpoint_command_run_elsewhere_reads_the_recorded_data(cohort, tmp_path, monkeypatch, caplog):
    """A relative ``data_dir`` names another folder from another working directory: the recorded one is read."""
    trained = _datamodule(cohort, tmp_path)
    trained.prepare_data()
    trained.setup("fit")
    state = trained.checkpoint_state()
    assert state["data_dir"] == str(cohort.absolute())
    elsewhere = tmp_path / "elsewhere"
    elsewhere.mkdir()
    monkeypatch.chdir(elsewhere)
    dm = _datamodule(cohort, tmp_path, manifest=ManifestSpec(data_dir="K1data"))
    with caplog.at_level(logging.INFO, logger="adni_lightning"):
        dm.check_checkpoint_state(state, "validate", "--ckpt_path x.ckpt")
    missing = elsewhere / "K1data" / CSV_NAME
    assert f"validate: {missing} not found; reading the data the checkpoint was trained on, {cohort}" in [
        r.getMessage() for r in caplog.records
    ]
    assert dm.manifest_spec.root == cohort and not list(elsewhere.iterdir())
    # A cohort of its own that exists (predict on new data) is read, and the console says which.
    (elsewhere / "K1data").symlink_to(cohort)
    caplog.clear()
    dm = _datamodule(cohort, tmp_path, manifest=ManifestSpec(data_dir="K1data"))
    with caplog.at_level(logging.INFO, logger="adni_lightning"):
        dm.check_checkpoint_state(state, "validate", "--ckpt_path x.ckpt")
    assert [r.getMessage() for r in caplog.records if r.getMessage().startswith("validate:")] == [
        f"validate: the checkpoint was trained on the data in {cohort}; this command reads {elsewhere / 'K1data'} "
        "(data.manifest.data_dir)"
    ]
