"""Subject-grouped k-fold cross-validation: one normal run per fold, a same-fold volume baseline, one report.

``python -m adni_lightning cv [--config FILE] [--folds 5] [--root DIR] [--fold K | --report_only] [--no_baseline]
[overrides]``

The subject split is drawn once into ``DIR/split.csv`` (a ``fold`` column) and each fold run reads it by its index.
Each fold is an ordinary ``fit`` run in ``DIR/fold_K`` (checkpoints, TensorBoard), so the folds overlay in
TensorBoard and resume like any run. The held-out fold is the run's validation side, which is
only *watched*: its out-of-fold predictions come from the **last epoch's** checkpoint, no checkpoint is
chosen by validation score, and schedules or callbacks that react to validation metrics are refused, so
the held-out fold never chooses anything. Finished folds are skipped, an interrupted one resumes from its
``last.ckpt``, and the report covers whatever folds are complete, naming the others. Beside the CNN the report
scores the regional-volume baseline on the same folds and their mean (``cnn+baseline``), each with CIs and the
paired difference against the baseline. A score task (MMSE, CDR-SB, age: folds that predict a ``prediction``, no
``p_`` columns) is reported with regression metrics, a ridge baseline and no calibration. ``--report_only`` never
trains: it writes the report of the folds that exist (the last step of a SLURM array of ``--fold K`` jobs).

Files shared by the folds (``split.csv``/``split.json``, ``cv_config.yaml``, the report) are written whole under a
temporary name and renamed; the split and the configuration are created once and compared by every later process,
so concurrent ``--fold K`` processes on one ``--root`` never leave a cut or mixed file.
"""

from __future__ import annotations

import json
import logging
from collections.abc import Mapping, Sequence
from pathlib import Path

import pandas as pd
import torch
import yaml

from adni_lightning.atomic import output_dir, write_once, write_text
from adni_lightning.checkpoint import RunFinishedError
from adni_lightning.cli import trainer_callbacks
from adni_lightning.commands.baseline import write_baseline
from adni_lightning.data.datamodule import ADNIDataModule
from adni_lightning.data.split import cross_validation_split
from adni_lightning.data.volumes import regional_volumes
from adni_lightning.environment import FILENAME as ENVIRONMENT_FILE
from adni_lightning.errors import ProjectError
from adni_lightning.evaluation.baseline import describe, first_visit_flags
from adni_lightning.evaluation.metrics import (
    PREDICTION,
    REGRESSION,
    TRUTH,
    bootstrap_ci,
    frame_metrics,
    is_regression,
    prob_columns,
)
from adni_lightning.evaluation.report import mark_missing, write_cv_report
from adni_lightning.prediction_writer import PredictionWriter
from adni_lightning.run import Run
from adni_lightning.vocabulary import ClassName

log = logging.getLogger(__name__)

OOF_FILE = "oof_predictions.csv"
TEST_FILE = "test_predictions.csv"
CONFIG_FILE = "cv_config.yaml"
SPLIT_FILE = "split.csv"
#: The CNN and the baseline averaged: a third model in every report with the baseline.
ENSEMBLE = "cnn+baseline"
CHECKPOINT_NOTE = (
    "Out-of-fold predictions come from each fold's last-epoch checkpoint; the held-out fold chose no checkpoint, "
    "no early stop and no learning-rate step."
)


class CrossValidationError(ProjectError, ValueError):
    """The cross-validation cannot run as asked (too many folds, a folder of another configuration, a leak)."""


def check_no_validation_choice(run: Run) -> None:
    """Refuse a configuration in which the held-out fold would steer training."""
    scheduler = run.config.get("model.lr_scheduler")
    if scheduler is not None and "ReduceLROnPlateau" in str(scheduler.get("class_path", "")):
        raise CrossValidationError(
            "cv: ReduceLROnPlateau steps on validation metrics, i.e. on the held-out fold; use a fixed schedule"
        )
    steering = [type(c).__name__ for c in trainer_callbacks(run.trainer) if type(c).__name__ == "EarlyStopping"]
    if steering:
        raise CrossValidationError("cv: EarlyStopping would stop on the held-out fold's metrics; remove it")


