"""A trained model scored on another labelled cohort: metrics with intervals, calibration, and how the cohort differs.

A model that scores well on its own cohort's held-out subjects may still fail on another site's scanners or another
study's population. What a reviewer asks of an external evaluation: the cross-validation report's figures on the
new cohort, with subject-bootstrap intervals, at image and subject level; whether its probabilities still mean what
they say (calibration, before and after a temperature fitted elsewhere, never on this cohort); who is in the new
cohort compared with the training cohort (classes, age, sex, and the regional volumes that shifted most, from the
summary the checkpoint's data contract records); and, for ADNI subject ids, per-site figures, since a site is where
a scanner and a protocol change. :func:`write_evaluation` writes all of it from one predictions frame.
"""

from __future__ import annotations

import re
from collections.abc import Sequence
from pathlib import Path
from typing import TYPE_CHECKING

import numpy as np
import pandas as pd
from matplotlib.figure import Figure

from adni_lightning.atomic import atomic_path, output_dir, write_text
from adni_lightning.errors import ProjectError
from adni_lightning.evaluation.calibration import (
    calibration_metrics,
    reliability_table,
    scale_temperature,
)
from adni_lightning.evaluation.metrics import (
    HEADLINE,
    PER_CLASS,
    bootstrap_samples,
    frame_metrics,
    interval_table,
    prob_columns,
    subject_level,
)
from adni_lightning.evaluation.report import NAMES, UNSCALED, fmt, interval, markdown_table
from adni_lightning.evaluation.report import reliability_figure as reliability_figure_of
from adni_lightning.vocabulary import ClassName

if TYPE_CHECKING:
    from adni_lightning.data.contract import CohortSummary, StructureStats

#: The option that moves the files (``evaluate --root``).
OPTION = "--root"
#: The files :func:`write_evaluation` writes, by key.
FILES = {
    "report": "evaluate_report.md",
    "metrics": "evaluate_metrics.csv",
    "predictions": "predictions.csv",
    "figure": "reliability.png",
}
METRIC_COLUMNS = ["level", "metric", "estimate", "ci_low", "ci_high", "n_valid"]
LEVELS = ("image", "subject")
#: ADNI subject ids are ``<site>_S_<number>`` (``002_S_0295``: site 002).
_SITE = re.compile(r"^(\d+)_S_\d+$")
#: Structures listed as the most shifted.
TOP_SHIFTED = 5
NO_SUMMARY = "the checkpoint records no training-cohort summary"


class EvaluationError(ProjectError, ValueError):
    """A cohort cannot be scored with this checkpoint as asked; the message says why and what to change."""


def check_cohort_classes(labels: pd.Series, classes: Sequence[ClassName], csv: Path, source: str) -> None:
    """Refuse a cohort holding a class the model does not predict (its metrics would be undefined, not low)."""
    extra = [label for label in dict.fromkeys(labels) if label not in classes]
    if extra:
        count = int(labels.isin(extra).sum())
        raise EvaluationError(
            f"{csv}: the cohort's class(es) {extra} ({count} images) are not among the classes {list(classes)} that "
            f"{source} predicts: map them with data.manifest.group_map (null leaves them out)"
        )


def site_of(subject: str) -> str | None:
    """The ADNI site of a subject id (``002_S_0295`` → ``002``), or ``None`` for another form."""
    match = _SITE.match(str(subject))
    return match.group(1) if match else None


def metric_table(frame: pd.DataFrame, classes: Sequence[ClassName], n_resamples: int, seed: int) -> pd.DataFrame:
    """Every metric of :func:`~adni_lightning.evaluation.metrics.classification_metrics` per level (image; subject:
    mean probability over its images) with its subject-bootstrap interval; columns :data:`METRIC_COLUMNS`.
    """
    levels = {"image": frame, "subject": subject_level(frame, classes)}
    tables = [
        interval_table(frame_metrics(part, classes), bootstrap_samples(part, classes, n_resamples, seed)).assign(
            level=level
        )
        for level, part in levels.items()
    ]
    return pd.concat(tables, ignore_index=True)[METRIC_COLUMNS]


def calibration_table(y: np.ndarray, proba: np.ndarray, temperature: float | None) -> pd.DataFrame:
    """ECE, Brier and NLL of the model's probabilities and, with a temperature, of the scaled ones (``*_scaled``)."""
    values = calibration_metrics(y, proba)
    if temperature is not None:
        values.update(
            {f"{k}_scaled": v for k, v in calibration_metrics(y, scale_temperature(proba, temperature)).items()}
        )
        values["temperature"] = temperature
    return pd.DataFrame({"level": "image", "metric": list(values), "estimate": list(values.values())}).reindex(
        columns=METRIC_COLUMNS
    )


