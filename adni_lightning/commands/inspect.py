"""Describe a run's cohort and check its label maps: volumes.csv and cohort.md, before any training.

``python -m adni_lightning inspect [--config FILE ...] [--out DIR] [--outlier_z 4] [--data.* ...]`` reads the
cohort exactly as ``fit`` would (same config, same overrides), fills the cache (which counts every structure at
full resolution), and writes the regional volumes and a one-page summary: who is in each group, which label ids
occur, and which images have implausible volumes, so a failed segmentation is seen before it is trained on.
"""

from __future__ import annotations

from collections.abc import Mapping, Sequence
from pathlib import Path

import pandas as pd

from adni_lightning.atomic import output_dir, write_text
from adni_lightning.data.labels import FREESURFER_LUT
from adni_lightning.data.split import score_strata
from adni_lightning.data.volumes import (
    FASTSURFER_DEEP_LABELS,
    LABELLED,
    TOTAL_BRAIN,
    regional_volumes,
    structure_columns,
    volume_outliers,
)
from adni_lightning.errors import OptionError
from adni_lightning.evaluation.baseline import visit_order
from adni_lightning.run import Run
from adni_lightning.vocabulary import ClassName, LabelId

_NAME_TO_ID = {name: label for label, (name, _) in FREESURFER_LUT.items()}


def cohort_volumes(run: Run) -> pd.DataFrame:
    """Fill the run's cache and return the :func:`regional_volumes` of its cohort, as ``fit`` would read it.

    Draws no split (``prepare_data`` would); a synthetic config's cohort is generated first, as ``fit`` does.
    """
    dm = run.datamodule
    if not dm.preprocessing.labelmap:
        raise OptionError(
            f"data.preprocessing.input_kind {dm.preprocessing.input_kind}: regional volumes are counted on label maps; "
            "set data.preprocessing.input_kind labelmap"
        )
    run.cohort()
    return regional_volumes(dm.fill_cache(), dm.cache)


def _table(header: Sequence[str], rows: Sequence[Sequence[object]]) -> list[str]:
    lines = ["| " + " | ".join(header) + " |", "|" + "---|" * len(header)]
    return lines + ["| " + " | ".join(str(v) for v in row) + " |" for row in rows]


def _groups_section(volumes: pd.DataFrame, classes: Sequence[ClassName]) -> list[str]:
    rows = []
    for group in [*classes, "all"]:
        part = volumes if group == "all" else volumes[volumes["group"] == group]
        sexes = part.drop_duplicates("subject")["sex"].value_counts()
        age = part["age"]
        spread = f"{age.mean():.1f} ± {age.std():.1f}" if len(part) > 1 else f"{age.mean():.1f}" if len(part) else "-"
        ages = f"{age.min():g}–{age.max():g}" if len(part) else "-"
        rows.append([group, len(part), part["subject"].nunique(), sexes.get("F", 0), sexes.get("M", 0), spread, ages])
    header = ["group", "images", "subjects", "F (subjects)", "M (subjects)", "age mean ± sd (images)", "age range"]
    return ["## Groups", "", *_table(header, rows)]


def _task_section(
    task: str, volumes: pd.DataFrame, classes: Sequence[ClassName], excluded: Mapping[str, int]
) -> list[str]:
    """Which task labels the images, and how many CSV rows it left out, by reason (``group_map``'s too)."""
    kept = ", ".join(f"{c} {int((volumes['group'] == c).sum())}" for c in classes)
    lines = ["## Task", "", f"data.task: {task}. Images per class: {kept}.", ""]
    if "score" in volumes.columns:
        score = volumes["score"]
        lines[2] = (
            f"data.task: {task}, a regression: {score.mean():.2f} ± {score.std():.2f} (range {score.min():g}–"
            f"{score.max():g}) over {len(volumes)} images. The groups below are its strata, as the split deals them: "
            f"the subjects ranked by their first score in equal-count bins, {classes[0]} the lowest. Images per "
            f"stratum: {kept}."
        )
    if not excluded:
        return [*lines, "No CSV row excluded."]
    rows = [[reason, n] for reason, n in sorted(excluded.items(), key=lambda item: (-item[1], item[0]))]
    return [*lines, *_table(["excluded (reason)", "CSV rows"], rows)]


def _visits_section(volumes: pd.DataFrame, classes: Sequence[ClassName]) -> list[str]:
    counts = pd.crosstab(volumes["visit"].replace("", "(none)"), volumes["group"])
    counts = counts.reindex(index=sorted(counts.index, key=visit_order), columns=list(classes), fill_value=0)
    rows = [[visit, *row.tolist(), int(row.sum())] for visit, row in counts.iterrows()]
    return ["## Images per visit", "", *_table(["visit", *classes, "all"], rows)]


