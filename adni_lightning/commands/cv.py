"""Subject-grouped k-fold cross-validation: one normal run per fold, a same-fold volume baseline, one report.

``python -m adni_lightning cv [--config FILE] [--folds 5] [--root DIR] [--fold K | --report_only] [--no_baseline]
[overrides]``

Each fold is an ordinary ``fit`` run in ``DIR/fold_K`` (checkpoints, TensorBoard, split.csv), so the folds
overlay in TensorBoard and resume like any run. The held-out fold is the run's validation side, which is
only *watched*: its out-of-fold predictions come from the **last epoch's** checkpoint, no checkpoint is
chosen by validation score, and schedules or callbacks that react to validation metrics are refused, so
the held-out fold never chooses anything. Finished folds are skipped, an interrupted one resumes from its
``last.ckpt``, and the report covers whatever folds are complete, naming the others. ``--report_only`` never
trains: it writes the report of the folds that exist (the last step of a SLURM array of ``--fold K`` jobs).

Files shared by the folds (``split.csv``/``split.json``, ``cv_config.yaml``, the report) are written whole under a
temporary name and renamed; the split and the configuration are created once and compared by every later process,
so concurrent ``--fold K`` processes on one ``--root`` never leave a cut or mixed file.
"""

from __future__ import annotations

import logging
import shutil
from collections.abc import Sequence
from dataclasses import replace
from pathlib import Path

import pandas as pd
import yaml

from adni_lightning.arguments import CommandParser
from adni_lightning.atomic import output_dir, write_once, write_text
from adni_lightning.checkpoint import RunFinishedError
from adni_lightning.commands.baseline import write_baseline
from adni_lightning.commands.run_config import config_args, load_run, split_run_options
from adni_lightning.data.split import check_fold_count, split_subjects
from adni_lightning.data.volumes import regional_volumes
from adni_lightning.errors import ProjectError
from adni_lightning.evaluation.baseline import first_visit_flags
from adni_lightning.evaluation.metrics import bootstrap_ci, frame_metrics, prob_columns
from adni_lightning.evaluation.report import mark_missing, write_cv_report
from adni_lightning.main import ADNILightningCLI
from adni_lightning.main import main as run_main

log = logging.getLogger(__name__)

PROG = "python -m adni_lightning cv"
OOF_FILE = "oof_predictions.csv"
TEST_FILE = "test_predictions.csv"
CONFIG_FILE = "cv_config.yaml"
CHECKPOINT_NOTE = (
    "Out-of-fold predictions come from each fold's last-epoch checkpoint; the held-out fold chose no checkpoint, "
    "no early stop and no learning-rate step."
)


class CrossValidationError(ProjectError, ValueError):
    """The cross-validation cannot run as asked (too many folds, a folder of another configuration, a leak)."""


def parser() -> CommandParser:
    """The command's own options; ``--data.*``/``--model.*``/``--trainer.*`` go to the fold runs."""
    p = CommandParser(prog=PROG, description=__doc__.splitlines()[0])
    p.add_argument(
        "--config", type=str, action="append", help="run config, as for fit; repeat to stack (default: synthetic.yaml)"
    )
    p.add_argument("--folds", type=int, default=5, help="number of folds (subject-level, stratified by group)")
    p.add_argument(
        "--root", type=Path | None, default=None, help="output folder (default: <trainer.default_root_dir>/cv)"
    )
    p.add_argument("--fold", type=int | None, default=None, help="run only this fold, then report what is complete")
    p.add_argument(
        "--report_only",
        type=bool,
        default=False,
        help="train nothing: write the report of the folds that have finished (after a SLURM array of --fold K)",
    )
    p.add_argument("--no_baseline", type=bool, default=False, help="skip the regional-volume logistic regression")
    p.add_argument("--bootstrap", type=int, default=2000, help="bootstrap resamples (over subjects) for the CIs")
    p.add_argument(
        "--repeats", type=int, default=1, help="repeat the whole CV with split seeds seed, seed+1, ... (repeat_R/)"
    )
    return p


def main(argv: list[str]) -> None:
    """Parse ``argv`` and run the cross-validation."""
    own, overrides = split_run_options(argv)
    args = parser().parse_args(own)
    run_cv(
        args.config,
        overrides,
        args.folds,
        args.root,
        args.fold,
        not args.no_baseline,
        args.bootstrap,
        args.repeats,
        args.report_only,
    )


