"""A longitudinal clinical table beside the image CSV, and the task that labels each image from it.

The IDA CSV's ``Group`` is the diagnosis at enrolment; the field's other questions need the diagnosis at each visit
(AD vs CN at the scan) or the visits after it (stable vs progressive MCI). Those come from a table in the ADNIMERGE
layout, one row per subject visit (``data.clinical``: :class:`ClinicalSpec`). The task (``data.task``:
:class:`TaskSpec`) says how an image gets its class: the CSV's Group (the default, as before), a clinical column at
the image's visit through a class map, or progression; or, for a regression, its score: a numeric clinical column at
the image's visit (MMSE, CDR-SB) or the image CSV's age (brain age).

Progression labels are derived per clinical visit from the subject's whole history (:func:`progression_labels`),
before any image is joined, kept or split: dropping images or drawing another split cannot change a label (ClinicaDL
issue 406 derived them after restricting the visits and got them wrong). An image then takes the label of the visit
it joins (:func:`normalise_visit`, or the nearest exam date). Images that join no visit are bad rows of the image
CSV, reported as any other; images the task leaves out (not MCI at this visit, too short a follow-up, ...) are
exclusions, counted by reason as ``group_map``'s are. A bad clinical row (an unknown diagnosis, a date that is not
one) stops the run naming its row: a label derived from a history with a row silently missing would be wrong.
"""

from __future__ import annotations

import logging
import math
import re
from collections.abc import Sequence
from dataclasses import dataclass, field
from datetime import datetime
from pathlib import Path
from typing import Literal, cast

import pandas as pd

from adni_lightning.data.manifest import Labeller, ManifestError, ManifestSpec, Problem
from adni_lightning.errors import OptionError
from adni_lightning.vocabulary import ClassName

log = logging.getLogger(__name__)

#: ADNIMERGE's diagnoses → the classes the tasks reason with.
ADNIMERGE_DIAGNOSES: dict[str, str | None] = {"CN": "CN", "MCI": "MCI", "Dementia": "AD"}

#: Visit codes of the first visit: IDA's screening scans (``sc``, ``scmri``) belong to the baseline visit.
BASELINE_CODES = frozenset({"bl", "sc", "scmri", "init", "screening", "baseline", "v01", "m00", "m0"})

_MONTH_CODE = re.compile(r"^m0*(\d+)$")
_DATE_FORMATS = ("%Y-%m-%d", "%m/%d/%Y")

TaskLabel = Literal["group", "column", "progression", "score"]
Reverters = Literal["exclude", "smci"]
Join = Literal["visit", "date"]

#: Reasons an image is left out by a task (:class:`TaskLabels`); the counts go to the log and ``inspect``'s report.
NO_CLINICAL_ROW = "no clinical row"
NO_DIAGNOSIS = "no diagnosis at this visit"
NOT_MCI = "not MCI at this visit"
SHORT_FOLLOW_UP = "insufficient follow-up"
REVERTER = "reverter"
NOT_STABLE = "not stable within the horizon"

#: The score of ``data.task.column`` that the image CSV holds (the age at the scan: brain age), not the clinical table.
AGE_SCORE = "Age"


class ClinicalError(ManifestError):
    """The clinical table cannot be read or holds a row the task cannot use; the message names the file and row."""


def normalise_visit(code: object) -> str | None:
    """ADNI visit code → ``bl`` or ``mNN`` (``sc``/``scmri``/``init`` → ``bl``, ``m6``/``m06`` → ``m06``), or
    ``None`` for a code that names no month (``nv``, ``uns1``, a bare visit number).
    """
    text = str(code).strip().lower()
    if text in BASELINE_CODES:
        return "bl"
    match = _MONTH_CODE.match(text)
    if match is None:
        return None
    months = int(match.group(1))
    return "bl" if months == 0 else f"m{months:02d}"


def visit_months(visit: str) -> int:
    """Months after baseline of a :func:`normalise_visit` code."""
    return 0 if visit == "bl" else int(visit[1:])


def parse_date(text: object) -> datetime | None:
    """ADNIMERGE's ``2006-09-14`` or IDA's ``9/14/2006``; ``None`` for anything else."""
    for form in _DATE_FORMATS:
        try:
            return datetime.strptime(str(text).strip(), form)
        except ValueError:
            continue
    return None