def _config_record(run: Run, folds: int) -> dict:
    """What must be equal for two invocations to add folds to the same cross-validation."""
    return {"folds": folds, "config": run.configuration()}


def _nothing_ran(missing: Path, root: Path) -> CrossValidationError:
    """``--report_only`` in a folder where no fold has run (it would have left ``missing``)."""
    return CrossValidationError(
        f"cv --report_only: {missing} not found: no fold of a cross-validation has run in {root}; run its folds "
        "first (cv --fold K), or pass the --root they ran in"
    )


def _check_same_config(root: Path, record: dict, report_only: bool) -> None:
    """Save the configuration of the folds in ``root`` once (the first process to get there, concurrent ones
    included), and refuse a run of another one; ``report_only`` saves nothing and needs it saved.
    """
    path = root / CONFIG_FILE
    if report_only and not path.is_file():
        raise _nothing_ran(path, root)
    differing = record_differences(path, record, save=not report_only)
    if differing:
        raise CrossValidationError(
            f"cv: {root} holds folds run with another configuration ({', '.join(differing[:6])} differ); "
            "use another --root, or delete it"
        )


def record_differences(path: Path, record: dict, save: bool = True) -> list[str]:
    """The dotted keys in which the record saved at ``path`` differs from ``record``; with ``save``, ``record`` is
    saved there first unless one is (whole and once: of concurrent processes, the first to get there writes it).
    """
    if save and write_once(path, yaml.safe_dump(record, sort_keys=True).encode(), "--root"):
        return []
    return sorted(_differences(yaml.safe_load(path.read_text()), record))


def _differences(a: object, b: object, prefix: str = "") -> list[str]:
    if isinstance(a, dict) and isinstance(b, dict):
        return [d for k in sorted(set(a) | set(b), key=str) for d in _differences(a.get(k), b.get(k), f"{prefix}{k}.")]
    return [] if a == b else [prefix.rstrip(".")]


def _check_threads(root: Path, folds: int) -> None:
    """Say when this process trains with another number of torch threads than the folds that trained before it
    (their ``environment.json``): CPU kernels split their float sums by thread, so its folds cannot be bit-identical
    to theirs, nor to the same folds of a full cross-validation run with those threads.
    """
    threads = torch.get_num_threads()
    for fold in range(folds):
        record = root / f"fold_{fold}" / ENVIRONMENT_FILE
        theirs = json.loads(record.read_text()).get("torch", {}).get("threads") if record.is_file() else None
        if theirs is not None and theirs != threads:
            log.warning(
                "cv: this process trains with %d torch thread(s), fold %d trained with %d (%s): its weights will not "
                "be bit-identical to a run with %d; set OMP_NUM_THREADS=%d to match",
                threads,
                fold,
                theirs,
                record,
                theirs,
                theirs,
            )
            return


def run_fold(run: Run, root: Path, folds: int, fold: int, test: bool, split_file: Path | None = None) -> None:
    """Train (or resume) one fold in ``root/fold_K`` on the k-fold split ``split_file`` (``root/split.csv`` by
    default), then write its out-of-fold (and test) predictions from the last epoch.
    """
    fold_dir = root / f"fold_{fold}"
    options = {
        "trainer.default_root_dir": fold_dir,
        "data.split.folds": folds,
        "data.split.fold": fold,
        "data.split.file": split_file or root / SPLIT_FILE,
        "checkpoint.save_top_k": 0,  # no checkpoint is chosen by the held-out fold's score
    }
    fit = run.derive("fit", options)
    last = fit.last_checkpoint
    if last.exists():
        log.info("cv: fold %d resumes from %s", fold, last)
        fit = fit.derive("fit", {"ckpt_path": "last"})
    try:
        fit.execute()
    except RunFinishedError:  # trained to the end, stopped before its predictions were written
        log.info("cv: fold %d has finished training; writing its predictions", fold)
    sides = [("val", OOF_FILE)] + ([("test", TEST_FILE)] if test else [])
    for side, name in sides:
        writer = PredictionWriter(str(fold_dir / f".{name}"))
        predict = {"ckpt_path": last, "trainer.logger": False, "data.predict_split": side}
        fit.derive("predict", predict).execute([writer])
    for _, name in reversed(sides):  # the OOF file last: its presence marks the fold as finished
        for written in (Path(name), Path(name).with_name(f"{Path(name).stem}_by_subject.csv")):
            (fold_dir / f".{written}").replace(fold_dir / written)