def _check_no_validation_choice(cli: ADNILightningCLI) -> None:
    """Refuse a configuration in which the held-out fold would steer training."""
    scheduler = cli.config.get("model.lr_scheduler")
    if scheduler is not None and "ReduceLROnPlateau" in str(scheduler.get("class_path", "")):
        raise CrossValidationError(
            "cv: ReduceLROnPlateau steps on validation metrics, i.e. on the held-out fold; use a fixed schedule"
        )
    steering = [type(c).__name__ for c in cli.trainer.callbacks if type(c).__name__ == "EarlyStopping"]
    if steering:
        raise CrossValidationError("cv: EarlyStopping would stop on the held-out fold's metrics; remove it")


def _config_record(cli: ADNILightningCLI, folds: int, overrides: list[str]) -> dict:
    """What must be equal for two invocations to add folds to the same cross-validation."""
    config = yaml.safe_load(cli.parser.dump(cli.config, skip_check=True))
    config.get("trainer", {}).pop("default_root_dir", None)
    return {"folds": folds, "config": config}


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
    if not report_only and write_once(path, yaml.safe_dump(record, sort_keys=True).encode(), "--root"):
        return
    saved = yaml.safe_load(path.read_text())
    if saved != record:
        differing = sorted(_differences(saved, record))
        raise CrossValidationError(
            f"cv: {root} holds folds run with another configuration ({', '.join(differing[:6])} differ); "
            "use another --root, or delete it"
        )


def _differences(a: object, b: object, prefix: str = "") -> list[str]:
    if isinstance(a, dict) and isinstance(b, dict):
        return [d for k in sorted(set(a) | set(b), key=str) for d in _differences(a.get(k), b.get(k), f"{prefix}{k}.")]
    return [] if a == b else [prefix.rstrip(".")]


def _fold_args(configs: list[Path] | None, overrides: list[str], fold_dir: Path, folds: int, fold: int) -> list[str]:
    return [
        *config_args(configs),
        *overrides,
        "--trainer.default_root_dir",
        str(fold_dir),
        "--data.split.folds",
        str(folds),
        "--data.split.fold",
        str(fold),
        "--data.split.file",
        str(fold_dir / "split.csv"),
        "--checkpoint.save_top_k",
        "0",  # no checkpoint is chosen by the held-out fold's score
    ]


def _run_fold(
    configs: list[Path] | None, overrides: list[str], fold_dir: Path, folds: int, fold: int, test: bool
) -> None:
    """Train (or resume) one fold, then write its out-of-fold (and test) predictions from the last epoch."""
    args = _fold_args(configs, overrides, fold_dir, folds, fold)
    last = fold_dir / "checkpoints" / "last.ckpt"
    if last.exists():
        log.info("cv: fold %d resumes from %s", fold, last)
    try:
        run_main(["fit", *args, *(["--ckpt_path", "last"] if last.exists() else [])])
    except RunFinishedError:  # trained to the end, stopped before its predictions were written
        log.info("cv: fold %d has finished training; writing its predictions", fold)
    sides = [("val", OOF_FILE)] + ([("test", TEST_FILE)] if test else [])
    for side, name in sides:
        run_main(
            [
                "predict",
                *args,
                "--ckpt_path",
                str(last),
                "--data.predict_split",
                side,
                "--trainer.logger",
                "false",
                "--trainer.default_root_dir",
                str(fold_dir / f"predict_{side}"),
            ]
        )
        shutil.move(fold_dir / f"predict_{side}" / "predictions.csv", fold_dir / f".{name}")
        shutil.rmtree(fold_dir / f"predict_{side}")
    for _, name in reversed(sides):  # the OOF file last: its presence marks the fold as finished
        (fold_dir / f".{name}").replace(fold_dir / name)


