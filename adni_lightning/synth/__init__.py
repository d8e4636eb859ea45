"""Synthetic ADNI cohorts in the exact download format, and the DataModule that trains on one.

This package sits above :mod:`adni_lightning.data`: it imports the data layer, never the reverse.
"""

from adni_lightning.synth.cohort import (
    CLINICAL_NAME,
    CSV_COLUMNS,
    FILE_SUFFIX,
    GROUPS,
    MARKER_NAME,
    MISSABLE_LABELS,
    PRESETS,
    TRUTH_NAME,
    CohortFolderError,
    SyntheticCohort,
    check_cohort_folder,
    clinical_table,
    conformed_affine,
    generate_cohort,
    render,
)
from adni_lightning.synth.datamodule import SyntheticDataModule

__all__ = [
    "CLINICAL_NAME",
    "CSV_COLUMNS",
    "FILE_SUFFIX",
    "GROUPS",
    "MARKER_NAME",
    "MISSABLE_LABELS",
    "PRESETS",
    "TRUTH_NAME",
    "CohortFolderError",
    "SyntheticCohort",
    "SyntheticDataModule",
    "check_cohort_folder",
    "clinical_table",
    "conformed_affine",
    "generate_cohort",
    "render",
]