def cross_validate(
    run: Run,
    folds: int = 5,
    root: Path | None = None,
    fold: int | None = None,
    report_only: bool = False,
    no_baseline: bool = False,
    bootstrap: int = 2000,
    repeats: int = 1,
) -> Path:
    """Run (or continue) the cross-validation and write its report; returns the report's folder.

    With ``repeats`` > 1 the whole cross-validation is repeated with split seeds ``seed``, ``seed + 1``, … in
    ``root/repeat_R`` (a report each), and ``root/repeats.csv`` gives each repeat's pooled figures and their
    mean and sd: how much the estimate moves with the fold assignment alone.

    Args:
        run: the configuration each fold trains.
        folds: number of folds (subject-level, stratified by group).
        root: output folder (default: <trainer.default_root_dir>/cv).
        fold: run only this fold, then report what is complete.
        report_only: train nothing: write the report of the folds that have finished (after a SLURM array of
            --fold K).
        no_baseline: skip the regional-volume baseline (logistic regression; ridge regression for a score task).
        bootstrap: bootstrap resamples (over subjects) for the CIs.
        repeats: repeat the whole CV with split seeds seed, seed+1, ... (repeat_R/).
    """
    if folds < 2:
        raise CrossValidationError(f"cv: --folds must be at least 2, got {folds}")
    if fold is not None and not 0 <= fold < folds:
        raise CrossValidationError(f"cv: --fold {fold} is not in [0, {folds})")
    if repeats < 1:
        raise CrossValidationError(f"cv: --repeats must be at least 1, got {repeats}")
    if bootstrap < 1:
        raise CrossValidationError(f"cv: --bootstrap must be at least 1 (resamples for the CIs), got {bootstrap}")
    if report_only and fold is not None:
        raise CrossValidationError(
            f"cv: --report_only trains nothing, so --fold {fold} has no meaning: pass one of them"
        )
    root = output_dir(Path(root) if root else run.root / "cv", "--root")
    if repeats == 1:
        return _run_once(run, folds, root, fold, not no_baseline, bootstrap, report_only)
    seed = run.datamodule.split_spec.seed
    for repeat in range(repeats):
        again = run.derive("fit", {"data.split.seed": seed + repeat})
        _run_once(again, folds, root / f"repeat_{repeat}", fold, not no_baseline, bootstrap, report_only)
    return _summarise_repeats(root, repeats)


def _summarise_repeats(root: Path, repeats: int) -> Path:
    rows = []
    for repeat in range(repeats):
        metrics = pd.read_csv(root / f"repeat_{repeat}" / "cv_metrics.csv")
        means = metrics[metrics["fold"].astype(str) == "mean"]
        rows += [{"repeat": repeat, **row} for row in means.drop(columns=["fold", "note"]).to_dict("records")]
    table = pd.DataFrame(rows)
    numeric = [column for column in table.columns if column not in ("repeat", "model")]
    summary = table.groupby("model")[numeric].agg(["mean", "std"])
    summary.columns = [f"{column[0]}_{column[1]}" for column in summary.columns]  # (metric, stat) pairs
    write_text(root / "repeats.csv", table.to_csv(index=False, float_format="%.4f"), "--root")
    write_text(root / "repeats_summary.csv", summary.to_csv(float_format="%.4f"), "--root")
    print(f"cv: {repeats} repeats summarised in {root / 'repeats_summary.csv'}")
    return root


