"""CSV of an ADNI IDA download → validated manifest: one row per usable image, joined to its file.

Everything is checked before any training starts and every problem is reported at once, naming the CSV row,
the image id, the file and the reason. With ``on_bad_rows="skip"`` exactly those rows are dropped and the
same report is logged; nothing is dropped silently. Faults found only when a file is decoded (by the cache) go
through :func:`exclude_images`, reported and dropped the same way.
"""

from __future__ import annotations

import logging
import re
from collections import Counter
from collections.abc import Mapping
from dataclasses import dataclass, field
from pathlib import Path
from typing import Literal

import pandas as pd

from adni_lightning.data.volume_io import VolumeError, read_header
from adni_lightning.errors import ProjectError

log = logging.getLogger(__name__)

OnBadRows = Literal["error", "skip"]
MixedGroups = Literal["error", "keep", "drop"]

#: The diagnostic groups of ADNI-1, in label order: the default classes.
ADNI1_GROUPS = ("CN", "MCI", "AD")

#: Name of the IDA collection export inside an ADNI download folder.
CSV_NAME = "ADNI_1p5T_Filtered.csv"

#: CSV columns the pipeline reads; the others of an IDA export are kept but not required.
REQUIRED_COLUMNS = ("Image Data ID", "Subject", "Group", "Sex", "Age")

#: Columns of the manifest, in order.
MANIFEST_COLUMNS = ("row", "image_id", "subject", "group", "label", "target", "sex", "age", "visit", "path")

_IMAGE_ID = re.compile(r"^I?(\d+)$")
_SEX = {"m": "M", "male": "M", "f": "F", "female": "F"}


class ManifestError(ProjectError, ValueError):
    """The CSV or the files it names cannot be used as they are; the message lists every problem."""


@dataclass
class Problem:
    """One bad row: where it is and why it cannot be used."""

    row: int
    image_id: str
    path: str
    reason: str

    def __str__(self) -> str:
        return f"CSV row {self.row}, image {self.image_id or '?'}, file {self.path or '-'}: {self.reason}"


@dataclass(frozen=True)
class ManifestSpec:
    """How to read the CSV and find each image's file (the ``data.manifest`` config group).

    Args:
        data_dir: folder of the download; ``filename_pattern`` is relative to it.
        csv_path: the IDA CSV; default ``data_dir/ADNI_1p5T_Filtered.csv``, so moving ``data_dir`` moves it.
        filename_pattern: file of a row; fields ``{group}``, ``{image_id}`` (``I123``), ``{image_number}``,
            ``{subject}``, ``{visit}``. Ids without the ``I`` are tried too.
        classes: class names in label order; groups are mapped onto them with ``group_map``.
        group_map: CSV group → class (e.g. ``EMCI: MCI``), or ``null`` to exclude that group (reported).
        age_range: ages outside it are bad rows (typos such as 7.5 or 750).
        on_bad_rows: ``error`` stops with a report of every bad row; ``skip`` drops exactly those, reported.
        check_files: read every file's header before training (cheap; off only for tests of the CSV alone).
        mixed_groups: a subject whose rows carry different classes (IDA's Group is the group at enrolment, so this
            is usually an error of a merged CSV): ``error`` stops with the list; ``keep`` keeps each image with its
            own row's class (the split stratifies by the subject's first row); ``drop`` leaves those subjects out.
            Each is reported.
    """

    data_dir: str | Path = "K1data"
    csv_path: str | Path | None = None
    filename_pattern: str = "{group}/{image_id}.nii_aseg_deep.mgz"
    classes: tuple[str, ...] = ADNI1_GROUPS
    group_map: dict[str, str | None] = field(default_factory=dict)
    age_range: tuple[float, float] = (40.0, 110.0)
    on_bad_rows: OnBadRows = "error"
    check_files: bool = True
    mixed_groups: MixedGroups = "error"

    def __post_init__(self) -> None:
        if len(set(self.classes)) != len(self.classes) or len(self.classes) < 2:
            raise ManifestError(f"data.manifest.classes must be at least two distinct names, got {list(self.classes)}")

    @property
    def root(self) -> Path:
        return Path(self.data_dir)

    @property
    def csv_file(self) -> Path:
        """``csv_path``, else the IDA export's usual name inside ``data_dir``."""
        return Path(self.csv_path) if self.csv_path else self.root / CSV_NAME


