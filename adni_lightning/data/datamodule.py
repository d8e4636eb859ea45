"""LightningDataModule: ADNI CSV + label maps → manifest → subject split → cache → batches on the device.

Its options come in small groups, each owned by the class that uses it: ``manifest``
(:class:`~adni_lightning.data.manifest.ManifestSpec`), ``preprocessing``
(:class:`~adni_lightning.data.preprocess.Preprocessing`), ``split`` (:class:`~adni_lightning.data.split.SplitSpec`),
``loader`` (:class:`~adni_lightning.data.dataset.LoaderSpec`) and ``augment`` (a list of
:class:`~adni_lightning.data.augment.Augmentation`). This module only wires them together.
"""

from __future__ import annotations

import dataclasses
import hashlib
import logging
import os
from pathlib import Path
from typing import Literal, cast

import lightning as L
import numpy as np
import pandas as pd
import torch
from torch.utils.data import DataLoader

from adni_lightning.data.augment import (
    Augmentation,
    AugmentContext,
    HemisphereFlip,
    channel_mirror,
    dominant_labels,
    to_channels,
)
from adni_lightning.data.batch import Batch
from adni_lightning.data.cache import CacheBuildError, Fault, VolumeCache
from adni_lightning.data.clinical import ClinicalSpec, TaskSpec, check_task, task_labels
from adni_lightning.data.contract import CohortSummary, check_contract, cohort_summary, data_contract
from adni_lightning.data.dataset import LoaderSpec, VolumeDataset, available_cores, collate_volumes
from adni_lightning.data.labels import channel_lookup, compact_lookup, hemisphere_swap
from adni_lightning.data.manifest import CSV_NAME, ManifestSpec, build_manifest, exclude_images
from adni_lightning.data.preprocess import FULL, Preprocessing
from adni_lightning.data.resident import ResidentCohort, ResidentDataset, already_collated
from adni_lightning.data.sampler import EpochShuffleSampler
from adni_lightning.data.split import (
    SCORE_STRATA,
    SplitError,
    SplitSpec,
    check_sides,
    check_split_options,
    describe_dealing,
    fold_sides,
    load_split,
    run_sides,
    save_split,
    split_subjects,
)
from adni_lightning.data.tabular import TabularEncoder, TabularSpec, TabularState
from adni_lightning.data.volumes import LABELLED, regional_volumes
from adni_lightning.errors import OptionError
from adni_lightning.seeding import derived_seed, run_seed
from adni_lightning.vocabulary import ClassName

log = logging.getLogger(__name__)

PredictSplit = Literal["all", "train", "val", "test"]
#: What the model learns: a class (cross-entropy over the classes) or a score (one output, a regression loss).
Objective = Literal["classification", "regression"]


def user_cache_dir(data_dir: Path) -> Path:
    """The default cache of a real cohort: outside its folder (a shared download is often read-only), in the user's
    cache (``$XDG_CACHE_HOME``, else ``~/.cache``), one folder per resolved data folder.
    """
    base = os.environ.get("XDG_CACHE_HOME", "")
    root = Path(base) if os.path.isabs(base) else Path.home() / ".cache"
    folder = data_dir.resolve()
    return root / "adni_lightning" / f"{folder.name}-{hashlib.sha1(str(folder).encode()).hexdigest()[:12]}"


