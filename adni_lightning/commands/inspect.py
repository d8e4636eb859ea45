"""Describe a run's cohort and check its label maps: volumes.csv and cohort.md, before any training.

``python -m adni_lightning inspect [--config FILE ...] [--out DIR] [--outlier_z 4] [--data.* ...]`` reads the
cohort exactly as ``fit`` would (same config, same overrides), fills the cache (which counts every structure at
full resolution), and writes the regional volumes and a one-page summary: who is in each group, which label ids
occur, and which images have implausible volumes, so a failed segmentation is seen before it is trained on.
"""

from __future__ import annotations

from pathlib import Path

import pandas as pd

from adni_lightning.arguments import CommandParser
from adni_lightning.atomic import output_dir, write_text
from adni_lightning.commands.run_config import load_run, run_root, split_run_options
from adni_lightning.data.labels import FREESURFER_LUT
from adni_lightning.data.volumes import (
    FASTSURFER_DEEP_LABELS,
    LABELLED,
    TOTAL_BRAIN,
    regional_volumes,
    structure_columns,
    volume_outliers,
)
from adni_lightning.evaluation.baseline import visit_order
from adni_lightning.main import ADNILightningCLI

PROG = "python -m adni_lightning inspect"
RUN_OPTIONS_HELP = (
    "Any --data.*, --model.*, --trainer.*, --checkpoint.* or --seed_everything option of `fit` goes to the run's "
    "configuration (e.g. --data.manifest.data_dir DIR)."
)
_NAME_TO_ID = {name: label for label, (name, _) in FREESURFER_LUT.items()}


def parser(prog: str = PROG, doc: str = __doc__) -> CommandParser:
    """The options every command over a run's cohort shares: ``--config``."""
    p = CommandParser(prog=prog, description=doc.splitlines()[0], epilog=RUN_OPTIONS_HELP, exit_on_error=True)
    p.add_argument(
        "--config",
        type=str,
        action="append",
        default=None,
        help="the run's config file, as for fit (repeat for several; default: the packaged synthetic.yaml)",
    )
    return p


def cohort_volumes(configs: list[str] | None, overrides: list[str]) -> tuple[ADNILightningCLI, pd.DataFrame]:
    """Build the run as ``fit`` would, fill its cache, return it and the :func:`regional_volumes` frame.

    Draws no split (``prepare_data`` would); a synthetic config's cohort is generated first, as ``fit`` does.
    """
    cli = load_run([Path(c) for c in configs] if configs else None, overrides)
    dm = cli.datamodule
    if not dm.preprocessing.labelmap:
        raise ValueError("regional volumes need label maps: data.preprocessing.input_kind is not labelmap")
    dm.prepare_cohort()
    return cli, regional_volumes(dm.fill_cache(), dm.cache)


def _table(header: list[str], rows: list[list[object]]) -> list[str]:
    lines = ["| " + " | ".join(header) + " |", "|" + "---|" * len(header)]
    return lines + ["| " + " | ".join(str(v) for v in row) + " |" for row in rows]


def _groups_section(volumes: pd.DataFrame, classes: list[str]) -> list[str]:
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


def _visits_section(volumes: pd.DataFrame, classes: list[str]) -> list[str]:
    counts = pd.crosstab(volumes["visit"].replace("", "(none)"), volumes["group"])
    counts = counts.reindex(index=sorted(counts.index, key=visit_order), columns=classes, fill_value=0)
    rows = [[visit, *row.tolist(), int(row.sum())] for visit, row in counts.iterrows()]
    return ["## Images per visit", "", *_table(["visit", *classes, "all"], rows)]


def _named(ids: list[int]) -> str:
    return ", ".join(f"{i} {FREESURFER_LUT[i][0]}" for i in ids) or "none"


def _labels_section(volumes: pd.DataFrame) -> list[str]:
    present = volumes[structure_columns(volumes)] > 0
    ids = {_NAME_TO_ID[name]: int(n) for name, n in present.sum().items()}
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


def cohort_report(volumes: pd.DataFrame, classes: list[str], source: str, threshold: float) -> str:
    """The text of ``cohort.md``."""
    lines = [
        f"# Cohort: {source}",
        "",
        f"{len(volumes)} images of {volumes['subject'].nunique()} subjects. Regional volumes (mm³, counted on the "
        f"full-resolution label maps) are in volumes.csv; {LABELLED} (every non-zero label) is the head-size proxy, "
        "not an eTIV.",
        "",
    ]
    for section in (
        _groups_section(volumes, classes),
        _visits_section(volumes, classes),
        _labels_section(volumes),
        _outliers_section(volumes, threshold),
    ):
        lines += [*section, ""]
    return "\n".join(lines)


def main(argv: list[str]) -> None:
    """Parse ``argv`` (the command's own options, then any run override), write the two files, say where."""
    own, overrides = split_run_options(argv)
    p = parser()
    p.add_argument(
        "--out",
        type=Path | None,
        default=None,
        help="folder for volumes.csv and cohort.md (default: the run's trainer.default_root_dir)",
    )
    p.add_argument(
        "--outlier_z",
        type=float,
        default=4.0,
        help="list volumes whose robust z-score (age regressed out) exceeds this in absolute value",
    )
    options = p.parse_args(own)
    cli, volumes = cohort_volumes(options.config, overrides)
    out = output_dir(options.out or run_root(cli), "--out")
    write_text(out / "volumes.csv", volumes.to_csv(index=False), "--out")
    dm = cli.datamodule
    report = cohort_report(volumes, dm.classes, str(dm.manifest_spec.csv_file), options.outlier_z)
    write_text(out / "cohort.md", report, "--out")
    print(f"wrote {out / 'volumes.csv'} and {out / 'cohort.md'} ({len(volumes)} images)")
