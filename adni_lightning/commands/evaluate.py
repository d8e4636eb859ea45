"""Score a checkpoint (or the ensemble of a glob) on another labelled cohort: metrics, calibration, cohort shift, sites.

``python -m adni_lightning evaluate --config FILE [--data.* overrides naming the cohort] --ckpt_path FILE_OR_GLOB
[--calibration calibration.json] [--root DIR] [--bootstrap 2000]`` predicts every image of the cohort the config
(with its overrides) names, as ``predict`` does (a glob: each checkpoint with its own age and volume statistics,
probabilities averaged), and writes into ``DIR`` only: ``evaluate_report.md``, ``evaluate_metrics.csv``,
``predictions.csv`` and ``reliability.png`` (:mod:`adni_lightning.evaluation.external`). ``--calibration`` applies a
temperature fitted elsewhere (``cv``'s ``calibration.json``); nothing is ever fitted on the evaluated cohort.

Refused in one line before anything is written: a glob matching nothing, a damaged checkpoint, checkpoints of other
classes than each other, a calibration file for other classes, a cohort read with another preprocessing (or other
tabular features) than the checkpoint's, and a cohort holding a class the model does not predict.
"""

from __future__ import annotations

import json
import shutil
import tempfile
from pathlib import Path

import pandas as pd

from adni_lightning.arguments import CommandParser
from adni_lightning.atomic import output_dir
from adni_lightning.checkpoint import read_checkpoint
from adni_lightning.commands.inspect import parser as run_parser
from adni_lightning.commands.run_config import config_args, load_run, run_root, split_run_options
from adni_lightning.data.contract import SUMMARY_KEY, cohort_summary, contract_differences, data_contract
from adni_lightning.data.volumes import regional_volumes
from adni_lightning.evaluation.baseline import first_visit_flags
from adni_lightning.evaluation.calibration import load_temperature
from adni_lightning.evaluation.external import EvaluationError, check_cohort_classes, write_evaluation
from adni_lightning.evaluation.report import fmt
from adni_lightning.main import _checkpoint_paths
from adni_lightning.main import main as run_main
from adni_lightning.module import DATA_STATE_KEY

PROG = "python -m adni_lightning evaluate"


def parser() -> CommandParser:
    """The command's options; the run's own (``--data.*`` ...) are split off before parsing."""
    p = run_parser(PROG, __doc__)
    p.add_argument(
        "--ckpt_path",
        type=str,
        required=True,
        help="a checkpoint, or a glob of several (e.g. 'cv/fold_*/checkpoints/last.ckpt', quoted): their mean",
    )
    p.add_argument(
        "--calibration",
        type=Path | None,
        default=None,
        help="a temperature fitted on other predictions (cv's calibration.json), applied beside the raw figures",
    )
    p.add_argument(
        "--root", type=Path | None, default=None, help="output folder (default: <trainer.default_root_dir>/evaluate)"
    )
    p.add_argument("--bootstrap", type=int, default=2000, help="bootstrap resamples (over subjects) for the CIs")
    return p


def main(argv: list[str]) -> None:
    """Parse ``argv`` and evaluate."""
    own, overrides = split_run_options(argv)
    options = parser().parse_args(own)
    evaluate(options.config, overrides, options.ckpt_path, options.calibration, options.root, options.bootstrap)


def _contracts(checkpoints: list[str]) -> list[dict]:
    """Each checkpoint's data contract; refused when one has none or when they predict different classes."""
    contracts = []
    for path in checkpoints:
        state = read_checkpoint(path).get(DATA_STATE_KEY)
        if state is None:
            raise EvaluationError(
                f"{path} holds no data contract (no 'data' entry): it was not written by adni_lightning"
            )
        contracts.append(state)
    first = contracts[0]["classes"]
    for path, state in zip(checkpoints[1:], contracts[1:]):
        if state["classes"] != first:
            raise EvaluationError(
                f"--ckpt_path: {path} predicts classes {state['classes']}, {checkpoints[0]} {first}: an ensemble "
                "needs checkpoints of the same classes"
            )
    return contracts


def _check_preprocessing(contracts: list[dict], checkpoints: list[str], dm) -> None:
    """Refuse a cohort read otherwise than each checkpoint's training cohort (the classes are checked apart)."""
    for path, trained in zip(checkpoints, contracts):
        current = data_contract(trained["classes"], dm.preprocessing, dm.encoder, None)
        differences = contract_differences(trained, current)
        if differences:
            raise EvaluationError(
                f"the cohort would be read otherwise than {path} was trained on: {'; '.join(differences)}; pass the "
                "checkpoint's values (its training config) for these options"
            )