def site_table(frame: pd.DataFrame, classes: Sequence[ClassName]) -> pd.DataFrame:
    """Per ADNI site (images whose subject id names one): images, subjects, balanced accuracy."""
    sites = frame["subject"].map(site_of)
    rows = [
        {
            "site": site,
            "n_images": len(part),
            "n_subjects": part["subject"].nunique(),
            "bacc": frame_metrics(part, classes)["bacc"],
        }
        for site, part in frame[sites.notna()].groupby(sites[sites.notna()], sort=True)
    ]
    return pd.DataFrame(rows, columns=["site", "n_images", "n_subjects", "bacc"])


def shifted_structures(training: CohortSummary, cohort: CohortSummary, top: int) -> pd.DataFrame:
    """The structures (in both summaries) whose ICV-normalised volume moved most: standardised mean difference
    (cohort − training) / pooled sd, largest ``|SMD|`` first; structures without spread on either side are left out.
    """
    trained, now = training.get("volumes") or {}, cohort.get("volumes") or {}
    rows = []
    for name in (n for n in now if n in trained):
        a, b = trained[name], now[name]
        pooled = np.sqrt((a["sd"] ** 2 + b["sd"] ** 2) / 2)
        if pooled > 0:
            smd = (b["mean"] - a["mean"]) / pooled
            rows.append({"structure": name, "training": a, "cohort": b, "smd": smd})
    rows.sort(key=lambda row: -abs(row["smd"]))
    return pd.DataFrame(rows[:top], columns=["structure", "training", "cohort", "smd"])


def _metrics_section(metrics: pd.DataFrame, classes: Sequence[ClassName], n_resamples: int) -> list[str]:
    cis = {level: metrics[metrics["level"] == level] for level in LEVELS}
    rows = [[NAMES[m], *(interval(cis[level], m, n_resamples) for level in LEVELS)] for m in HEADLINE]
    per_class = [[c, *(interval(cis["image"], f"{kind}_{c}", n_resamples) for kind in PER_CLASS)] for c in classes]
    return [
        "## Metrics",
        "",
        *markdown_table(["metric", *(f"{level} level [95% CI]" for level in LEVELS)], rows),
        "Per class, image level [95% CI]:",
        "",
        *markdown_table(["class", *(NAMES[kind] for kind in PER_CLASS)], per_class),
    ]


def _calibration_section(
    calibration: pd.DataFrame, temperature: float | None, calibration_file: Path | None
) -> list[str]:
    values = calibration.set_index("metric")["estimate"]
    names = {"ece": "ECE (adaptive bins)", "brier": "Brier score", "nll": "negative log-likelihood"}
    if temperature is None:
        rows = [[names[m], fmt(values[m])] for m in names]
        return [
            "## Calibration (image level)",
            "",
            *markdown_table(["measure", "before"], rows),
            "No --calibration file: no temperature applied.",
            "",
        ]
    rows = [[names[m], fmt(values[m]), fmt(values[f"{m}_scaled"])] for m in names]
    return [
        "## Calibration (image level)",
        "",
        *markdown_table(["measure", "before", f"after (T = {temperature:.3f})"], rows),
        (
            f"The temperature comes from {calibration_file}, fitted on other predictions (never on this cohort). It "
            "changes no argmax: the metrics above hold before and after."
        ),
        "",
    ]


def _cohort_row(summary: CohortSummary, classes: Sequence[ClassName]) -> list[str]:
    images = summary["images"]
    sex = summary["sex"]
    return [
        " / ".join(str(images.get(c, 0)) for c in classes),
        str(summary["subjects"]),
        f"{summary['age_mean']:.1f} ± {summary['age_sd']:.1f}",
        f"{sex.get('F', 0)} / {sex.get('M', 0)}",
    ]


def _percent(stats: StructureStats) -> str:
    return f"{100 * stats['mean']:.3f} ± {100 * stats['sd']:.3f}"


def _cohort_section(
    training: CohortSummary | None, cohort: CohortSummary, classes: Sequence[ClassName], members: int
) -> list[str]:
    header = ["cohort", f"images {' / '.join(classes)}", "subjects", "age mean ± sd (images)", "F / M (subjects)"]
    lines = ["## The cohort beside the training cohort", ""]
    if training is None:
        return [
            *lines,
            f"{NO_SUMMARY}: this cohort alone is shown.",
            "",
            *markdown_table(header, [["this cohort", *_cohort_row(cohort, classes)]]),
        ]
    if members > 1:
        lines += [
            f"Training cohort: that of the first of the {members} checkpoints (each was trained on its own side).",
            "",
        ]
    rows = [["training", *_cohort_row(training, classes)], ["this cohort", *_cohort_row(cohort, classes)]]
    lines += markdown_table(header, rows)
    shifted = shifted_structures(training, cohort, TOP_SHIFTED)
    if shifted.empty:
        return [*lines, "No regional volumes on both sides to compare.", ""]
    rows = [
        [r["structure"], _percent(r["training"]), _percent(r["cohort"]), f"{r['smd']:+.2f}"]
        for r in shifted.to_dict("records")
    ]
    return [
        *lines,
        (
            f"The {len(shifted)} structures whose volume (% of the labelled volume, the ICV proxy) shifted most: "
            "standardised mean difference, (cohort − training) / pooled sd."
        ),
        "",
        *markdown_table(["structure", "training mean ± sd", "cohort mean ± sd", "SMD"], rows),
    ]


