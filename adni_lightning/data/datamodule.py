"""LightningDataModule: ADNI CSV + label maps → manifest → subject split → cache → batches on the device."""

from __future__ import annotations

import logging
from dataclasses import asdict, dataclass
from pathlib import Path
from typing import Any, Literal

import lightning as L
import pandas as pd
import torch
from torch.utils.data import DataLoader

from adni_lightning.data.augment import random_hemisphere_flip, random_shift, to_channels
from adni_lightning.data.cache import VolumeCache
from adni_lightning.data.dataset import VolumeDataset, collate_volumes
from adni_lightning.data.labels import DEFAULT_CHANNELS, channel_lookup, hemisphere_swap
from adni_lightning.data.manifest import ManifestSpec, OnBadRows, build_manifest
from adni_lightning.data.preprocess import InputKind, Normalisation, Preprocessing, as_size
from adni_lightning.data.sampler import EpochShuffleSampler
from adni_lightning.data.split import SplitError, load_split, save_split, split_digest, split_subjects
from adni_lightning.data.tabular import TabularEncoder
from adni_lightning.seeding import derived_seed, run_seed
from adni_lightning.synth import CSV_NAME, generate_cohort

log = logging.getLogger(__name__)


@dataclass
class SyntheticCohort:
    """Parameters of the synthetic cohort generated into ``data_dir`` when its CSV does not exist yet."""

    subjects: int = 200
    size: int = 96
    seed: int = 0
    second_visit_fraction: float = 0.4


