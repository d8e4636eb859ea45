"""The DataModule of ``configs/synthetic.yaml``: generates its cohort on first use, then reads it as real data.

Generation lives here, above the data layer, so a real-data run (``ADNIDataModule``) can never write fake
files: only a config that names this class generates, and only into a folder that does not exist yet, is
empty, or holds an earlier synthetic cohort (its marker file says so).
"""

from __future__ import annotations

import logging
from dataclasses import asdict
from typing import Any

from adni_lightning.data.datamodule import ADNIDataModule
from adni_lightning.data.manifest import ManifestError
from adni_lightning.synth.cohort import MARKER_NAME, SyntheticCohort, generate_cohort

log = logging.getLogger(__name__)


class SyntheticDataModule(ADNIDataModule):
    """:class:`~adni_lightning.data.datamodule.ADNIDataModule` over a generated cohort.

    Args:
        cohort: the cohort written into ``manifest.data_dir`` when its CSV does not exist yet.
        **kwargs: the groups of :class:`~adni_lightning.data.datamodule.ADNIDataModule`.
    """

    def __init__(self, cohort: SyntheticCohort = SyntheticCohort(), **kwargs: Any) -> None:
        super().__init__(**kwargs)
        self.cohort = cohort

    def prepare_cohort(self) -> None:
        """Generate the cohort unless its CSV exists, only into a new folder or an earlier synthetic cohort's."""
        spec = self.manifest_spec
        if not spec.csv_file.exists():
            folder = spec.root
            if folder.exists() and not (folder / MARKER_NAME).exists():
                found = sorted(p.name for p in folder.iterdir()) if folder.is_dir() else []
                held = f"holds other files ({', '.join(found[:5])})" if found else "exists (empty)"
                raise ManifestError(
                    f"{spec.csv_file} not found, and {folder} {held} and no earlier synthetic cohort: refusing to "
                    "generate a synthetic cohort there; point data.manifest.data_dir at a folder that does not exist "
                    "yet, or use an ADNIDataModule config for real data"
                )
            log.info(
                "generating a synthetic cohort (%d subjects, %d³ voxels) in %s",
                self.cohort.subjects,
                self.cohort.size,
                folder,
            )
            generate_cohort(folder, workers=max(1, self.loader.num_workers), **asdict(self.cohort))