def normalise_image_id(raw: object) -> str | None:
    """``I45108``, ``45108`` and ``45108.0`` (a float column) → ``I45108``; anything else → ``None``."""
    text = str(raw).strip()
    if text.endswith(".0"):
        text = text[:-2]
    match = _IMAGE_ID.match(text)
    return f"I{match.group(1)}" if match else None


def _candidate_paths(spec: ManifestSpec, row: pd.Series, image_id: str) -> list[Path]:
    """The pattern with the id as ``I123`` and, for exports that drop it, as ``123``."""
    fields = {
        "group": row["Group"],
        "subject": row["Subject"],
        "visit": row.get("Visit", ""),
        "image_number": image_id[1:],
    }
    return [spec.root / spec.filename_pattern.format(image_id=i, **fields) for i in (image_id, image_id[1:])]


def _read_csv(spec: ManifestSpec) -> pd.DataFrame:
    if not spec.csv_file.is_file():
        raise ManifestError(f"CSV not found: {spec.csv_file}")
    try:
        table = pd.read_csv(spec.csv_file, dtype=str, keep_default_na=False)
    except (pd.errors.ParserError, UnicodeDecodeError) as err:
        raise ManifestError(f"{spec.csv_file}: not a readable CSV ({err})") from err
    missing = [c for c in REQUIRED_COLUMNS if c not in table.columns]
    if missing:
        raise ManifestError(
            f"{spec.csv_file}: missing column(s) {', '.join(missing)}; found {', '.join(table.columns)}"
        )
    return table


def _check_row(spec: ManifestSpec, row: pd.Series, line: int) -> tuple[dict[str, object] | None, Problem | None]:
    """One CSV row → a manifest record, or the first reason it cannot be one (or neither: excluded)."""
    image_id = normalise_image_id(row["Image Data ID"])
    if image_id is None:
        return None, Problem(line, str(row["Image Data ID"]), "", "image id is not of the form I12345 or 12345")
    group = str(row["Group"]).strip()
    label = (spec.group_map or {}).get(group, group)
    if group in (spec.group_map or {}) and label is None:
        return None, None
    if label not in spec.classes:
        return None, Problem(
            line,
            image_id,
            "",
            f"group {group!r} is not one of the classes {list(spec.classes)} (map it with group_map)",
        )
    subject = str(row["Subject"]).strip()
    if not subject:
        return None, Problem(line, image_id, "", "subject id is empty")
    sex = _SEX.get(str(row["Sex"]).strip().lower())
    if sex is None:
        return None, Problem(line, image_id, "", f"sex {row['Sex']!r} is not M or F")
    try:
        age = float(row["Age"])
    except ValueError:
        return None, Problem(line, image_id, "", f"age {row['Age']!r} is missing or not a number")
    low, high = spec.age_range
    if not low <= age <= high:
        return None, Problem(line, image_id, "", f"age {age:g} is outside the plausible range {low:g}–{high:g}")
    candidates = _candidate_paths(spec, row, image_id)
    path = next((p for p in candidates if p.is_file()), None)
    if path is None:
        tried = " or ".join(str(p) for p in dict.fromkeys(candidates))
        return None, Problem(line, image_id, str(candidates[0]), f"file not found (looked for {tried})")
    record = {
        "row": line,
        "image_id": image_id,
        "subject": subject,
        "group": group,
        "label": label,
        "target": spec.classes.index(label),
        "sex": sex,
        "age": age,
        "visit": str(row.get("Visit", "")).strip(),
        "path": str(path),
    }
    return record, None


def _duplicate_problems(records: list[dict[str, object]]) -> list[Problem]:
    counts = Counter(r["image_id"] for r in records)
    return [
        Problem(r["row"], r["image_id"], r["path"], f"image id appears {counts[r['image_id']]} times in the CSV")
        for r in records
        if counts[r["image_id"]] > 1
    ]


def _file_problems(records: list[dict[str, object]]) -> list[Problem]:
    """Header of every file: readable, complete, 3D; all files on the cohort's most common grid."""
    problems, shapes = [], {}
    for r in records:
        try:
            shapes[r["image_id"]] = read_header(r["path"]).shape
        except VolumeError as err:
            problems.append(Problem(r["row"], r["image_id"], r["path"], err.reason))
    if shapes:
        common, _ = Counter(shapes.values()).most_common(1)[0]
        problems += [
            Problem(
                r["row"], r["image_id"], r["path"], f"shape {shapes[r['image_id']]} differs from the cohort's {common}"
            )
            for r in records
            if r["image_id"] in shapes and shapes[r["image_id"]] != common
        ]
    return problems