@dataclass(frozen=True)
class ClinicalSpec:
    """The clinical table in the ADNIMERGE layout and how images join it (the ``data.clinical`` config group).

    Args:
        file: the table (one row per subject visit); relative paths are read from ``data.manifest.data_dir``.
            Default none: no table, and only the ``group`` task.
        subject_column: the subject id, as the image CSV's ``Subject`` (``002_S_0295``).
        visit_column: the ADNI visit code (``bl``, ``m06``, ...; see :func:`normalise_visit`).
        date_column: the exam date (``2006-09-14`` or ``9/14/2006``); read only with ``join: date``.
        diagnosis_column: the diagnosis at the visit; empty cells are visits without one.
        diagnosis_map: its values → ``CN``, ``MCI``, ``AD`` (the classes progression reasons with), or null to read
            a value as no diagnosis; any other value is a bad clinical row.
        join: ``visit``: an image joins its subject's row of the same normalised visit code (the image CSV's
            ``Visit``); ``date``: the subject's row with the nearest exam date to the image's ``Acq Date``.
        date_window_days: with ``join: date``, the farthest an exam may lie from the scan.
    """

    file: str | Path | None = None
    subject_column: str = "PTID"
    visit_column: str = "VISCODE"
    date_column: str = "EXAMDATE"
    diagnosis_column: str = "DX"
    diagnosis_map: dict[str, str | None] = field(default_factory=lambda: dict(ADNIMERGE_DIAGNOSES))
    join: Join = "visit"
    date_window_days: int = 90

    def __post_init__(self) -> None:
        if self.date_window_days < 0:
            raise OptionError(f"data.clinical.date_window_days must be 0 or more, got {self.date_window_days}")
        unknown = sorted({str(v) for v in self.diagnosis_map.values() if v is not None} - {"CN", "MCI", "AD"})
        if unknown:
            raise OptionError(
                f"data.clinical.diagnosis_map maps onto {unknown}: its values must be CN, MCI, AD or null"
            )

    def path(self, manifest: ManifestSpec) -> Path | None:
        """The table's file, a relative one read from the image CSV's folder (``data.manifest.data_dir``)."""
        if self.file is None:
            return None
        path = Path(self.file)
        return path if path.is_absolute() else manifest.root / path


@dataclass(frozen=True)
class TaskSpec:
    """What class an image is (the ``data.task`` config group). The file of an image is found by its CSV Group
    whatever the task (``{group}`` of ``data.manifest.filename_pattern``).

    Args:
        label: ``group``: the image CSV's Group through ``data.manifest.group_map`` (no clinical table needed);
            ``column``: the clinical ``column`` at the image's visit through ``class_map``; ``progression``: at an
            MCI visit, ``pMCI`` if the subject is AD at a later visit within ``horizon_months``, ``sMCI`` if followed
            for at least ``horizon_months`` without AD within them (see :func:`progression_labels`); ``score``: a
            regression of the number in ``column`` at the image's visit (an empty or non-numeric cell excludes the
            image, counted by reason); ``column: Age`` is the image CSV's age (brain age: no clinical table needed,
            and age is then no input of the numeric branch).
        column: with ``label: column`` or ``score``, the clinical column read (the diagnosis column is read through
            ``data.clinical.diagnosis_map``: ``CN``, ``MCI``, ``AD``).
        class_map: with ``label: column``, a value → its class, or null to exclude it (reported); a value neither
            mapped nor a class is a bad row.
        horizon_months: progression's horizon.
        reverters: progression at an MCI visit followed by CN within the horizon (and no AD in it): ``exclude``
            (reason ``reverter``) or ``smci`` (sMCI when followed long enough, as any stable MCI).
        stable: progression also labels ``sCN`` (CN followed for the horizon, never MCI or AD in it) and ``sAD``
            (AD followed for the horizon, never CN or MCI in it); images of those classes are kept only when
            ``data.manifest.classes`` lists them.
    """

    label: TaskLabel = "group"
    column: str | None = None
    class_map: dict[str, str | None] = field(default_factory=dict)
    horizon_months: int = 36
    reverters: Reverters = "exclude"
    stable: bool = False

    def __post_init__(self) -> None:
        if self.label == "column" and not self.column:
            raise OptionError("data.task.label column needs data.task.column: the clinical column that gives the class")
        if self.label == "score" and not self.column:
            raise OptionError(
                "data.task.label score needs data.task.column: the clinical column of the score (e.g. MMSE, CDRSB), or "
                f"{AGE_SCORE} for brain age"
            )
        if self.horizon_months < 1:
            raise OptionError(f"data.task.horizon_months must be at least 1, got {self.horizon_months}")

    @property
    def regression(self) -> bool:
        """Whether the task predicts a number (``score``) rather than a class."""
        return self.label == "score"

    @property
    def predicts_age(self) -> bool:
        """Brain age: the target is the image CSV's age, which must then not be an input."""
        return self.regression and self.column == AGE_SCORE

    @property
    def needs_table(self) -> bool:
        """Whether the labels come from the clinical table (every task but the CSV's Group and brain age)."""
        return self.label != "group" and not self.predicts_age

    def contract(self) -> str:
        """The task in a checkpoint's data contract: what decides the labels, in one comparable line."""
        if self.regression:
            return f"score {self.column}"
        if self.label == "column":
            return f"column {self.column} (class_map {dict(self.class_map)})"
        if self.label == "progression":
            return (
                f"progression (horizon_months {self.horizon_months}, reverters {self.reverters}, "
                f"stable {str(self.stable).lower()})"
            )
        return "group"