class ADNIDataModule(L.LightningDataModule):
    """ADNI download (CSV + FastSurfer ``.mgz`` label maps, or intensity volumes) as train/val/test/predict loaders.

    Args:
        data_dir: folder of the download; ``filename_pattern`` is relative to it.
        csv_path: the IDA CSV (default ``data_dir/ADNI_1p5T_Filtered.csv``).
        filename_pattern: file of a row; fields ``{group}``, ``{image_id}`` (``I123``), ``{image_number}``,
            ``{subject}``, ``{visit}``. Ids without the ``I`` are tried too.
        classes: class names in label order; groups are mapped onto them with ``group_map``.
        group_map: CSV group → class (e.g. ``EMCI: MCI``), or ``null`` to exclude that group (logged).
        input_kind: ``labelmap`` (FreeSurfer ids, nearest neighbour) or ``intensity`` (trilinear, normalised).
        channels: label maps only: channel name → FreeSurfer ids one-hot encoded in that channel.
        image_size: cached/network size, an int or (D, H, W) in RAS order.
        crop: crop to the brain's bounding box (+ ``margin_mm``) before resizing.
        normalise: intensity only: ``robust`` (head percentiles → [0, 1]) or ``zscore`` (the seed's, whole volume).
        val_fraction, test_fraction, split_seed, n_folds, fold: the subject-level split (see ``split_subjects``).
        split_file: where the split is saved and reused (default ``<trainer.default_root_dir>/split.csv``).
        cache_dir: preprocessed volumes (default ``data_dir/.cache``).
        flip_prob: probability of a hemisphere flip (with left/right label swap) of a training volume.
        max_shift: largest random translation of a training volume, in voxels per axis.
        predict_split: which images ``predict`` scores.
        on_bad_rows: ``error`` stops with a report of every bad CSV row; ``skip`` drops exactly those, logged.
        synthetic: generate a synthetic cohort in ``data_dir`` if its CSV is absent.
    """

    def __init__(
        self,
        data_dir: str = "data/synthetic",
        csv_path: str | None = None,
        filename_pattern: str = "{group}/{image_id}.nii_aseg_deep.mgz",
        classes: tuple[str, ...] = ("CN", "MCI", "AD"),
        group_map: dict[str, str | None] | None = None,
        input_kind: InputKind = "labelmap",
        channels: dict[str, list[int]] | None = None,
        image_size: int | tuple[int, int, int] = 64,
        crop: bool = True,
        margin_mm: float = 4.0,
        normalise: Normalisation = "robust",
        val_fraction: float = 0.2,
        test_fraction: float = 0.0,
        split_seed: int = 0,
        n_folds: int | None = None,
        fold: int = 0,
        split_file: str | None = None,
        cache_dir: str | None = None,
        batch_size: int = 8,
        num_workers: int = 2,
        flip_prob: float = 0.5,
        max_shift: int = 0,
        predict_split: Literal["all", "train", "val", "test"] = "all",
        on_bad_rows: OnBadRows = "error",
        synthetic: SyntheticCohort | None = None,
    ) -> None:
        super().__init__()
        self.save_hyperparameters()
        self.classes = list(classes)
        self.channels = {k: tuple(v) for k, v in (channels or DEFAULT_CHANNELS).items()}
        self.preprocessing = Preprocessing(input_kind, as_size(image_size), crop, margin_mm, normalise)
        self.data_dir = Path(data_dir)
        self.cache = VolumeCache(Path(cache_dir) if cache_dir else self.data_dir / ".cache", self.preprocessing)
        self.encoder = TabularEncoder()
        # Read by LightningCLI's argument links right after __init__, before setup().
        self.num_classes = len(self.classes)
        self.num_tabular_features = self.encoder.num_features
        self.in_channels = len(self.channels) if input_kind == "labelmap" else 1
        self._channel_table = torch.from_numpy(channel_lookup(self.channels))
        self._swap = torch.from_numpy(hemisphere_swap())
        self._manifest: pd.DataFrame | None = None
        self.split: pd.DataFrame | None = None
        self.datasets: dict[str, VolumeDataset] = {}

    @property
    def manifest_spec(self) -> ManifestSpec:
        hp = self.hparams
        return ManifestSpec(
            csv_path=Path(hp.csv_path) if hp.csv_path else self.data_dir / CSV_NAME,
            data_dir=self.data_dir,
            filename_pattern=hp.filename_pattern,
            classes=tuple(self.classes),
            group_map=dict(hp.group_map or {}),
            on_bad_rows=hp.on_bad_rows,
        )

    @property
    def split_path(self) -> Path:
        if self.hparams.split_file:
            return Path(self.hparams.split_file)
        if self.trainer is None:
            raise RuntimeError("split_file is not set and no Trainer is attached to place it beside the run")
        return Path(self.trainer.default_root_dir) / "split.csv"

    def manifest(self) -> pd.DataFrame:
        if self._manifest is None:
            self._manifest = build_manifest(self.manifest_spec)
        return self._manifest

    def prepare_data(self) -> None:
        """Generate the synthetic cohort if configured, validate the CSV, fix the split, fill the cache."""
        spec = self.manifest_spec
        if self.hparams.synthetic is not None and not spec.csv_path.exists():
            log.info("generating a synthetic cohort in %s", self.data_dir)
            generate_cohort(self.data_dir, workers=max(1, self.hparams.num_workers), **asdict(self._synthetic()))
        manifest = self.manifest()
        if self._predicting_everything:
            self.cache.build(zip(manifest["image_id"], manifest["path"]), num_workers=self.hparams.num_workers)
            return
        if not self.split_path.exists():
            hp = self.hparams
            split = split_subjects(manifest, hp.val_fraction, hp.test_fraction, hp.split_seed, hp.n_folds, hp.fold)
            save_split(split, self.split_path)
            log.info("saved a new subject-level split to %s", self.split_path)
        load_split(self.split_path, manifest)
        self.cache.build(zip(manifest["image_id"], manifest["path"]), num_workers=self.hparams.num_workers)

    def _synthetic(self) -> SyntheticCohort:
        synthetic = self.hparams.synthetic
        return synthetic if isinstance(synthetic, SyntheticCohort) else SyntheticCohort(**synthetic)

    @property
    def _predicting_everything(self) -> bool:
        """``predict`` over a whole CSV needs no split: it may be a new cohort, scored with a checkpoint's
        age statistics (restored into the encoder after ``setup``)."""
        predicting = self.trainer is not None and self.trainer.state.fn == "predict"
        return predicting and self.hparams.predict_split == "all"

    def setup(self, stage: str) -> None:
        manifest = self.manifest()
        entries = {i: self.cache.entry_path(i, p) for i, p in zip(manifest["image_id"], manifest["path"])}
        missing = [i for i, e in entries.items() if not e.exists()]
        if missing:
            raise RuntimeError(f"{len(missing)} volume(s) are not cached (e.g. {missing[0]}): run prepare_data first")
        if self._predicting_everything:
            self.datasets = {"predict": VolumeDataset(manifest, entries, self.encoder)}
            return
        self.split = load_split(self.split_path, manifest)
        rows = manifest.merge(self.split[["image_id", "split"]], on="image_id", validate="one_to_one")
        if self.encoder.age_mean is None:
            self.encoder.fit(rows.loc[rows["split"] == "train", "age"])
        self.datasets = {side: VolumeDataset(rows[rows["split"] == side], entries, self.encoder) for side in ("train", "val", "test")}
        predict_rows = rows if self.hparams.predict_split == "all" else rows[rows["split"] == self.hparams.predict_split]
        self.datasets["predict"] = VolumeDataset(predict_rows, entries, self.encoder)
        self._log_split(rows)

    def _log_split(self, rows: pd.DataFrame) -> None:
        table = rows.groupby(["split", "label"]).size().unstack(fill_value=0).reindex(columns=self.classes, fill_value=0)
        subjects = rows.groupby("split")["subject"].nunique()
        log.info("subject-level split (images per class; subjects):\n%s\n%s", table, subjects.to_dict())

    @property
    def train_class_counts(self) -> torch.Tensor:
        """Images per class in the training split (for class-weighted losses)."""
        targets = torch.tensor(self.datasets["train"].rows["target"].to_numpy())
        return torch.bincount(targets, minlength=self.num_classes)

    @property
    def seed(self) -> int:
        """The run's seed (LightningCLI's ``seed_everything``), else ``split_seed``."""
        return run_seed(default=self.hparams.split_seed)

    def _loader(self, side: str, sampler: EpochShuffleSampler | None = None) -> DataLoader:
        dataset = self.datasets[side]
        if len(dataset) == 0:
            hint = "set data.test_fraction > 0" if side == "test" else f"check the {side} split in {self.split_path}"
            raise SplitError(f"the {side} split is empty: {hint}")
        return DataLoader(
            dataset,
            batch_size=self.hparams.batch_size,
            sampler=sampler,
            collate_fn=collate_volumes,
            num_workers=self.hparams.num_workers,
            persistent_workers=self.hparams.num_workers > 0,
            pin_memory=torch.cuda.is_available(),
        )

    def train_dataloader(self) -> DataLoader:
        # Start at the epoch the fit loop is about to run (not 0 on resume): with workers the first batches
        # are drawn before Lightning's set_epoch.
        epoch = self.trainer.fit_loop.epoch_progress.current.processed if self.trainer is not None else 0
        return self._loader("train", EpochShuffleSampler(len(self.datasets["train"]), self.seed, epoch))

    def val_dataloader(self) -> DataLoader:
        return self._loader("val")

    def test_dataloader(self) -> DataLoader:
        return self._loader("test")

    def predict_dataloader(self) -> DataLoader:
        return self._loader("predict")

    def on_after_batch_transfer(self, batch: dict[str, Any], dataloader_idx: int) -> dict[str, Any]:
        """Augment (training only) and expand the compact volume to network channels, on the device.

        The compact volume stays in the batch as ``volume`` (no copy) for drawing it in FreeSurfer colours.
        """
        image = batch["image"]
        training = self.trainer is not None and self.trainer.training
        labelmap = self.hparams.input_kind == "labelmap"
        if training:
            # Seeded by (seed, step), not the global generator, so a resumed run augments the same way.
            generator = torch.Generator(image.device).manual_seed(derived_seed(self.seed, self.trainer.global_step))
            swap = self._swap.to(image.device) if labelmap else None
            image = random_hemisphere_flip(image, self.hparams.flip_prob, swap, generator)
            image = random_shift(image, self.hparams.max_shift, generator)
        batch["volume"] = image
        if labelmap:
            image = to_channels(image, self._channel_table.to(image.device))
        batch["image"] = image.float()
        return batch

    def state_dict(self) -> dict[str, Any]:
        """Stored in checkpoints: the training split's age statistics and a fingerprint of the split."""
        return {
            "tabular": self.encoder.state_dict(),
            "split_digest": split_digest(self.split) if self.split is not None else None,
            "classes": self.classes,
        }

    def load_state_dict(self, state: dict[str, Any]) -> None:
        self.encoder.load_state_dict(state["tabular"])
        if state["classes"] != self.classes:
            raise ValueError(f"checkpoint classes {state['classes']} differ from the configured {self.classes}")
        fitting = self.trainer is not None and self.trainer.state.fn == "fit"
        if fitting and self.split is not None and state["split_digest"] != split_digest(self.split):
            raise SplitError(
                f"resuming on a different split than the checkpoint was trained on ({self.split_path}): "
                "validation subjects could leak into training"
            )