def run_cv(
    configs: list[Path] | None,
    overrides: list[str],
    folds: int = 5,
    root: Path | None = None,
    only_fold: int | None = None,
    baseline: bool = True,
    n_resamples: int = 2000,
    repeats: int = 1,
    report_only: bool = False,
) -> Path:
    """Run (or continue) the cross-validation and write its report; returns the report's folder. With
    ``report_only`` nothing is trained: the report covers the folds that have finished.

    With ``repeats`` > 1 the whole cross-validation is repeated with split seeds ``seed``, ``seed + 1``, … in
    ``root/repeat_R`` (a report each), and ``root/repeats.csv`` gives each repeat's pooled figures and their
    mean and sd: how much the estimate moves with the fold assignment alone.
    """
    if folds < 2:
        raise CrossValidationError(f"cv: --folds must be at least 2, got {folds}")
    if only_fold is not None and not 0 <= only_fold < folds:
        raise CrossValidationError(f"cv: --fold {only_fold} is not in [0, {folds})")
    if repeats < 1:
        raise CrossValidationError(f"cv: --repeats must be at least 1, got {repeats}")
    if report_only and only_fold is not None:
        raise CrossValidationError(
            f"cv: --report_only trains nothing, so --fold {only_fold} has no meaning: pass one of them"
        )
    cli = load_run(configs, overrides)
    root = output_dir(Path(root) if root else Path(cli.trainer.default_root_dir) / "cv", "--root")
    if repeats == 1:
        return _run_once(cli, configs, overrides, folds, root, only_fold, baseline, n_resamples, report_only)
    seed = cli.datamodule.split_spec.seed
    for repeat in range(repeats):
        seeded = [*overrides, "--data.split.seed", str(seed + repeat)]
        again = load_run(configs, seeded)
        _run_once(
            again, configs, seeded, folds, root / f"repeat_{repeat}", only_fold, baseline, n_resamples, report_only
        )
    return _summarise_repeats(root, repeats)


def _summarise_repeats(root: Path, repeats: int) -> Path:
    rows = []
    for repeat in range(repeats):
        metrics = pd.read_csv(root / f"repeat_{repeat}" / "cv_metrics.csv")
        means = metrics[metrics["fold"].astype(str) == "mean"]
        rows += [{"repeat": repeat, **row} for row in means.drop(columns=["fold", "note"]).to_dict("records")]
    table = pd.DataFrame(rows)
    numeric = table.columns.drop(["repeat", "model"])
    summary = table.groupby("model")[numeric].agg(["mean", "std"])
    summary.columns = [f"{metric}_{stat}" for metric, stat in summary.columns]
    write_text(root / "repeats.csv", table.to_csv(index=False, float_format="%.4f"), "--root")
    write_text(root / "repeats_summary.csv", summary.to_csv(float_format="%.4f"), "--root")
    print(f"cv: {repeats} repeats summarised in {root / 'repeats_summary.csv'}")
    return root


def _run_once(
    cli: ADNILightningCLI,
    configs: list[Path] | None,
    overrides: list[str],
    folds: int,
    root: Path,
    only_fold: int | None,
    baseline: bool,
    n_resamples: int,
    report_only: bool = False,
) -> Path:
    """One cross-validation in ``root``: folds (skipping finished ones; none with ``report_only``), baseline,
    report.
    """
    _check_no_validation_choice(cli)
    dm = cli.datamodule
    dm.split_spec = replace(dm.split_spec, folds=folds, fold=0, file=str(root / "split.csv"))
    if report_only and not Path(dm.split_spec.file).is_file():
        raise _nothing_ran(Path(dm.split_spec.file), root)
    dm.prepare_cohort()
    manifest = dm.manifest()
    split = split_subjects(manifest, dm.split_spec)
    check_fold_count(split, folds, dm.classes)
    _check_same_config(root, _config_record(cli, folds, overrides), report_only)
    dm.prepare_data()  # the CV split (fold 0 as validation) beside the folds, and the cache
    manifest = dm.manifest()  # less the files the cache could not decode (on_bad_rows: skip)
    has_test = (split["split"] == "test").any()
    for fold in [] if report_only else range(folds) if only_fold is None else [only_fold]:
        fold_dir = root / f"fold_{fold}"
        if (fold_dir / OOF_FILE).exists():
            log.info("cv: fold %d is finished (%s), skipped", fold, fold_dir / OOF_FILE)
            continue
        _run_fold(configs, overrides, fold_dir, folds, fold, has_test)
    return report(root, manifest, split, dm.classes, folds, baseline, n_resamples, dm)