def _run_once(
    run: Run,
    folds: int,
    root: Path,
    only_fold: int | None,
    baseline: bool,
    n_resamples: int,
    report_only: bool = False,
) -> Path:
    """One cross-validation in ``root``: the split drawn once, the folds (skipping finished ones; none with
    ``report_only``), the baseline, the report.
    """
    check_no_validation_choice(run)
    dm = run.datamodule
    path = root / SPLIT_FILE
    if report_only and not path.is_file():
        raise _nothing_ran(path, root)
    run.cohort()
    _check_same_config(root, _config_record(run, folds), report_only)
    split = cross_validation_split(dm.manifest(), dm.split_spec, folds, path, dm.classes)
    manifest = dm.fill_cache()  # less the files the cache could not decode (on_bad_rows: skip)
    if not report_only:
        _check_threads(root, folds)
    has_test = bool((split["split"] == "test").any())
    for fold in [] if report_only else range(folds) if only_fold is None else [only_fold]:
        if (root / f"fold_{fold}" / OOF_FILE).exists():
            log.info("cv: fold %d is finished (%s), skipped", fold, root / f"fold_{fold}" / OOF_FILE)
            continue
        run_fold(run, root, folds, fold, has_test)
    return report(root, manifest, split, dm.classes, folds, baseline, n_resamples, dm)


def report(
    root: Path,
    manifest: pd.DataFrame,
    split: pd.DataFrame,
    classes: Sequence[ClassName],
    folds: int,
    baseline: bool,
    n_resamples: int,
    dm: ADNIDataModule,
    arms: Mapping[str, Path] | None = None,
    references: Sequence[str] = (),
    notes: Sequence[str] = (CHECKPOINT_NOTE,),
) -> Path:
    """Merge the finished folds (and the baseline on the same folds) into ``cv_metrics.csv`` and the report, with the
    first model's calibration and the temperature that ``predict --calibration`` applies (fitted on the finished
    folds); folds that predict a score (``dm.task`` a score task) get the regression report, without calibration.

    ``arms`` names each trained model and the folder of its ``fold_K`` runs (default ``{"cnn": root}``); a fold
    counts as finished when every arm has finished it. The baseline, the mean of the first arm and the baseline,
    and ``references`` are the models the others are compared with, pair by pair.
    """
    arms = dict(arms or {"cnn": root})
    first = next(iter(arms))
    missing = [
        k for k in range(folds) if not all((folder / f"fold_{k}" / OOF_FILE).exists() for folder in arms.values())
    ]
    done = sorted(set(range(folds)) - set(missing))
    frames = [
        pd.read_csv(folder / f"fold_{fold}" / name, dtype={"image_id": str, "subject": str}).assign(
            fold=fold, model=model, set=side
        )
        for fold in done
        for model, folder in arms.items()
        for side, name in (("oof", OOF_FILE), ("test", TEST_FILE))
        if (folder / f"fold_{fold}" / name).exists()
    ]
    if not frames:
        raise CrossValidationError(f"cv: no finished fold in {root}")
    predictions = pd.concat(frames, ignore_index=True)
    if baseline:
        predictions = pd.concat([predictions, _baseline(root, manifest, split, classes, dm)], ignore_index=True)
    predictions = predictions.drop(columns=["visit", "first_visit", "predicted", "split"], errors="ignore")
    ensemble = ENSEMBLE if first == "cnn" else f"{first}+baseline"
    if baseline:
        predictions = pd.concat([predictions, members_mean(predictions, (first, "baseline"), ensemble)])
    visits = manifest[["image_id", "subject", "visit"]].assign(first_visit=first_visit_flags(manifest))
    predictions = predictions.merge(visits.drop(columns="subject"), on="image_id", how="left", validate="many_to_one")
    oof = predictions[(predictions["set"] == "oof") & predictions["fold"].isin(done)]
    notes = list(notes)
    task = dm.task
    if baseline:
        outputs = "predictions" if is_regression(predictions) else "probabilities"
        notes.append(describe(task))
        notes.append(
            f"{ensemble}: the mean of the `{first}` model's and the baseline's {outputs}, both fitted on each "
            "fold's training side; it chose nothing, so it is as honest as its members."
        )
    paths = write_cv_report(
        root,
        oof.drop(columns=["set"]),
        classes,
        reference_model="baseline" if baseline else None,
        missing_folds=missing,
        notes=notes,
        n_resamples=n_resamples,
        scaled_model=first,
        other_references=references,
        target=task.column or "score",
    )
    test = predictions[predictions["set"] == "test"]
    if len(test):
        _test_report(root, test, classes, n_resamples, missing)
    if "temperature" in paths:
        print(f"cv: temperature for predict --calibration in {paths['temperature']}")
    print(f"cv: report in {root / 'cv_report.md'}" + (f" (folds {missing} not finished)" if missing else ""))
    return root


