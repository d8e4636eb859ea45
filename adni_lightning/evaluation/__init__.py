"""Statistics and reports of cross-validated evaluation: pooled OOF metrics with subject-bootstrap CIs, for
classification and for score regression.
"""

from __future__ import annotations

from adni_lightning.evaluation.metrics import (
    bootstrap_ci,
    bootstrap_samples,
    classification_metrics,
    confusion_metrics,
    first_visits,
    fold_table,
    frame_metrics,
    interval_table,
    is_regression,
    metric_names,
    paired_difference,
    paired_parts,
    prob_columns,
    regression_metrics,
    subject_level,
    weighted_regression_metrics,
)
from adni_lightning.evaluation.report import write_cv_report

__all__ = [
    "bootstrap_ci",
    "bootstrap_samples",
    "classification_metrics",
    "confusion_metrics",
    "first_visits",
    "fold_table",
    "frame_metrics",
    "interval_table",
    "is_regression",
    "metric_names",
    "paired_difference",
    "paired_parts",
    "prob_columns",
    "regression_metrics",
    "subject_level",
    "weighted_regression_metrics",
    "write_cv_report",
]