def report(
    root: Path,
    manifest: pd.DataFrame,
    split: pd.DataFrame,
    classes: list[str],
    folds: int,
    baseline: bool,
    n_resamples: int,
    dm,
) -> Path:
    """Merge the finished folds (and the baseline on the same folds) into ``cv_metrics.csv`` and the report, with the
    CNN's calibration and the temperature that ``predict --calibration`` applies (fitted on the finished folds).
    """
    frames, missing = [], []
    for fold in range(folds):
        path = root / f"fold_{fold}" / OOF_FILE
        if not path.exists():
            missing.append(fold)
            continue
        frames.append(
            pd.read_csv(path, dtype={"image_id": str, "subject": str}).assign(fold=fold, model="cnn", set="oof")
        )
        test_path = root / f"fold_{fold}" / TEST_FILE
        if test_path.exists():
            frames.append(
                pd.read_csv(test_path, dtype={"image_id": str, "subject": str}).assign(
                    fold=fold, model="cnn", set="test"
                )
            )
    if not frames:
        raise CrossValidationError(f"cv: no finished fold in {root}")
    predictions = pd.concat(frames, ignore_index=True)
    if baseline:
        predictions = pd.concat([predictions, _baseline(root, manifest, split, classes, dm)], ignore_index=True)
    predictions = predictions.drop(columns=["visit", "first_visit", "predicted", "split"], errors="ignore")
    visits = manifest[["image_id", "subject", "visit"]].assign(first_visit=first_visit_flags(manifest))
    predictions = predictions.merge(visits.drop(columns="subject"), on="image_id", how="left", validate="many_to_one")
    done = sorted(set(range(folds)) - set(missing))
    oof = predictions[(predictions["set"] == "oof") & predictions["fold"].isin(done)]
    notes = [CHECKPOINT_NOTE]
    if baseline:
        notes.append("baseline: logistic regression on ICV-normalised regional volumes + age + sex, same folds.")
    paths = write_cv_report(
        root,
        oof.drop(columns=["set"]),
        classes,
        reference_model="baseline" if baseline else None,
        missing_folds=missing,
        notes=notes,
        n_resamples=n_resamples,
        scaled_model="cnn",
    )
    test = predictions[predictions["set"] == "test"]
    if len(test):
        _test_report(root, test, classes, n_resamples, missing)
    print(f"cv: temperature for predict --calibration in {paths['temperature']}")
    print(f"cv: report in {root / 'cv_report.md'}" + (f" (folds {missing} not finished)" if missing else ""))
    return root


def _baseline(root: Path, manifest: pd.DataFrame, split: pd.DataFrame, classes: list[str], dm) -> pd.DataFrame:
    return write_baseline(root, regional_volumes(manifest, dm.cache), split, classes, dm.split_spec.seed)


def _test_report(root: Path, test: pd.DataFrame, classes: list[str], n_resamples: int, missing: Sequence[int]) -> None:
    """The held-out test split: every fold model alone, and their averaged probabilities (the ensemble); missing
    folds are marked as in ``cv_metrics.csv``.
    """
    columns = prob_columns(classes)
    keys = ["image_id", "subject", "group", "visit", "first_visit"]
    rows = []
    for model, frame in test.groupby("model"):
        ensemble = frame.groupby(keys, as_index=False)[columns].mean().assign(model=f"{model}-ensemble")
        ci = bootstrap_ci(ensemble, classes, n_resamples=n_resamples)
        intervals = ci.set_index("metric")
        rows.append(
            {
                "model": f"{model}-ensemble",
                "fold": "all",
                **frame_metrics(ensemble, classes),
                **{
                    f"{m}_ci": f"[{intervals.at[m, 'ci_low']:.3f}, {intervals.at[m, 'ci_high']:.3f}]"
                    for m in ("bacc", "auroc")
                },
            }
        )
        for fold, part in frame.groupby("fold"):
            rows.append({"model": model, "fold": fold, **frame_metrics(part, classes)})
    table = mark_missing(pd.DataFrame(rows), missing)
    write_text(root / "test_metrics.csv", table.to_csv(index=False, float_format="%.4f"), "--root")
