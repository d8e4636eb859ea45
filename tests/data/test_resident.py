from pathlib import Path

import numpy as np
import pytest
import torch
from lightning.fabric.utilities.distributed import DistributedSamplerWrapper

from adni_lightning.data.augment import HemisphereFlip, RandomShift
from adni_lightning.data.datamodule import ADNIDataModule
from adni_lightning.data.dataset import LoaderSpec
from adni_lightning.data.manifest import ManifestSpec
from adni_lightning.data.preprocess import Preprocessing
from adni_lightning.data.resident import ResidentCohort, ResidentDataset
from adni_lightning.data.split import SplitSpec
from adni_lightning.data.tabular import TabularSpec

#: As in the packaged synthetic config: the augmentations and two of its covariate volumes.
AUGMENT = [HemisphereFlip(probability=0.5), RandomShift(max_voxels=2)]
VOLUMES = TabularSpec(("Left-Hippocampus", "Right-Lateral-Ventricle"))


class Step:
    """Stands in for a Trainer at a training step (what on_after_batch_transfer and the loaders read)."""

    training = True

    def __init__(self) -> None:
        self.global_step = 0


def _datamodule(
    cohort: Path,
    tmp_path: Path,
    device_cache: bool,
    preprocessing: Preprocessing = Preprocessing(image_size=16),
    **kwargs,
) -> ADNIDataModule:
    dm = ADNIDataModule(
        manifest=ManifestSpec(data_dir=str(cohort)),
        preprocessing=preprocessing,
        loader=LoaderSpec(batch_size=4, num_workers=0, device_cache=device_cache),
        split=SplitSpec(file=str(tmp_path / "split.csv")),
        tabular=VOLUMES,
        augment=AUGMENT,
        cache_dir=str(tmp_path / "cache"),
        **kwargs,
    )
    dm.prepare_data()
    dm.setup("fit")
    return dm


def _assert_same_batch(ours: dict, reference: dict) -> None:
    assert list(ours) == list(reference)
    for key, value in reference.items():
        if isinstance(value, torch.Tensor):
            assert ours[key].dtype == value.dtype and ours[key].device == value.device, key
            assert torch.equal(ours[key], value), key
        else:
            assert ours[key] == value, key


def _training_batches(dm: ADNIDataModule, epochs: int) -> list[dict]:
    """Every training batch of ``epochs`` epochs after on_after_batch_transfer, the step advancing as in fit."""
    loader = dm.train_dataloader()
    step, batches = Step(), []
    dm.trainer = step
    for epoch in range(epochs):
        loader.sampler.set_epoch(epoch)
        for batch in loader:
            batches.append(dm.on_after_batch_transfer(batch, 0))
            step.global_step += 1
    return batches