def _named(ids: list[LabelId]) -> str:
    return ", ".join(f"{i} {FREESURFER_LUT[i][0]}" for i in ids) or "none"


def _labels_section(volumes: pd.DataFrame) -> list[str]:
    present = volumes[structure_columns(volumes)] > 0
    ids = {_NAME_TO_ID[str(name)]: int(n) for name, n in present.sum().items()}
    expected = set(FASTSURFER_DEEP_LABELS)
    per_image = present.sum(axis=1)
    partial = sorted(i for i, n in ids.items() if i in expected and n < len(volumes))
    return [
        "## Label ids",
        "",
        f"{len(ids)} distinct non-zero ids occur; each image holds {per_image.min()}–{per_image.max()} of them.",
        "",
        f"- expected FastSurfer DKT+aseg ids absent from every image: {_named(sorted(expected - set(ids)))}",
        "- expected ids missing from some images: "
        + (", ".join(f"{i} {FREESURFER_LUT[i][0]} ({len(volumes) - ids[i]} images)" for i in partial) or "none"),
        f"- other ids present (not written by FastSurfer's deep DKT map): {_named(sorted(set(ids) - expected))}",
    ]


def _outliers_section(volumes: pd.DataFrame, threshold: float) -> list[str]:
    outliers = volume_outliers(volumes, threshold)
    lines = [
        f"## Volume outliers (|z| > {threshold:g})",
        "",
        f"Per structure (and {TOTAL_BRAIN}, {LABELLED}): volume ~ age fitted by least squares over all images "
        "(pooled, not per group: quality control blind to the diagnosis); robust z of the residual = "
        "(residual − median) / max(1.4826·MAD, 1.2533·mean absolute deviation). "
        f"{len(outliers)} outlying volume(s) in {outliers['image_id'].nunique()} image(s).",
        "",
    ]
    if outliers.empty:
        return lines
    rows = [
        [r.image_id, r.subject, r.group, r.structure, f"{r.volume_mm3:.0f}", f"{r.z:+.1f}"]
        for r in outliers.itertuples()
    ]
    return lines + _table(["image_id", "subject", "group", "structure", "volume mm³", "z"], rows)


def cohort_report(
    volumes: pd.DataFrame,
    classes: Sequence[ClassName],
    source: str,
    threshold: float,
    task: str = "group",
    excluded: Mapping[str, int] | None = None,
) -> str:
    """The text of ``cohort.md``; ``task`` and ``excluded`` (CSV rows left out, by reason) as the manifest says."""
    lines = [
        f"# Cohort: {source}",
        "",
        f"{len(volumes)} images of {volumes['subject'].nunique()} subjects. Regional volumes (mm³, counted on the "
        f"full-resolution label maps) are in volumes.csv; {LABELLED} (every non-zero label) is the head-size proxy, "
        "not an eTIV.",
        "",
    ]
    for section in (
        _task_section(task, volumes, classes, excluded or {}),
        _groups_section(volumes, classes),
        _visits_section(volumes, classes),
        _labels_section(volumes),
        _outliers_section(volumes, threshold),
    ):
        lines += [*section, ""]
    return "\n".join(lines)


def describe_cohort(run: Run, out: Path | None = None, outlier_z: float = 4.0) -> Path:
    """Write ``volumes.csv`` and ``cohort.md`` for the run's cohort; returns the folder.

    Args:
        run: the configuration whose cohort is described.
        out: folder for volumes.csv and cohort.md (default: the run's trainer.default_root_dir).
        outlier_z: list volumes whose robust z-score (age regressed out) exceeds this in absolute value.
    """
    volumes = cohort_volumes(run)
    out = output_dir(out or run.root, "--out")
    dm = run.datamodule
    if dm.task.regression:  # a score task's group is its score: group by its strata, as the split does
        first = volumes.groupby("subject", sort=True)["group"].first().astype(float)
        strata = volumes["subject"].map(score_strata(first))
        volumes = volumes.assign(score=volumes["group"].astype(float), group=strata)
    excluded = dm.manifest().attrs.get("excluded", {})
    write_text(out / "volumes.csv", volumes.to_csv(index=False), "--out")
    report = cohort_report(volumes, dm.classes, str(dm.manifest_spec.csv_file), outlier_z, dm.task.contract(), excluded)
    write_text(out / "cohort.md", report, "--out")
    print(f"wrote {out / 'volumes.csv'} and {out / 'cohort.md'} ({len(volumes)} images)")
    return out


COMMAND = describe_cohort