def _predict(configs: list[str] | None, overrides: list[str], checkpoints: list[str], scratch: Path) -> pd.DataFrame:
    """``predict`` over the whole cohort into ``scratch`` (several checkpoints: their mean), read back with each row
    divided by its sum (``predictions.csv`` rounds to 6 decimals; calibration measures need distributions).
    """
    args = [
        "predict",
        *config_args([Path(c) for c in configs] if configs else None),
        *overrides,
        "--data.predict_split",
        "all",
        "--trainer.logger",
        "false",
        "--trainer.default_root_dir",
        str(scratch),
    ]
    run_main([*args, *(arg for path in checkpoints for arg in ("--ckpt_path", path))])
    predicted = pd.read_csv(scratch / "predictions.csv", dtype={"image_id": str, "subject": str, "group": str})
    columns = [c for c in predicted.columns if c.startswith("p_")]
    predicted[columns] = predicted[columns].div(predicted[columns].sum(axis=1), axis=0)
    return predicted


def evaluate(
    configs: list[str] | None,
    overrides: list[str],
    ckpt_path: str,
    calibration: Path | None = None,
    root: Path | None = None,
    n_resamples: int = 2000,
) -> Path:
    """Check everything, predict the cohort, write the report; returns the report's path."""
    if n_resamples < 1:
        raise EvaluationError(f"--bootstrap {n_resamples}: the intervals need at least 1 resample")
    checkpoints = _checkpoint_paths(["--ckpt_path", ckpt_path])
    contracts = _contracts(checkpoints)
    classes = list(contracts[0]["classes"])
    temperature = load_temperature(calibration, classes) if calibration is not None else None
    cli = load_run([Path(c) for c in configs] if configs else None, overrides)
    dm = cli.datamodule
    _check_preprocessing(contracts, checkpoints, dm)
    dm.prepare_cohort()
    check_cohort_classes(dm.manifest()["label"], classes, dm.manifest_spec.csv_file, checkpoints[0])
    if list(dm.classes) != classes:  # its labels are among the model's classes: read it with those, in their order
        overrides = [*overrides, "--data.manifest.classes", json.dumps(classes)]
    root = output_dir(root or run_root(cli) / "evaluate", "--root")
    scratch = Path(tempfile.mkdtemp(prefix=".evaluate-", dir=root))
    try:
        predicted = _predict(configs, overrides, checkpoints, scratch)
    finally:
        shutil.rmtree(scratch, ignore_errors=True)
    manifest = dm.fill_cache()
    manifest = manifest[manifest["image_id"].isin(predicted["image_id"])].reset_index(drop=True)
    volumes = regional_volumes(manifest, dm.cache) if dm.preprocessing.labelmap else None
    visits = manifest[["image_id", "visit"]].assign(first_visit=first_visit_flags(manifest))
    keep = ["image_id", "subject", "group", *(c for c in predicted.columns if c.startswith("p_"))]
    frame = predicted[keep].merge(visits, on="image_id", how="left", validate="one_to_one")
    paths, table = write_evaluation(
        root,
        frame,
        classes,
        cohort_summary(manifest, classes, volumes),
        contracts[0].get(SUMMARY_KEY),
        temperature=temperature,
        calibration_file=calibration,
        checkpoints=checkpoints,
        n_resamples=n_resamples,
    )
    _print_headline(table, frame, len(checkpoints), temperature, contracts[0].get(SUMMARY_KEY) is None, paths)
    return paths["report"]


def _print_headline(
    table: pd.DataFrame, frame: pd.DataFrame, members: int, temperature: float | None, no_summary: bool, paths: dict
) -> None:
    rows = table.set_index(["level", "metric"])

    def interval(level: str, metric: str) -> str:
        row = rows.loc[(level, metric)]
        return f"{fmt(row['estimate'])} [{fmt(row['ci_low'])}, {fmt(row['ci_high'])}]"

    source = "1 checkpoint" if members == 1 else f"the mean of {members} checkpoints"
    lines = [
        f"evaluate: {len(frame)} images of {frame['subject'].nunique()} subjects, scored by {source}",
        *(
            f"evaluate: {level} level: balanced accuracy {interval(level, 'bacc')}, "
            f"macro AUROC {interval(level, 'auroc')}"
            for level in ("image", "subject")
        ),
    ]
    calibration = (
        f"ECE {rows.loc[('image', 'ece'), 'estimate']:.3f}, Brier {rows.loc[('image', 'brier'), 'estimate']:.3f}"
    )
    if temperature is not None:
        calibration += (
            f"; after T = {temperature:.3f}: ECE {rows.loc[('image', 'ece_scaled'), 'estimate']:.3f}, "
            f"Brier {rows.loc[('image', 'brier_scaled'), 'estimate']:.3f}"
        )
    lines.append(f"evaluate: calibration: {calibration}")
    if no_summary:
        lines.append("evaluate: the checkpoint records no training-cohort summary: the report shows this cohort alone")
    lines.append(f"evaluate: report in {paths['report']} (metrics, predictions, reliability diagram beside it)")
    print("\n".join(lines))