#: The contract of the default task: checkpoints that predate the task in the contract were trained for it.
GROUP_TASK = TaskSpec().contract()


def check_task(clinical: ClinicalSpec, task: TaskSpec) -> None:
    """Refuse a task that needs the clinical table when none is configured (at build, before any file is read)."""
    if task.needs_table and clinical.file is None:
        raise OptionError(
            f"data.task.label {task.label} needs a clinical table: set data.clinical.file (e.g. ADNIMERGE.csv, "
            "beside the image CSV)"
        )


def _clinical_problem(path: Path, line: int, what: str, fix: str) -> ClinicalError:
    return ClinicalError(f"{path}: row {line}: {what} ({fix})")


def read_clinical(spec: ClinicalSpec, path: Path, extra: Sequence[str] = ()) -> pd.DataFrame:
    """The table as ``subject``, ``visit`` (normalised), ``months``, ``row`` (its file's line), ``diagnosis``
    (``CN``/``MCI``/``AD`` or missing), ``date`` (with ``join: date``) and the ``extra`` columns as read.

    Raises :class:`ClinicalError` at the first bad row: an unknown diagnosis, a visit code that names no month, an
    exam date that is not a date, a subject's visit on two rows.
    """
    if not path.is_file():
        raise ClinicalError(
            f"clinical table not found: {path} (data.clinical.file; relative to data.manifest.data_dir)"
        )
    try:
        table = pd.read_csv(path, dtype=str, keep_default_na=False)
    except (pd.errors.ParserError, pd.errors.EmptyDataError, UnicodeDecodeError) as err:
        raise ClinicalError(f"{path}: not a readable CSV ({err})") from err
    needed = [spec.subject_column, spec.visit_column, spec.diagnosis_column, *extra]
    if spec.join == "date":
        needed.append(spec.date_column)
    missing = [c for c in dict.fromkeys(needed) if c not in table.columns]
    if missing:
        raise ClinicalError(
            f"{path}: missing column(s) {', '.join(missing)} (the data.clinical.*_column or data.task.column options "
            f"name them); found {', '.join(table.columns)}"
        )
    rows: list[dict[str, object]] = []
    seen: dict[tuple[str, str], int] = {}
    for line, (_, row) in enumerate(table.iterrows(), start=2):
        subject, code = row[spec.subject_column].strip(), row[spec.visit_column]
        visit = normalise_visit(code)
        if visit is None:
            raise _clinical_problem(path, line, f"visit code {code!r} names no month", "expected bl, sc, m06, m12, …")
        value = row[spec.diagnosis_column].strip()
        if value and value not in spec.diagnosis_map:
            raise _clinical_problem(
                path,
                line,
                f"diagnosis {value!r} is not one of {list(spec.diagnosis_map)}",
                "map it with data.clinical.diagnosis_map",
            )
        if (subject, visit) in seen:
            raise _clinical_problem(
                path, line, f"subject {subject} visit {visit} is also on row {seen[subject, visit]}", "keep one row"
            )
        seen[subject, visit] = line
        record = {
            "subject": subject,
            "visit": visit,
            "months": visit_months(visit),
            "row": line,
            "diagnosis": spec.diagnosis_map.get(value) if value else None,
            **{column: row[column] for column in extra if column != spec.diagnosis_column},
        }
        if spec.join == "date":
            record["date"] = parse_date(row[spec.date_column])
            if record["date"] is None:
                raise _clinical_problem(
                    path,
                    line,
                    f"exam date {row[spec.date_column]!r} is not a date",
                    "expected 2006-09-14 or 9/14/2006",
                )
        rows.append(record)
    return pd.DataFrame(rows, columns=["subject", "visit", "months", "row", "diagnosis", *extra, "date"])


