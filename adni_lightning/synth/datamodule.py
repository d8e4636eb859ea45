"""The DataModule of ``configs/synthetic.yaml``: generates its cohort on first use, then reads it as real data.

Generation lives here, above the data layer, so a real-data run (``ADNIDataModule``) can never write fake
files: only a config that names this class generates, and only into a folder that does not exist yet or holds an
earlier synthetic cohort (its marker file says so), by the same rule as the ``synth`` command.
"""

from __future__ import annotations

from dataclasses import asdict
from pathlib import Path
from typing import Any

from adni_lightning.data.datamodule import ADNIDataModule
from adni_lightning.synth.cohort import (
    MARKER_NAME,
    SyntheticCohort,
    check_cohort_folder,
    generate_cohort,
    write_clinical_table,
)


class SyntheticDataModule(ADNIDataModule):
    """:class:`~adni_lightning.data.datamodule.ADNIDataModule` over a generated cohort.

    Args:
        cohort: the cohort written into ``manifest.data_dir`` when its CSV does not exist yet.
        **kwargs: the groups of :class:`~adni_lightning.data.datamodule.ADNIDataModule`.
    """

    def __init__(self, cohort: SyntheticCohort = SyntheticCohort(), **kwargs: Any) -> None:
        super().__init__(**kwargs)
        self.cohort = cohort

    def default_cache_dir(self) -> Path:
        """Beside the generated files, in a folder this class owns (deleting the cohort deletes its cache); for a
        folder it did not write (a download read with this class), the user's cache as for real data.
        """
        root = self.manifest_spec.root
        return root / ".cache" if not root.exists() or (root / MARKER_NAME).is_file() else super().default_cache_dir()

    def prepare_cohort(self) -> None:
        """Generate the cohort unless its CSV exists, only into a new folder or an earlier synthetic cohort's; and
        the clinical table that ``data.clinical.file`` names, when it is missing from a synthetic cohort (its
        visits are drawn from the cohort's options, without rendering an image).
        """
        spec = self.manifest_spec
        if not spec.csv_file.exists():
            context, advice = f"{spec.csv_file} not found, and ", ", or use an ADNIDataModule config for real data"
            check_cohort_folder(spec.root, "data.manifest.data_dir", context, advice)
            generate_cohort(spec.root, workers=max(1, self.num_workers), **asdict(self.cohort))
        table = self.clinical.path(spec)
        if table is not None and not table.exists() and (spec.root / MARKER_NAME).is_file():
            write_clinical_table(table, self.cohort)
