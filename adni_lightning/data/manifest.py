"""CSV of an ADNI IDA download → validated manifest: one row per usable image, joined to its file.

Everything is checked before any training starts and every problem is reported at once, naming the CSV row,
the image id, the file and the reason. With ``on_bad_rows="skip"`` exactly those rows are dropped and the
same report is logged; nothing is dropped silently. Faults found only when a file is decoded (by the cache) go
through :func:`exclude_images`, reported and dropped the same way.

A report opens with one line: how many rows, and how many for each reason. The first rows of each reason follow;
when that leaves rows out, every row is written to a CSV in the folder the caller names (the run's or the
cache's, never the data folder) and the first line names it, so a download with thousands of missing files gives
a message of a few lines, not megabytes.
"""

from __future__ import annotations

import csv
import logging
import math
import re
from collections import Counter
from collections.abc import Callable, Mapping, Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import Literal, TypedDict

import pandas as pd

from adni_lightning.data.volume_io import VolumeError, file_problem, read_header
from adni_lightning.errors import OptionError, ProjectError
from adni_lightning.vocabulary import ClassIndex, ClassName

log = logging.getLogger(__name__)

OnBadRows = Literal["error", "skip"]
MixedGroups = Literal["error", "keep", "drop"]

#: The diagnostic groups of ADNI-1, in label order: the default classes.
ADNI1_GROUPS = (ClassName("CN"), ClassName("MCI"), ClassName("AD"))

#: Name of the IDA collection export inside an ADNI download folder.
CSV_NAME = "ADNI_1p5T_Filtered.csv"

#: CSV columns the pipeline reads; the others of an IDA export are kept but not required.
REQUIRED_COLUMNS = ("Image Data ID", "Subject", "Group", "Sex", "Age")

#: Columns whose values the pipeline reads (and so strips of surrounding spaces, saying so).
READ_COLUMNS = (*REQUIRED_COLUMNS, "Visit")

#: Rows of each reason a bad-row report shows; every row goes to the CSV it names.
SHOWN_PER_REASON = 5

#: Columns of the CSV that lists every bad row of a report.
BAD_ROW_COLUMNS = ("row", "image_id", "file", "reason")

#: Where a long report of the CSV's rows lists them all (in the run's or the cache's folder).
BAD_ROWS_CSV = "bad_rows.csv"

#: The same for the images found faulty once decoded (:func:`exclude_images`).
BAD_IMAGES_CSV = "bad_images.csv"

#: Columns of the manifest, in order.
MANIFEST_COLUMNS = ("row", "image_id", "subject", "group", "label", "target", "sex", "age", "visit", "path")

_IMAGE_ID = re.compile(r"^I?(\d+)$")
_SEX = {"m": "M", "male": "M", "f": "F", "female": "F"}


class Record(TypedDict):
    """One usable image: a row of the manifest (:data:`MANIFEST_COLUMNS`), as read from its CSV row."""

    row: int
    image_id: str
    subject: str
    group: str
    label: ClassName | float
    target: ClassIndex | float
    sex: str
    age: float
    visit: str
    path: str


class ManifestError(ProjectError, ValueError):
    """The CSV or the files it names cannot be used as they are; the message lists every problem."""