def _progression(
    months: int, diagnosis: str | None, later: list[tuple[int, str]], task: TaskSpec
) -> tuple[str | None, str | None]:
    """(class, None) or (None, reason) of one visit, from the visits after it that have a diagnosis."""
    horizon = task.horizon_months
    if diagnosis is None:
        return None, NO_DIAGNOSIS
    within = {d for m, d in later if m - months <= horizon}
    followed = any(m - months >= horizon for m, _ in later)
    if diagnosis == "MCI":
        if "AD" in within:
            return "pMCI", None
        if "CN" in within and task.reverters == "exclude":
            return None, REVERTER
        return ("sMCI", None) if followed else (None, SHORT_FOLLOW_UP)
    if not task.stable:
        return None, NOT_MCI
    if within - {diagnosis}:
        return None, NOT_STABLE
    return (f"s{diagnosis}", None) if followed else (None, SHORT_FOLLOW_UP)


def progression_labels(history: pd.DataFrame, task: TaskSpec) -> pd.DataFrame:
    """``history`` (:func:`read_clinical`: the whole table) plus ``label`` and ``reason``, one per visit.

    At an MCI visit at month t: ``pMCI`` if the subject is AD at a visit in (t, t + horizon]; else ``reverter``
    (excluded, unless ``reverters: smci``) if CN at a visit in that window; else ``sMCI`` if some later visit with a
    diagnosis is at t + horizon or after (a subject converting after the horizon is sMCI); else ``insufficient
    follow-up``. A single visit is never followed long enough. Only visits with a diagnosis count.
    """
    ordered = history.sort_values(["subject", "months"], kind="stable")
    labels, reasons = {}, {}
    for _, visits in ordered.groupby("subject", sort=False):
        known = [(int(m), str(d)) for m, d in zip(visits["months"], visits["diagnosis"]) if isinstance(d, str)]
        for index, months, diagnosis in zip(visits.index, visits["months"], visits["diagnosis"]):
            later = [(m, d) for m, d in known if m > months]
            known_diagnosis = diagnosis if isinstance(diagnosis, str) else None
            labels[index], reasons[index] = _progression(int(months), known_diagnosis, later, task)
    return history.assign(label=pd.Series(labels), reason=pd.Series(reasons))