def _site_section(sites: pd.DataFrame) -> list[str]:
    if sites.empty:
        return ["## Sites", "", "No site known: the subject ids are not of the ADNI form 002_S_0295.", ""]
    rows = [[r["site"], str(r["n_images"]), str(r["n_subjects"]), fmt(r["bacc"])] for r in sites.to_dict("records")]
    return ["## Sites", "", *markdown_table(["site", "images", "subjects", "balanced accuracy"], rows)]


def reliability_figure(
    y: np.ndarray, proba: np.ndarray, classes: Sequence[ClassName], temperature: float | None
) -> Figure:
    """A reliability diagram per class (one vs rest, equal-count bins): before and, with a temperature, after."""
    curves = [reliability_table(y, proba, classes).assign(model="model", scaling=UNSCALED)]
    if temperature is not None:
        scaled = reliability_table(y, scale_temperature(proba, temperature), classes)
        curves.append(scaled.assign(model="model", scaling=f"T = {temperature:.3f}"))
    return reliability_figure_of(pd.concat(curves, ignore_index=True), classes, caption="")


def write_evaluation(
    root: Path,
    frame: pd.DataFrame,
    classes: Sequence[ClassName],
    cohort: CohortSummary,
    training: CohortSummary | None,
    *,
    temperature: float | None = None,
    calibration_file: Path | None = None,
    checkpoints: Sequence[str] = (),
    n_resamples: int = 2000,
    seed: int = 0,
) -> tuple[dict[str, Path], pd.DataFrame]:
    """Write :data:`FILES` into ``root`` from ``frame`` (one row per image: ``image_id``, ``subject``, ``group``, the
    ``p_<class>`` columns; ``first_visit`` optional). ``cohort`` and ``training`` are
    :func:`~adni_lightning.data.contract.cohort_summary` dicts (``training`` ``None``: the checkpoint has none).
    Returns the paths by key and the table written to ``evaluate_metrics.csv``.
    """
    root = output_dir(root, OPTION)
    paths = {key: root / name for key, name in FILES.items()}
    frame = frame.assign(model="cnn", fold=0)
    y = frame["group"].map({c: i for i, c in enumerate(classes)}).to_numpy(int)
    proba = frame[prob_columns(classes)].to_numpy(float)
    metrics = metric_table(frame, classes, n_resamples, seed)
    calibration = calibration_table(y, proba, temperature)
    sites = site_table(frame, classes)
    site_rows = sites.melt(id_vars="site", var_name="metric", value_name="estimate").assign(
        level=lambda t: "site " + t["site"]
    )
    table = pd.concat([metrics, calibration, site_rows.reindex(columns=METRIC_COLUMNS)], ignore_index=True)
    write_text(paths["metrics"], table.to_csv(index=False), OPTION)

    predictions = frame.drop(columns=["model", "fold"]).assign(site=frame["subject"].map(site_of))
    predictions["predicted"] = [classes[i] for i in proba.argmax(axis=1)]
    if temperature is not None:
        scaled = scale_temperature(proba, temperature)
        predictions[[f"scaled_{c}" for c in prob_columns(classes)]] = scaled
    write_text(paths["predictions"], predictions.to_csv(index=False), OPTION)

    lines = [
        "# Evaluation on another cohort",
        "",
        (
            f"{len(frame)} images of {frame['subject'].nunique()} subjects scored by "
            + (
                f"`{checkpoints[0]}`"
                if len(checkpoints) == 1
                else f"the mean probability of {len(checkpoints)} checkpoints ("
                + ", ".join(f"`{c}`" for c in checkpoints)
                + ")"
            )
            + f". Classes: {', '.join(classes)}. Intervals: {n_resamples}-resample percentile bootstrap over subjects "
            f"(seed {seed}); resamples where a metric is undefined are left out and counted. Subject level: the mean "
            "probability over a subject's images. Undefined values read n/a (a class absent from the cohort has no "
            "sensitivity, and no macro AUROC)."
        ),
        "",
        *_metrics_section(metrics, classes, n_resamples),
        *_calibration_section(calibration, temperature, calibration_file),
        f"Reliability diagram per class: `{FILES['figure']}`.",
        "",
        *_cohort_section(training, cohort, classes, len(checkpoints)),
        *_site_section(sites),
    ]
    write_text(paths["report"], "\n".join(lines), OPTION)
    with atomic_path(paths["figure"], OPTION) as tmp:
        reliability_figure(y, proba, classes, temperature).savefig(tmp, format="png")
    return paths, table