@dataclass
class Problem:
    """One bad row: where it is and why it cannot be used.

    ``kind`` names the reason without the row's values (``age outside the plausible range``), so a report can
    count rows by reason; by default it is the reason up to its first detail (``truncated: 1000 bytes`` →
    ``truncated``).
    """

    row: int
    image_id: str
    path: str
    reason: str
    kind: str = ""

    def __str__(self) -> str:
        return f"CSV row {self.row}, image {self.image_id or '?'}, file {self.path or '-'}: {self.reason}"

    @property
    def category(self) -> str:
        """What a report counts this row under."""
        return self.kind or re.split(r" \(|: ", self.reason, maxsplit=1)[0]


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
        min_labelled_fraction: a label map whose labelled volume (every non-zero voxel, at full resolution) is
            below this fraction of the cohort's median is a bad row: a segmentation that failed part-way, or a
            field of view that missed most of the head. Half the median lies far below any whole head (intracranial
            volumes vary by about 10 %, atrophy shrinks the labelled volume by some percent more) and far above a
            failure.
            An empty map (no labelled voxel) is a bad row whatever this says; 0 turns the comparison off.
        max_skipped_fraction: with ``on_bad_rows: skip``, stop instead when the bad rows are more than this share
            of the rows ``group_map`` keeps: a wrong ``data_dir`` or ``filename_pattern`` makes most rows bad,
            and training on what is left would look like a result.
    """

    data_dir: str | Path = "K1data"
    csv_path: str | Path | None = None
    filename_pattern: str = "{group}/{image_id}.nii_aseg_deep.mgz"
    classes: tuple[ClassName, ...] = ADNI1_GROUPS
    group_map: dict[str, ClassName | None] = field(default_factory=dict)
    age_range: tuple[float, float] = (40.0, 110.0)
    on_bad_rows: OnBadRows = "error"
    check_files: bool = True
    mixed_groups: MixedGroups = "error"
    min_labelled_fraction: float = 0.5
    max_skipped_fraction: float = 0.5

    def __post_init__(self) -> None:
        if len(set(self.classes)) != len(self.classes) or len(self.classes) < 2:
            raise ManifestError(f"data.manifest.classes must be at least two distinct names, got {list(self.classes)}")
        for name in ("min_labelled_fraction", "max_skipped_fraction"):
            if not 0 <= getattr(self, name) <= 1:
                raise OptionError(f"data.manifest.{name} must be in [0, 1], got {getattr(self, name)!r}")

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
    """The pattern with the id as ``I123`` and, for exports that drop it, as ``123`` (each path once)."""
    fields = {
        "group": row["Group"],
        "subject": row["Subject"],
        "visit": row.get("Visit", ""),
        "image_number": image_id[1:],
    }
    paths = [spec.root / spec.filename_pattern.format(image_id=i, **fields) for i in (image_id, image_id[1:])]
    return list(dict.fromkeys(paths))


def _separator_hint(path: Path) -> str:
    """A hint when the header line splits into required columns at a semicolon or a tab rather than a comma."""
    with open(path, encoding="utf-8", errors="replace") as f:
        header = f.readline()
    for separator, name in ((";", "semicolon"), ("\t", "tab")):
        names = {n.strip().strip('"') for n in header.split(separator)}
        if len(names & set(REQUIRED_COLUMNS)) >= 2:
            return f" (the file looks {name}-separated: save it comma-separated, as IDA exports it)"
    return ""


def _strip_spaces(spec: ManifestSpec, table: pd.DataFrame) -> pd.DataFrame:
    """Remove spaces around the values the pipeline reads, and say where.

    A space after ``AD`` is an artefact of editing or exporting a CSV, not another group: ``"AD "`` means AD.
    Refusing the row would make the user edit the CSV for no gain; using the value as it is would look for the
    file in a folder ``"AD "`` and report it missing, a wrong reason. So the value is read without its spaces,
    for the class and the file's path alike, and a warning names each column, the number of rows and the first
    one, so nothing changes silently.
    """
    notes = []
    for column in (c for c in READ_COLUMNS if c in table.columns):
        stripped = table[column].str.strip()
        changed = (stripped != table[column]).to_numpy().nonzero()[0]
        if len(changed):
            first = int(changed[0])
            notes.append(f"{column} in {len(changed)} row(s), e.g. CSV row {first + 2}: {table[column].iat[first]!r}")
            table[column] = stripped
    if notes:
        log.warning("%s: values read without their surrounding spaces: %s", spec.csv_file, "; ".join(notes))
    return table


def _read_csv(spec: ManifestSpec) -> pd.DataFrame:
    if not spec.csv_file.is_file():
        raise ManifestError(f"CSV not found: {spec.csv_file}")
    expected = f"expected the IDA collection export: a header line with {', '.join(REQUIRED_COLUMNS)}, a row per image"
    if spec.csv_file.stat().st_size == 0:
        raise ManifestError(f"{spec.csv_file}: empty file (0 bytes); {expected}")
    try:
        table = pd.read_csv(spec.csv_file, dtype=str, keep_default_na=False)
    except pd.errors.EmptyDataError as err:
        raise ManifestError(f"{spec.csv_file}: no header line (only blank lines); {expected}") from err
    except (pd.errors.ParserError, UnicodeDecodeError) as err:
        raise ManifestError(f"{spec.csv_file}: not a readable CSV ({err})") from err
    missing = [c for c in REQUIRED_COLUMNS if c not in table.columns]
    if missing:
        raise ManifestError(
            f"{spec.csv_file}: missing column(s) {', '.join(missing)}; found {', '.join(table.columns)}"
            + _separator_hint(spec.csv_file)
        )
    return _strip_spaces(spec, table)


def _find_file(line: int, image_id: str, candidates: Sequence[Path]) -> tuple[Path | None, Problem | None]:
    """The first candidate that is a regular file, else the most telling reason: a folder or a link loop where
    the file should be says more than "file not found".
    """
    problems = {path: file_problem(path) for path in candidates}
    found = next((path for path, problem in problems.items() if problem is None), None)
    if found is not None:
        return found, None
    for path, problem in problems.items():
        if problem is not None and problem != "file not found":
            return None, Problem(line, image_id, str(path), problem)
    tried = " or ".join(str(p) for p in candidates)
    return None, Problem(line, image_id, str(candidates[0]), f"file not found (looked for {tried})")


#: A task's labeller (:class:`~adni_lightning.data.clinical.TaskLabels`): a CSV row, its line and image id → its
#: class (or, for a score task, its score: a float), or ``None`` and a :class:`Problem` (a bad row) or the reason the
#: task excludes it.
Labeller = Callable[[pd.Series, int, str], tuple[ClassName | float | None, Problem | str | None]]

#: The exclusion reason of a row whose group ``group_map`` maps to null.
GROUP_MAP_EXCLUSION = "excluded by group_map"


def _check_row(
    spec: ManifestSpec, row: pd.Series, line: int, labeller: Labeller | None = None
) -> tuple[Record | None, Problem | str | None]:
    """One CSV row → a manifest record, or the first reason it cannot be one: a :class:`Problem` (a bad row) or the
    reason it is excluded (``group_map``, or the task of ``labeller``).
    """
    image_id = normalise_image_id(row["Image Data ID"])
    if image_id is None:
        return None, Problem(line, str(row["Image Data ID"]), "", "image id is not of the form I12345 or 12345")
    group = row["Group"]
    label = (spec.group_map or {}).get(group, group)
    if labeller is not None:
        label = group  # the task decides the class; the group only finds the file
    elif group in (spec.group_map or {}) and label is None:
        return None, GROUP_MAP_EXCLUSION
    elif label not in spec.classes:
        return None, Problem(
            line,
            image_id,
            "",
            f"group {group!r} is not one of the classes {list(spec.classes)} (map it with group_map)",
            "group not among the classes",
        )
    subject = row["Subject"]
    if not subject:
        return None, Problem(line, image_id, "", "subject id is empty")
    sex = _SEX.get(row["Sex"].lower())
    if sex is None:
        return None, Problem(line, image_id, "", f"sex {row['Sex']!r} is not M or F", "sex not M or F")
    try:
        age = float(row["Age"])
    except ValueError:
        reason = f"age {row['Age']!r} is missing or not a number"
        return None, Problem(line, image_id, "", reason, "age missing or not a number")
    low, high = spec.age_range
    if not low <= age <= high:
        return None, Problem(
            line,
            image_id,
            "",
            f"age {age:g} is outside the plausible range {low:g}–{high:g}",
            "age outside the plausible range",
        )
    if labeller is not None:
        label, outcome = labeller(row, line, image_id)
        if label is None:
            return None, outcome
    path, problem = _find_file(line, image_id, _candidate_paths(spec, row, image_id))
    if problem:
        return None, problem
    record: Record = {
        "row": line,
        "image_id": image_id,
        "subject": subject,
        "group": group,
        "label": label,
        # a score task's target is its score; a class's, its index in the classes
        "target": label if isinstance(label, float) else ClassIndex(spec.classes.index(label)),
        "sex": sex,
        "age": age,
        "visit": row.get("Visit", ""),
        "path": str(path),
    }
    return record, None


def _duplicate_problems(records: list[Record]) -> list[Problem]:
    counts = Counter(r["image_id"] for r in records)
    return [
        Problem(
            r["row"],
            r["image_id"],
            r["path"],
            f"image id appears {counts[r['image_id']]} times in the CSV",
            "image id appears more than once",
        )
        for r in records
        if counts[r["image_id"]] > 1
    ]


def _sex_problems(records: list[Record]) -> list[Problem]:
    """Every row of a subject whose rows disagree on sex: one of them is wrong, and the CSV cannot say which."""
    rows: dict[str, dict[str, list[int]]] = {}
    for r in records:
        rows.setdefault(r["subject"], {}).setdefault(r["sex"], []).append(r["row"])
    problems = []
    for r in records:
        sexes = rows[r["subject"]]
        if len(sexes) > 1:
            found = " and ".join(f"{sex} (CSV row {', '.join(map(str, lines))})" for sex, lines in sexes.items())
            reason = f"subject {r['subject']} is recorded as {found}"
            problems.append(Problem(r["row"], r["image_id"], r["path"], reason, "sex differs between visits"))
    return problems


def _file_problems(records: list[Record]) -> list[Problem]:
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
                r["row"],
                r["image_id"],
                r["path"],
                f"shape {shapes[r['image_id']]} differs from the cohort's {common}",
                "shape differs from the cohort's",
            )
            for r in records
            if r["image_id"] in shapes and shapes[r["image_id"]] != common
        ]
    return problems


def _write_list(problems: list[Problem], folder: str | Path | None, name: str) -> str:
    """Write every problem to ``folder/name``; say where, or why not."""
    if folder is None:
        return f"rows beyond the first {SHOWN_PER_REASON} of a reason are not shown"
    target = Path(folder) / name
    table = pd.DataFrame([(p.row, p.image_id, p.path, p.reason) for p in problems], columns=list(BAD_ROW_COLUMNS))
    try:
        target.parent.mkdir(parents=True, exist_ok=True)
        table.to_csv(target, index=False, quoting=csv.QUOTE_NONNUMERIC)  # DDP ranks write the same bytes
    except OSError as err:
        return f"the full list could not be written to {target} ({err.strerror or err})"
    return f"every row listed in {target}"


def _describe(problems: list[Problem], folder: str | Path | None, name: str) -> tuple[str, list[str]]:
    """A report's summary (the counts by reason) and the lines below it (the first rows of each reason).

    The rows left out of the lines are all in a CSV (see :func:`_write_list`), which the summary names; a
    report that shows every row writes none, so a refused cohort leaves nothing behind.
    """
    if len(problems) == 1:
        return str(problems[0]), []
    groups: dict[str, list[Problem]] = {}
    for problem in problems:
        groups.setdefault(problem.category, []).append(problem)
    ordered = sorted(groups.items(), key=lambda group: (-len(group[1]), group[1][0].row))
    summary = ", ".join(f"{len(rows)} × {category}" for category, rows in ordered)
    lines = []
    for category, rows in ordered:
        first = f", the first {SHOWN_PER_REASON}" if len(rows) > SHOWN_PER_REASON else ""
        lines.append(f"  {category} ({len(rows)} row(s){first}):")
        lines += [f"    {p}" for p in rows[:SHOWN_PER_REASON]]
    if len(lines) < len(groups) + len(problems):
        summary += "; " + _write_list(problems, folder, name)
    return summary, lines


def _enforce(
    spec: ManifestSpec,
    problems: list[Problem],
    total: int,
    what: str,
    report: tuple[str | Path | None, str],
    kept: int,
    skipped: int = 0,
) -> set[int]:
    """Apply ``on_bad_rows`` to ``problems`` among ``total`` rows: raise, or log them; return the CSV rows to drop.

    One problem is one line; several are a line of counts by reason, then the first rows of each (see
    :func:`_describe`; ``report``: the folder and the file name of the full list). With ``skip``, the rows
    dropped so far (``skipped`` by earlier reports of the same cohort, and these) must stay within
    ``max_skipped_fraction`` of the ``kept`` rows (those ``group_map`` keeps).
    """
    problems = sorted(problems, key=lambda p: p.row)
    skip = spec.on_bad_rows == "skip"
    summary, lines = _describe(problems, *report)
    if skip and skipped + len(problems) > spec.max_skipped_fraction * kept:
        dropped = skipped + len(problems)
        earlier = f", {skipped} of them by an earlier check" if skipped else ""
        needed = math.ceil(100 * dropped / kept) / 100
        raise ManifestError(
            "\n".join(
                [
                    f"{spec.csv_file}: on_bad_rows: skip would drop {dropped} of {kept} rows "
                    f"({dropped / kept:.0%}{earlier}), more than data.manifest.max_skipped_fraction "
                    f"{spec.max_skipped_fraction:g} allows (fix the data, or set it to {needed:g} to train on the "
                    f"rest): {summary}",
                    *lines,
                ]
            )
        )
    action = "skipped, on_bad_rows: skip" if skip else "set on_bad_rows: skip to train without them"
    if len(problems) == 1:
        text = f"{spec.csv_file}: {summary} ({action})"
    else:
        text = "\n".join([f"{spec.csv_file}: {len(problems)} of {total} {what} ({action}): {summary}", *lines])
    if not skip:
        raise ManifestError(text)
    log.warning(text)
    return {p.row for p in problems}


def build_manifest(
    spec: ManifestSpec, report_dir: str | Path | None = None, labeller: Labeller | None = None
) -> pd.DataFrame:
    """Read, join and validate; return the manifest or raise :class:`ManifestError` (policy ``error``).

    ``report_dir``: where a report too long to show every bad row lists them all (:data:`BAD_ROWS_CSV`).
    ``labeller``: the class of each row under a task other than the CSV's Group (``data.task``); its labels are per
    visit, so a subject's images may carry different classes: each keeps its own (``mixed_groups`` is the group
    task's) and the split stratifies by the subject's first image. The rows excluded, by reason, are the manifest's
    ``attrs["excluded"]``. A score task's labeller gives a float: ``label`` and ``target`` then hold the score (a float
    column, which is how :func:`~adni_lightning.data.split.split_subjects` knows to stratify by score).
    """
    table = _read_csv(spec)
    records: list[Record] = []
    problems: list[Problem] = []
    reasons: Counter[str] = Counter()
    for line, (_, row) in enumerate(table.iterrows(), start=2):  # the header is line 1; read_csv numbers rows 0…
        record, outcome = _check_row(spec, row, line, labeller)
        if isinstance(outcome, Problem):
            problems.append(outcome)
        elif record is None:
            reasons[str(outcome)] += 1
        else:
            records.append(record)
    excluded = sum(reasons.values())
    problems += _duplicate_problems(records)
    flagged = {p.row for p in problems}
    problems += [p for p in _sex_problems(records) if p.row not in flagged]
    if spec.check_files:
        flagged = {p.row for p in problems}
        problems += _file_problems([r for r in records if r["row"] not in flagged])
    if excluded and labeller is None:
        log.info("%s: %d row(s) excluded by group_map", spec.csv_file, excluded)
    elif excluded:
        counts = ", ".join(f"{n} × {reason}" for reason, n in reasons.most_common())
        log.info("%s: %d row(s) excluded by %s: %s", spec.csv_file, excluded, labeller, counts)
    kept = len(table) - excluded
    bad_rows: set[int] = set()
    if problems:
        report = (report_dir, BAD_ROWS_CSV)
        bad_rows = _enforce(spec, problems, len(table), "row(s) cannot be used", report, kept)
        records = [r for r in records if r["row"] not in bad_rows]
    if labeller is None:
        records = _resolve_mixed_groups(spec, records)
    if not records:
        raise ManifestError(f"{spec.csv_file}: no usable rows")
    manifest = pd.DataFrame.from_records(records, columns=list(MANIFEST_COLUMNS))
    manifest.attrs.update(kept_rows=kept, skipped_rows=len(bad_rows), excluded=dict(reasons.most_common()))
    return manifest


def exclude_images(
    manifest: pd.DataFrame, spec: ManifestSpec, reasons: Mapping[str, str], report_dir: str | Path | None = None
) -> pd.DataFrame:
    """The manifest less the images of ``reasons`` (image id → why), faults found after it was built.

    A file whose header is fine may still fail when its voxels are decoded (a corrupt gzip body, non-integer or
    unknown label values, no labelled voxel) or hold far less than the cohort's other label maps. Such faults are
    reported as the manifest's own, naming the CSV row, image, file and reason, all at once, and follow the same
    ``on_bad_rows``: ``error`` raises :class:`ManifestError`, ``skip`` logs them and drops exactly those images
    (within ``max_skipped_fraction``, counting the rows the manifest dropped). ``report_dir`` as for
    :func:`build_manifest` (:data:`BAD_IMAGES_CSV`).
    """
    bad = manifest[manifest["image_id"].isin(set(reasons))]
    if bad.empty:
        return manifest
    problems = [
        Problem(int(row), image_id, path, reasons[image_id])
        for row, image_id, path in zip(bad["row"], bad["image_id"], bad["path"])
    ]
    kept_rows = manifest.attrs.get("kept_rows", len(manifest))
    skipped = manifest.attrs.get("skipped_rows", 0)
    report = (report_dir, BAD_IMAGES_CSV)
    bad_rows = _enforce(spec, problems, len(manifest), "image files cannot be used", report, kept_rows, skipped)
    kept = manifest[~manifest["row"].isin(bad_rows)].reset_index(drop=True)
    if kept.empty:
        raise ManifestError(f"{spec.csv_file}: no usable rows")
    excluded = manifest.attrs.get("excluded", {})
    kept.attrs.update(kept_rows=kept_rows, skipped_rows=skipped + len(bad_rows), excluded=excluded)
    return kept


def _resolve_mixed_groups(spec: ManifestSpec, records: list[Record]) -> list[Record]:
    """Report subjects whose rows carry different classes and apply ``spec.mixed_groups`` to them."""
    rows: dict[str, dict[ClassName | float, list[int]]] = {}
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