class TaskLabels:
    """The class of each image row under a task other than ``group``: called by
    :func:`~adni_lightning.data.manifest.build_manifest` once per CSV row, after the row's own checks.

    Labels are derived once, on the whole clinical table, when this is built.
    """

    def __init__(self, clinical: ClinicalSpec, task: TaskSpec, manifest: ManifestSpec) -> None:
        check_task(clinical, task)
        path = clinical.path(manifest)
        assert path is not None  # check_task
        self.clinical, self.task, self.path = clinical, task, path
        self.classes = tuple(manifest.classes)
        column = task.column if task.label in ("column", "score") else None
        extra = [column] if column and column != clinical.diagnosis_column else []
        history = read_clinical(clinical, path, extra)
        if task.label == "progression":
            history = progression_labels(history, task)
        else:
            labels, reasons = self._score_labels(history) if task.regression else self._column_labels(history)
            history = history.assign(
                label=pd.Series(labels, index=history.index, dtype=object),
                reason=pd.Series(reasons, index=history.index, dtype=object),
            )
        self.history = history
        self._by_visit = {(s, v): i for i, s, v in zip(history.index, history["subject"], history["visit"])}
        self._by_subject = {s: rows.index for s, rows in history.groupby("subject")}

    def _column_labels(self, history: pd.DataFrame) -> tuple[list[str | None], list[str | None]]:
        """Each visit's class by ``task.column`` and ``task.class_map``, or the reason it has none."""
        column = str(self.task.column)
        values = history["diagnosis"] if column == self.clinical.diagnosis_column else history[column]
        labels: list[str | None] = []
        reasons: list[str | None] = []
        for value in values:
            value = value.strip() if isinstance(value, str) else None
            if not value:
                labels.append(None)
                reasons.append(f"no {column} at this visit")
            elif value in self.task.class_map and self.task.class_map[value] is None:
                labels.append(None)
                reasons.append(f"{column} {value} excluded by data.task.class_map")
            else:
                labels.append(self.task.class_map.get(value, value))
                reasons.append(None)
        return labels, reasons

    def _score_labels(self, history: pd.DataFrame) -> tuple[list[float | None], list[str | None]]:
        """Each visit's score in ``task.column``, or the reason it has none (empty, or not a finite number)."""
        column = str(self.task.column)
        scores: list[float | None] = []
        reasons: list[str | None] = []
        for value in history[column]:
            text = value.strip() if isinstance(value, str) else ""
            score = pd.to_numeric(text, errors="coerce") if text else None
            if not text:
                scores.append(None)
                reasons.append(f"no {column} at this visit")
            elif score is None or not math.isfinite(score):
                scores.append(None)
                reasons.append(f"{column} not a number at this visit")
            else:
                scores.append(float(score))
                reasons.append(None)
        return scores, reasons

    def __str__(self) -> str:
        """The task as the manifest's log line of exclusions names it."""
        return f"data.task {self.task.contract()}"

    def _join(self, row: pd.Series, line: int, image_id: str) -> tuple[int | None, Problem | None]:
        """The index of the clinical row an image row joins, or why none."""
        subject = row["Subject"]
        if subject not in self._by_subject:
            return None, Problem(line, image_id, "", f"subject {subject} has no row in {self.path}", NO_CLINICAL_ROW)
        if self.clinical.join == "visit":
            code = row.get("Visit", "")
            visit = normalise_visit(code)
            if visit is None:
                reason = f"visit {code!r} names no month (join by exam date: data.clinical.join date)"
                return None, Problem(line, image_id, "", reason, "visit code names no month")
            found = self._by_visit.get((subject, visit))
            if found is None:
                reason = f"subject {subject} has no visit {visit} in {self.path}"
                return None, Problem(line, image_id, "", reason, NO_CLINICAL_ROW)
            return found, None
        scanned = parse_date(row.get("Acq Date", ""))
        if scanned is None:
            reason = f"Acq Date {row.get('Acq Date', '')!r} is not a date (M/D/YYYY), so it joins no exam"
            return None, Problem(line, image_id, "", reason, "Acq Date not a date")
        rows = self._by_subject[subject]
        gaps = (self.history.loc[rows, "date"] - scanned).abs()
        nearest = gaps.idxmin()
        window = self.clinical.date_window_days
        if gaps[nearest].days > window:
            reason = (
                f"no exam of subject {subject} within {window} days of {scanned:%Y-%m-%d} in {self.path} (the "
                f"nearest is {gaps[nearest].days} days away; data.clinical.date_window_days)"
            )
            return None, Problem(line, image_id, "", reason, NO_CLINICAL_ROW)
        return int(nearest), None

    def __call__(
        self, row: pd.Series, line: int, image_id: str
    ) -> tuple[ClassName | float | None, Problem | str | None]:
        """(class or score, None) for a kept row; (None, Problem) for a row that joins no clinical row (a bad row);
        (None, reason) for a row the task excludes; the class of a column task not among the classes is a bad row.
        """
        index, problem = self._join(row, line, image_id)
        if problem is not None:
            return None, problem
        label, reason = self.history.at[index, "label"], self.history.at[index, "reason"]
        if self.task.regression:
            return (None, str(reason)) if reason is not None else (float(cast(float, label)), None)
        if not isinstance(label, str):
            return None, str(reason)
        if label not in self.classes:
            if self.task.label == "progression":
                return None, f"{label} not among data.manifest.classes"
            return None, Problem(
                line,
                image_id,
                "",
                f"{self.task.column} {label!r} is not one of the classes {list(self.classes)} (map it with "
                "data.task.class_map)",
                "class not among the classes",
            )
        return ClassName(label), None


def age_score(row: pd.Series, line: int, image_id: str) -> tuple[float, None]:
    """Brain age's labeller: the image CSV's age at the scan (already checked a number in ``data.manifest.age_range``
    by the row's own checks, which run first).
    """
    return float(row["Age"]), None


def task_labels(clinical: ClinicalSpec, task: TaskSpec, manifest: ManifestSpec) -> TaskLabels | Labeller | None:
    """The labeller of a task other than ``group`` (reads the clinical table; brain age reads the image CSV's age), or
    ``None`` for ``group``.
    """
    if task.label == "group":
        return None
    return age_score if task.predicts_age else TaskLabels(clinical, task, manifest)