def members_mean(predictions: pd.DataFrame, members: Sequence[str], name: str = ENSEMBLE) -> pd.DataFrame:
    """A model of its own, ``name``: per image, fold and set, the mean of ``members``' probabilities (of a regression
    frame: of their predictions, with the first member's target and group), for the images every member predicted.
    """
    part = predictions[predictions["model"].isin(members)]
    if is_regression(predictions):
        keys = ["image_id", "subject", "fold", "set"]
        values = {"group": "first", TRUTH: "first", PREDICTION: "mean"}
    else:
        keys = ["image_id", "subject", "group", "fold", "set"]
        values = {c: "mean" for c in predictions.columns if c.startswith("p_")}
    complete = part.groupby(keys)["model"].transform("nunique") == len(members)
    return part[complete].groupby(keys, as_index=False, sort=False).agg(values).assign(model=name)


def _baseline(
    root: Path, manifest: pd.DataFrame, split: pd.DataFrame, classes: Sequence[ClassName], dm: ADNIDataModule
) -> pd.DataFrame:
    volumes = regional_volumes(manifest, dm.cache)
    return write_baseline(root, volumes, split, classes, dm.split_spec.seed, dm.task)


def _test_report(
    root: Path, test: pd.DataFrame, classes: Sequence[ClassName], n_resamples: int, missing: Sequence[int]
) -> None:
    """The held-out test split: every fold model alone, and their averaged probabilities (the ensemble; of a
    regression frame: their averaged predictions); missing folds are marked as in ``cv_metrics.csv``.
    """
    regression = is_regression(test)
    columns = [PREDICTION] if regression else prob_columns(classes)
    keys = ["image_id", "subject", "group", "visit", "first_visit", *([TRUTH] if regression else [])]
    intervals_of = REGRESSION if regression else ("bacc", "auroc")
    rows: list[dict[str, object]] = []
    for model, frame in test.groupby("model"):
        ensemble = frame.groupby(keys, as_index=False)[columns].mean().assign(model=f"{model}-ensemble")
        ci = bootstrap_ci(ensemble, classes, n_resamples=n_resamples)
        intervals = {row["metric"]: row for row in ci.to_dict("records")}
        rows.append(
            {
                "model": f"{model}-ensemble",
                "fold": "all",
                **frame_metrics(ensemble, classes),
                **{f"{m}_ci": f"[{intervals[m]['ci_low']:.3f}, {intervals[m]['ci_high']:.3f}]" for m in intervals_of},
            }
        )
        for fold, part in frame.groupby("fold"):
            rows.append({"model": model, "fold": fold, **frame_metrics(part, classes)})
    table = mark_missing(pd.DataFrame(rows), missing)
    write_text(root / "test_metrics.csv", table.to_csv(index=False, float_format="%.4f"), "--root")


COMMAND = cross_validate