def _enforce(spec: ManifestSpec, problems: list[Problem], total: int, what: str) -> set[int]:
    """Apply ``on_bad_rows`` to ``problems`` among ``total`` rows: raise, or log them; return the CSV rows to drop.

    One problem is one line; several are a heading and one line each, so no fault hides another.
    """
    problems = sorted(problems, key=lambda p: p.row)
    skip = spec.on_bad_rows == "skip"
    action = "skipped, on_bad_rows: skip" if skip else "set on_bad_rows: skip to train without them"
    if len(problems) == 1:
        report = f"{spec.csv_file}: {problems[0]} ({action})"
    else:
        report = f"{spec.csv_file}: {len(problems)} of {total} {what} ({action}):\n" + "\n".join(
            f"  {p}" for p in problems
        )
    if not skip:
        raise ManifestError(report)
    log.warning(report)
    return {p.row for p in problems}


def build_manifest(spec: ManifestSpec) -> pd.DataFrame:
    """Read, join and validate; return the manifest or raise :class:`ManifestError` (policy ``error``)."""
    table = _read_csv(spec)
    records, problems, excluded = [], [], 0
    for index, row in table.iterrows():
        record, problem = _check_row(spec, row, line=int(index) + 2)
        if problem:
            problems.append(problem)
        elif record is None:
            excluded += 1
        else:
            records.append(record)
    problems += _duplicate_problems(records)
    if spec.check_files:
        flagged = {p.row for p in problems}
        problems += _file_problems([r for r in records if r["row"] not in flagged])
    if excluded:
        log.info("%s: %d row(s) excluded by group_map", spec.csv_file, excluded)
    if problems:
        bad_rows = _enforce(spec, problems, len(table), "row(s) cannot be used")
        records = [r for r in records if r["row"] not in bad_rows]
    records = _resolve_mixed_groups(spec, records)
    if not records:
        raise ManifestError(f"{spec.csv_file}: no usable rows")
    return pd.DataFrame.from_records(records, columns=list(MANIFEST_COLUMNS))


def exclude_images(manifest: pd.DataFrame, spec: ManifestSpec, reasons: Mapping[str, str]) -> pd.DataFrame:
    """The manifest less the images of ``reasons`` (image id → why), faults found after it was built.

    A file whose header is fine may still fail when its voxels are decoded (a corrupt gzip body, non-integer or
    unknown label values). Such faults are reported as the manifest's own, naming the CSV row, image, file and
    reason, all at once, and follow the same ``on_bad_rows``: ``error`` raises :class:`ManifestError`,
    ``skip`` logs them and drops exactly those images.
    """
    bad = manifest[manifest["image_id"].isin(set(reasons))]
    if bad.empty:
        return manifest
    problems = [Problem(int(r.row), r.image_id, r.path, reasons[r.image_id]) for r in bad.itertuples()]
    bad_rows = _enforce(spec, problems, len(manifest), "image files cannot be read or decoded")
    kept = manifest[~manifest["row"].isin(bad_rows)].reset_index(drop=True)
    if kept.empty:
        raise ManifestError(f"{spec.csv_file}: no usable rows")
    return kept


def _resolve_mixed_groups(spec: ManifestSpec, records: list[dict[str, object]]) -> list[dict[str, object]]:
    """Report subjects whose rows carry different classes and apply ``spec.mixed_groups`` to them."""
    rows: dict[str, dict[str, list[int]]] = {}
    for r in records:
        rows.setdefault(r["subject"], {}).setdefault(r["label"], []).append(r["row"])
    mixed = {subject: labels for subject, labels in rows.items() if len(labels) > 1}
    if not mixed:
        return records
    report = f"{spec.csv_file}: {len(mixed)} subject(s) have rows of different classes:\n" + "\n".join(
        f"  subject {subject}: "
        + ", ".join(f"{label} (CSV row {', '.join(map(str, lines))})" for label, lines in labels.items())
        for subject, labels in sorted(mixed.items())
    )
    if spec.mixed_groups == "error":
        raise ManifestError(
            report + "\n(set data.manifest.mixed_groups: keep to keep each image with its own row's class, "
            "or drop to leave these subjects out)"
        )
    if spec.mixed_groups == "drop":
        log.warning("%s\nthese subjects are left out (mixed_groups: drop)", report)
        return [r for r in records if r["subject"] not in mixed]
    log.info("%s\neach image keeps its own row's class (mixed_groups: keep)", report)
    return records