def test_training_batches_are_the_loader_paths_bit_for_bit(cohort, tmp_path):
    reference = _training_batches(_datamodule(cohort, tmp_path, device_cache=False), epochs=2)
    resident = _datamodule(cohort, tmp_path, device_cache=True)
    assert isinstance(resident.train_dataloader().dataset, ResidentDataset)
    batches = _training_batches(resident, epochs=2)
    assert len(batches) == len(reference) == 2 * -(-len(resident.datasets["train"]) // 4)
    for ours, theirs in zip(batches, reference):
        _assert_same_batch(ours, theirs)
    assert batches[0]["image_id"] != batches[len(batches) // 2]["image_id"]  # the epochs were shuffled apart
    train = resident.datasets["train"]
    row = {image_id: i for i, image_id in enumerate(train.text["image_id"])}
    cached = [torch.stack([torch.from_numpy(train[row[i]]["volume"]) for i in b["image_id"]]) for b in batches]
    assert any(not torch.equal(b["volume"], c) for b, c in zip(batches, cached))  # augmented, not just read
    assert resident.resident.volumes.dtype == torch.uint8
    assert resident.resident.volumes.shape == (len(resident.manifest()), 1, 16, 16, 16)


def test_occupancy_fractions_are_held_with_their_channels_and_batched_as_the_loader_path(cohort, tmp_path):
    occupancy = Preprocessing(image_size=16, label_encoding="occupancy")
    reference = _training_batches(_datamodule(cohort, tmp_path, False, occupancy), epochs=1)
    resident = _datamodule(cohort, tmp_path, True, occupancy)
    batches = _training_batches(resident, epochs=1)
    for ours, theirs in zip(batches, reference, strict=True):
        _assert_same_batch(ours, theirs)
    assert resident.resident.volumes.shape == (len(resident.manifest()), 9, 16, 16, 16)
    assert resident.resident.nbytes == len(resident.manifest()) * 9 * 16**3
    image = batches[0]["image"]
    assert image.shape == (4, 9, 16, 16, 16) and image.dtype == torch.float32
    assert 0 < image.max() <= 1 and ((image > 0) & (image < 1)).any()  # fractions, not one-hot
    assert batches[0]["volume"].shape == (4, 1, 16, 16, 16)  # the dominant structure, to draw


@pytest.mark.parametrize("side", ["val", "predict"])
def test_evaluation_batches_are_the_loader_paths_bit_for_bit(cohort, tmp_path, side):
    loader_path = _datamodule(cohort, tmp_path, device_cache=False)
    resident = _datamodule(cohort, tmp_path, device_cache=True)
    reference = [loader_path.on_after_batch_transfer(b, 0) for b in getattr(loader_path, f"{side}_dataloader")()]
    batches = [resident.on_after_batch_transfer(b, 0) for b in getattr(resident, f"{side}_dataloader")()]
    assert len(batches) == len(reference) > 1
    for ours, theirs in zip(batches, reference):
        _assert_same_batch(ours, theirs)


def test_covariates_are_encoded_with_the_statistics_restored_after_setup(cohort, tmp_path):
    """``predict`` restores the checkpoint's statistics after the datasets exist: the batches must use them."""
    dm = _datamodule(cohort, tmp_path, device_cache=True)
    state = dm.encoder.state_dict()
    dm.encoder.load_state_dict({**state, "age_mean": state["age_mean"] + 10.0})
    batch = next(iter(dm.val_dataloader()))
    ages = dm.datasets["val"].rows["age"].to_numpy()[:4]
    expected = (ages - state["age_mean"] - 10.0) / state["age_std"]
    np.testing.assert_allclose(batch["tabular"][:, 0].numpy(), expected, rtol=1e-6)


def test_ddp_shards_are_the_loader_paths(cohort, tmp_path):
    """Each of 2 ranks gets, from the sampler Lightning injects under DDP, the batches of the loader path."""
    paths = {cache: _datamodule(cohort, tmp_path, device_cache=cache) for cache in (False, True)}
    for rank in (0, 1):
        shards = {}
        for cache, dm in paths.items():
            loader = dm.train_dataloader()
            sampler = DistributedSamplerWrapper(loader.sampler, num_replicas=2, rank=rank, shuffle=True, seed=42)
            sampler.set_epoch(1)
            batches = torch.utils.data.DataLoader(
                loader.dataset, batch_size=4, sampler=sampler, collate_fn=loader.collate_fn
            )
            shards[cache] = list(batches)
        assert len(shards[True]) == len(shards[False]) > 0
        for ours, theirs in zip(shards[True], shards[False]):
            _assert_same_batch(ours, theirs)


def test_the_cohort_is_loaded_once_for_every_side_and_stage(cohort, tmp_path):
    dm = _datamodule(cohort, tmp_path, device_cache=True)
    dm.train_dataloader()
    first = dm.resident
    dm.setup("validate")
    dm.val_dataloader()
    assert dm.resident is first


def test_a_repeated_entry_gets_its_own_row(cohort, tmp_path):
    dm = _datamodule(cohort, tmp_path, device_cache=False)
    entries = dm.datasets["val"].entries
    resident = ResidentCohort([*entries, entries[0], entries[0]], torch.device("cpu"))
    assert resident.volumes.shape[0] == len(entries) + 2
    assert resident.position[entries[0]] == 0
    assert torch.equal(resident.volumes[-1], resident.volumes[0])
    assert resident.nbytes == (len(entries) + 2) * 16**3