class ADNIDataModule(L.LightningDataModule):
    """ADNI download (CSV + FastSurfer ``.mgz`` label maps, or intensity volumes) as train/val/test/predict loaders.

    Args:
        manifest: the CSV and where its files are.
        preprocessing: what the cache stores and the network sees.
        split: the subject-level split.
        loader: batch size and worker processes.
        tabular: covariates of the numeric branch beyond age and sex (ICV-normalised regional volumes).
        clinical: a longitudinal clinical table beside the CSV (ADNIMERGE layout) and how images join it.
        task: what an image is labelled with: the CSV's Group (default), a clinical column, progression, or a score
            (a regression: a numeric clinical column, or the age for brain age; ``task.regression``).
        augment: training augmentations, applied on the device in this order (none by default).
        cache_dir: preprocessed volumes (default :meth:`default_cache_dir`: outside the data folder).
        predict_split: which images ``predict`` scores; ``all`` needs no split (a new cohort).
    """

    def __init__(
        self,
        manifest: ManifestSpec = ManifestSpec(),
        preprocessing: Preprocessing = Preprocessing(),
        split: SplitSpec = SplitSpec(),
        loader: LoaderSpec = LoaderSpec(),
        tabular: TabularSpec = TabularSpec(),
        clinical: ClinicalSpec = ClinicalSpec(),
        task: TaskSpec = TaskSpec(),
        augment: list[Augmentation] | None = None,
        cache_dir: str | None = None,
        predict_split: PredictSplit = "all",
    ) -> None:
        super().__init__()
        self.manifest_spec = manifest
        self.preprocessing = preprocessing
        self.split_spec = split
        self.loader = loader
        self.clinical = clinical
        self.task = task
        check_task(clinical, task)
        self.augment = list(augment or [])
        self.predict_split = predict_split
        self.cache_dir = cache_dir
        self.cache = VolumeCache(Path(cache_dir) if cache_dir else self.default_cache_dir(), self.preprocessing)
        self.encoder = TabularEncoder(tabular.volumes, age=not task.predicts_age)
        #: What the split stratifies by and names in its ``group`` column: the classes, or a score task's strata.
        self.classes: list[ClassName] = list(SCORE_STRATA if task.regression else self.manifest_spec.classes)
        # Read by LightningCLI's argument links right after __init__, before setup().
        #: The model's outputs: the classes, or a score task's one score (named by its column).
        self.output_names = [ClassName(str(task.column))] if task.regression else list(self.classes)
        self.num_classes = len(self.output_names)
        self.objective: Objective = "regression" if task.regression else "classification"
        self.num_tabular_features = self.encoder.num_features
        self.in_channels = self.preprocessing.in_channels
        self.input_kind = self.preprocessing.input_kind
        self._channel_table = torch.from_numpy(channel_lookup(self.preprocessing.channel_map))
        occupancy = self.preprocessing.occupancy
        self._swap = torch.from_numpy(hemisphere_swap()) if self.preprocessing.labelmap and not occupancy else None
        flips = any(isinstance(a, HemisphereFlip) for a in self.augment)
        self._channel_swap = channel_mirror(self.preprocessing.channel_map) if occupancy and flips else None
        # Occupancy batches are drawn as the compact label of each voxel's dominant channel (its first id).
        first_ids = [0, *(ids[0] if ids else 0 for ids in self.preprocessing.channel_map.values())]
        self._dominant = torch.from_numpy(compact_lookup()[first_ids].astype("uint8"))
        self._manifest: pd.DataFrame | None = None
        self._sized = False
        self._filled_cache = False
        self.split: pd.DataFrame | None = None
        self._training_summary: CohortSummary | None = None
        self.datasets: dict[str, VolumeDataset] = {}
        self.resident: ResidentCohort | None = None
        self._capped_workers = False

    def default_cache_dir(self) -> Path:
        """Without ``cache_dir``: the user's cache, never the data folder (:func:`user_cache_dir`)."""
        return user_cache_dir(self.manifest_spec.root)

    @property
    def num_workers(self) -> int:
        """``loader.num_workers``, at most the cores this process may run on (more only wait for each other; torch
        would warn on every loader); the cap is said once, as an info line.
        """
        cores = available_cores()
        if self.loader.num_workers <= cores:
            return self.loader.num_workers
        if not self._capped_workers:
            log.info("data.loader.num_workers %d: using %d, the cores available", self.loader.num_workers, cores)
            self._capped_workers = True
        return cores

    @property
    def split_path(self) -> Path:
        if self.split_spec.file:
            return Path(self.split_spec.file)
        if self.trainer is None:
            raise RuntimeError("split.file is not set and no Trainer is attached to place it beside the run")
        return Path(self.trainer.default_root_dir) / "split.csv"

    @property
    def report_dir(self) -> Path:
        """Where a long bad-row report lists every row: the run's folder, else the cache's; never the data folder."""
        return Path(self.trainer.default_root_dir) if self.trainer is not None else self.cache.root

    def manifest(self) -> pd.DataFrame:
        """The usable images: rows that pass the manifest's checks, less the files the cache could not decode.

        Decode faults come from this process's :meth:`fill_cache`, else from the faults the cache recorded (a
        ``prepare_data`` on another rank or in an earlier run), so every process and run sees the same images.
        """
        if self._manifest is None:
            labeller = task_labels(self.clinical, self.task, self.manifest_spec)
            rows = build_manifest(self.manifest_spec, self.report_dir, labeller)
            self._sized = False
            self._manifest = self._less_faults(rows, self.cache.recorded_faults(zip(rows["image_id"], rows["path"])))
        return self._manifest

    def fill_cache(self) -> pd.DataFrame:
        """Build the cache for :meth:`manifest`; files that fail to decode leave it by ``on_bad_rows``."""
        manifest = self.manifest()
        _, faults = self.cache.collect(zip(manifest["image_id"], manifest["path"]), self.num_workers)
        self._manifest = self._less_faults(manifest, faults)
        self._filled_cache = True
        return self._manifest

    def _less_faults(self, rows: pd.DataFrame, faults: list[Fault]) -> pd.DataFrame:
        """``rows`` less the images of ``faults`` and, once all others are cached, less the label maps far smaller
        than their median: measured once per manifest, on the same images in every process and run.
        """
        if not self._sized:
            faulty = {f.image_id for f in faults}
            rest = [(i, p) for i, p in zip(rows["image_id"], rows["path"]) if i not in faulty]
            small = self.cache.small_label_maps(rest, self.manifest_spec.min_labelled_fraction)
            self._sized = small is not None
            faults = [*faults, *(small or [])]
        reasons = {f.image_id: f.reason for f in faults}
        return exclude_images(rows, self.manifest_spec, reasons, self.report_dir)

    def _with_volumes(self, manifest: pd.DataFrame) -> pd.DataFrame:
        """The manifest plus the configured structures' volumes divided by the labelled (ICV proxy) volume."""
        if not self.encoder.volumes:
            return manifest
        volumes = regional_volumes(manifest, self.cache)
        unknown = [name for name in self.encoder.volumes if name not in volumes.columns]
        if unknown:
            raise OptionError(
                f"data.tabular.volumes: {', '.join(unknown)} not in any label map of the cohort "
                "(names as in FreeSurferColorLUT, e.g. Left-Hippocampus; see `inspect`'s volumes.csv)"
            )
        ratios = volumes[list(self.encoder.volumes)].div(volumes[LABELLED], axis=0)
        return pd.concat([manifest.reset_index(drop=True), ratios.reset_index(drop=True)], axis=1)

    def prepare_cohort(self) -> None:
        """Make sure the cohort's files exist before the CSV is read; real data exists already."""

    def prepare_data(self) -> None:
        """Validate the CSV, fix the split, fill the cache."""
        if self.encoder.volumes and not self.preprocessing.labelmap:
            raise OptionError(
                "data.tabular.volumes needs label maps: intensity volumes have no structures to measure "
                "(set data.tabular.volumes to [])"
            )
        if self._predicting_everything:
            self.prepare_cohort()  # planned_split does it otherwise
        else:
            split = self.planned_split()
            if not self.split_path.exists():
                save_split(split, self.split_path, self.split_spec)
                log.info(
                    "saved a new subject-level split to %s (subjects per class → train/val/test: %s)",
                    self.split_path,
                    describe_dealing(split, self.classes),
                )
        self.fill_cache()

    def planned_split(self) -> pd.DataFrame:
        """The split this run uses, checked and not yet written: the saved one (drawn with the options asked for,
        and matching the CSV; a k-fold file gives the sides of ``split.fold``) or a new one drawn in memory. Every
        class must have subjects on every side.
        """
        self.prepare_cohort()
        manifest = self.manifest()
        if self.split_path.exists():
            check_split_options(self.split_path, self.split_spec)
            split = run_sides(load_split(self.split_path, manifest), self.split_spec, self.split_path)
        else:
            split = split_subjects(manifest, self.split_spec)
        check_sides(split, self.classes, self.split_spec, str(self.split_path))
        return split

    @property
    def _predicting_everything(self) -> bool:
        """``predict`` over a whole CSV needs no split: it may be a new cohort, scored with a checkpoint's
        age statistics (restored into the encoder after ``setup``).
        """
        predicting = self.trainer is not None and self.trainer.state.fn == "predict"
        return predicting and self.predict_split == "all"

    def setup(self, stage: str) -> None:
        if not self._filled_cache:  # another process filled it (rank 0): read the faults it recorded, not earlier ones
            self._manifest = None
        manifest = self.manifest()
        entries = {i: self.cache.entry_path(i, p) for i, p in zip(manifest["image_id"], manifest["path"])}
        missing = [i for i, e in entries.items() if not e.exists()]
        if missing:
            raise CacheBuildError(
                f"{len(missing)} volume(s) are not cached in {self.cache.root} (e.g. {missing[0]}): run prepare_data "
                "first (a Trainer runs it before setup), or check that data.cache_dir is the same for every process"
            )
        manifest = self._with_volumes(manifest)
        if self._predicting_everything:
            rows = self._marked_with_saved_split(manifest)
            self.datasets = {"predict": VolumeDataset(rows, entries, self.encoder, self.task.regression)}
            return
        self.split = run_sides(load_split(self.split_path, manifest), self.split_spec, self.split_path)
        self._training_summary = None
        rows = manifest.merge(self.split[["image_id", "split"]], on="image_id", validate="one_to_one")
        if self.encoder.age_mean is None:
            train = rows[rows["split"] == "train"]
            self.encoder.fit(train["age"], train[list(self.encoder.volumes)].to_numpy())
        score = self.task.regression
        self.datasets = {
            side: VolumeDataset(rows[rows["split"] == side], entries, self.encoder, score)
            for side in ("train", "val", "test")
        }
        predict_rows = rows if self.predict_split == "all" else rows[rows["split"] == self.predict_split]
        self.datasets["predict"] = VolumeDataset(predict_rows, entries, self.encoder, score)
        self._log_split(rows)

    def _marked_with_saved_split(self, manifest: pd.DataFrame) -> pd.DataFrame:
        """The manifest with each image's side in the run's saved split, ``-`` for images it does not hold."""
        rows = manifest.assign(split="-")
        if self.split_path.is_file():
            split = pd.read_csv(self.split_path, dtype={"image_id": str, "split": str})
            if self.split_spec.folds is not None:
                split = fold_sides(split, self.split_spec.fold, self.split_path)
            rows["split"] = rows["image_id"].map(split.set_index("image_id")["split"]).fillna("-")
        return rows

    def _log_split(self, rows: pd.DataFrame) -> None:
        if self.task.regression:
            scores = rows.groupby("split")["label"].describe()[["count", "mean", "std", "min", "max"]]
            subjects = rows.groupby("split")["subject"].nunique()
            log.info(
                "subject-level split (%s per image; subjects):\n%s\n%s", self.task.column, scores, subjects.to_dict()
            )
            return
        table = (
            rows.groupby(["split", "label"]).size().unstack(fill_value=0).reindex(columns=self.classes, fill_value=0)
        )
        subjects = rows.groupby("split")["subject"].nunique()
        log.info("subject-level split (images per class; subjects):\n%s\n%s", table, subjects.to_dict())

    @property
    def train_class_counts(self) -> torch.Tensor:
        """Images per class in the training split (for class-weighted losses)."""
        targets = torch.tensor(self.datasets["train"].rows["target"].to_numpy())
        return torch.bincount(targets, minlength=self.num_classes)

    @property
    def target_statistics(self) -> tuple[float, float]:
        """Mean and standard deviation of a score task's training images' scores: a regression trains on the score
        standardised with them (the model keeps them, so it predicts in the score's units).
        """
        scores = self.datasets["train"].targets.astype(np.float64)
        std = float(scores.std()) if len(scores) > 1 else 1.0
        return float(scores.mean()), std if std > 0 else 1.0

    @property
    def seed(self) -> int:
        """The run's seed (LightningCLI's ``seed_everything``), else the split's."""
        return run_seed(default=self.split_spec.seed)

    def _loader(self, side: str, sampler: EpochShuffleSampler | None = None) -> DataLoader:
        dataset = self.datasets[side]
        if len(dataset) == 0:
            hint = (
                "set data.split.test_fraction > 0" if side == "test" else f"check the {side} split in {self.split_path}"
            )
            raise SplitError(f"the {side} split is empty: {hint}")
        if self.loader.device_cache:
            cohort = self.resident_cohort()
            return DataLoader(
                ResidentDataset(dataset, cohort),
                batch_size=self.loader.batch_size,
                sampler=sampler,
                collate_fn=already_collated,
                pin_memory=cohort.on_host and torch.cuda.is_available(),
            )
        return DataLoader(
            dataset,
            batch_size=self.loader.batch_size,
            sampler=sampler,
            collate_fn=collate_volumes,
            num_workers=self.num_workers,
            persistent_workers=self.num_workers > 0,
            pin_memory=torch.cuda.is_available(),
        )

    def resident_cohort(self) -> ResidentCohort:
        """The images of every side in one tensor on the training device (``loader.device_cache``), loaded at the
        first loader and kept for the later ones and stages.
        """
        device = self.trainer.strategy.root_device if self.trainer is not None else torch.device("cpu")
        entries = list(dict.fromkeys(entry for dataset in self.datasets.values() for entry in dataset.entries))
        if self.resident is None or not self.resident.holds(entries, device):
            self.resident = ResidentCohort(entries, device)
        return self.resident

    def train_dataloader(self) -> DataLoader:
        # Start at the epoch the fit loop is about to run (not 0 on resume): with workers the first batches
        # are drawn before Lightning's set_epoch.
        progress = self.trainer.fit_loop.epoch_progress.current if self.trainer is not None else None
        epoch = progress.processed if progress is not None else 0  # type: ignore[attr-defined]  # typed as its base
        return self._loader("train", EpochShuffleSampler(len(self.datasets["train"]), self.seed, epoch))

    def val_dataloader(self) -> DataLoader:
        return self._loader("val")

    def test_dataloader(self) -> DataLoader:
        return self._loader("test")

    def predict_dataloader(self) -> DataLoader:
        return self._loader("predict")

    def on_after_batch_transfer(self, batch: Batch, dataloader_idx: int) -> Batch:
        """Apply ``augment`` (training only) to the compact volume, then make the network input, on the device.

        The augmented compact volume stays in the batch as ``volume`` for drawing it in FreeSurfer colours; occupancy
        fractions are replaced there by each voxel's dominant structure (:func:`dominant_labels`), a label index
        like the nearest encoding's.
        """
        volume = batch["volume"]
        if self.augment and self.trainer is not None and self.trainer.training:
            # Seeded by (seed, step), not the global generator, so a resumed run augments the same way.
            generator = torch.Generator(volume.device).manual_seed(derived_seed(self.seed, self.trainer.global_step))
            label_index = self.preprocessing.labelmap and not self.preprocessing.occupancy
            context = AugmentContext(generator, label_index, self._swap, self._channel_swap)
            for augmentation in self.augment:
                volume = augmentation(volume, context)
        batch["image"] = self.network_input(volume)
        batch["volume"] = dominant_labels(volume, self._dominant) if self.preprocessing.occupancy else volume
        return batch

    def network_input(self, volume: torch.Tensor) -> torch.Tensor:
        """Compact ``(B, 1, D, H, W)`` volume → float32 network input (structure channels for label maps); occupancy
        fractions ``(B, C, D, H, W)`` → the fractions as float.
        """
        if self.preprocessing.occupancy:
            return volume.float() / FULL
        if self.preprocessing.labelmap:
            return to_channels(volume, self._channel_table.to(volume.device))
        return volume.float()

    def checkpoint_state(self) -> dict[str, object]:
        """The data contract stored in checkpoints (under ``data``, by the module, so every subclass shares one key):
        classes, preprocessing, the training split's tabular statistics and the split (see
        :mod:`adni_lightning.data.contract`), and where the data was (absolute paths, compared by no check: a checkpoint
        may score another cohort; :meth:`check_checkpoint_state` reads them).
        """
        spec = self.manifest_spec
        where = {"data_dir": str(spec.root.absolute()), "csv_path": str(spec.csv_file.absolute())}
        contract = data_contract(
            self.classes, self.preprocessing, self.encoder, self.split, self.training_summary(), self.task.contract()
        )
        return {**contract, **where}

    def training_summary(self) -> CohortSummary | None:
        """The training side's :func:`~adni_lightning.data.contract.cohort_summary` (computed once per split), for
        ``evaluate`` to set another cohort beside it; ``None`` without a split. A score task's images are counted by
        their score stratum (the split's ``group``).
        """
        if self.split is None:
            return None
        if self._training_summary is None:
            manifest = self.manifest()
            train = manifest[manifest["image_id"].isin(self.split.loc[self.split["split"] == "train", "image_id"])]
            if self.task.regression:
                train = train.assign(label=train["image_id"].map(self.split.set_index("image_id")["group"]))
            volumes = regional_volumes(train, self.cache) if self.preprocessing.labelmap else None
            self._training_summary = cohort_summary(train, self.classes, volumes)
        return self._training_summary

    def check_checkpoint_state(self, state: dict[str, object] | None, stage: str, source: str) -> None:
        """Refuse a checkpoint trained on other data than this configuration describes, before anything is written.

        ``stage`` is the command: ``predict`` over ``predict_split: all`` scores a cohort of its own and compares no
        split; the others compare the split they would use (:meth:`planned_split`) with the training one.
        """
        self._find_recorded_data(state or {}, stage)
        task = self.task.contract()
        # Another task, classes or preprocessing is refused before the cohort is read: its labels may not even exist.
        check_contract(state, data_contract(self.classes, self.preprocessing, self.encoder, None, task=task), source)
        split = None if stage == "predict" and self.predict_split == "all" else self.planned_split()
        current = data_contract(self.classes, self.preprocessing, self.encoder, split, task=task)
        check_contract(state, current, source, self.split_path if split is not None else None, quiet=True)

    def _find_recorded_data(self, state: dict[str, object], stage: str) -> None:
        """A command run with a checkpoint from another working directory, where a relative ``data_dir`` names
        another folder: read the data the checkpoint records when the configured CSV does not exist and the recorded
        one does; otherwise say which data is read. One console line either way; nothing when they are the same.
        """
        recorded, configured = state.get("data_dir"), self.manifest_spec.root.absolute()
        if recorded is None or Path(str(recorded)) == configured:
            return
        recorded_csv = Path(str(state.get("csv_path", Path(str(recorded)) / CSV_NAME)))
        configured_csv = self.manifest_spec.csv_file.absolute()
        if not configured_csv.exists() and recorded_csv.is_file():
            self.manifest_spec = dataclasses.replace(
                self.manifest_spec, data_dir=str(recorded), csv_path=str(recorded_csv)
            )
            if self.cache_dir is None:
                self.cache = VolumeCache(self.default_cache_dir(), self.preprocessing)
            self._manifest = None
            log.info(
                "%s: %s not found; reading the data the checkpoint was trained on, %s", stage, configured_csv, recorded
            )
        else:
            log.info(
                "%s: the checkpoint was trained on the data in %s; this command reads %s (data.manifest.data_dir)",
                stage,
                recorded,
                configured,
            )

    def restore_checkpoint_state(self, state: dict[str, object]) -> None:
        """Check the contract again (the split too, once one is loaded) and take the training split's statistics."""
        split_file = self.split_path if self.split is not None else None
        check_contract(state, self.checkpoint_state(), "the checkpoint", split_file, quiet=True)
        self.encoder.load_state_dict(cast(TabularState, state["tabular"]))  # checked by check_contract
