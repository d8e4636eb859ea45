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

from pathlib import Path

import pandas as pd

from adni_lightning.atomic import output_dir
from adni_lightning.checkpoint import adoption_lines, checkpoint_preprocessing, read_checkpoint
from adni_lightning.cli import checkpoint_paths
from adni_lightning.data.contract import SUMMARY_KEY, cohort_summary, contract_differences, data_contract
from adni_lightning.data.datamodule import ADNIDataModule
from adni_lightning.data.volumes import regional_volumes
from adni_lightning.ensemble import predict_ensemble
from adni_lightning.evaluation.baseline import first_visit_flags
from adni_lightning.evaluation.calibration import load_temperature
from adni_lightning.evaluation.external import EvaluationError, check_cohort_classes, write_evaluation
from adni_lightning.evaluation.report import fmt
from adni_lightning.module import DATA_STATE_KEY
from adni_lightning.run import Run


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


def _check_preprocessing(contracts: list[dict], checkpoints: list[str], dm: ADNIDataModule) -> None:
    """Refuse a cohort read otherwise than each checkpoint's training cohort after the first one's preprocessing is
    taken (other tabular features; an ensemble member of another preprocessing); the classes are checked apart.
    """
    for path, trained in zip(checkpoints, contracts):
        current = data_contract(trained["classes"], dm.preprocessing, dm.encoder, None, task=dm.task.contract())
        differences = contract_differences(trained, current)
        if differences:
            raise EvaluationError(
                f"the cohort would be read otherwise than {path} was trained on: {'; '.join(differences)}; pass the "
                "checkpoint's values (its training config) for these options"
            )


def evaluate(
    run: Run,
    ckpt_path: str,
    calibration: Path | None = None,
    root: Path | None = None,
    bootstrap: int = 2000,
) -> Path:
    """Check everything, predict the cohort, write the report; returns the report's path.

    Args:
        run: the configuration naming the cohort to evaluate (with its --data.* overrides).
        ckpt_path: a checkpoint, or a glob of several (e.g. 'cv/fold_*/checkpoints/last.ckpt', quoted): their mean.
        calibration: a temperature fitted on other predictions (cv's calibration.json), applied beside the raw
            figures.
        root: output folder (default: <trainer.default_root_dir>/evaluate).
        bootstrap: bootstrap resamples (over subjects) for the CIs.
    """
    task = run.datamodule.task
    if task.regression:
        raise EvaluationError(
            f"evaluate: data.task {task.contract()} is a regression, and the external-cohort report is of classes: "
            "score the cohort with predict --ckpt_path (its target and prediction columns)"
        )
    if bootstrap < 1:
        raise EvaluationError(f"--bootstrap {bootstrap}: the intervals need at least 1 resample")
    checkpoints = checkpoint_paths([ckpt_path])
    contracts = _contracts(checkpoints)
    classes = list(contracts[0]["classes"])
    temperature = load_temperature(calibration, classes) if calibration is not None else None
    adopted = checkpoint_preprocessing(run.datamodule.preprocessing, contracts[0])
    for line in adoption_lines(run.datamodule.preprocessing, adopted):  # the rule of every scoring command
        print(f"evaluate: {line}")
    if adopted:
        run = run.derive("fit", adopted)
    dm = run.datamodule
    _check_preprocessing(contracts, checkpoints, dm)
    check_cohort_classes(run.cohort()["label"], classes, dm.manifest_spec.csv_file, checkpoints[0])
    root = output_dir(root or run.root / "evaluate", "--root")
    options = {"ckpt_path": checkpoints[0], "data.predict_split": "all", "trainer.logger": False}
    if list(dm.classes) != classes:  # its labels are among the model's classes: read it with those, in their order
        options["data.manifest.classes"] = classes
    predicted = predict_ensemble(run.derive("predict", options), checkpoints, write=False)
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
        n_resamples=bootstrap,
    )
    _print_headline(table, frame, len(checkpoints), temperature, contracts[0].get(SUMMARY_KEY) is None, paths)
    return paths["report"]


def _print_headline(
    table: pd.DataFrame, frame: pd.DataFrame, members: int, temperature: float | None, no_summary: bool, paths: dict
) -> None:
    rows = {(row["level"], row["metric"]): row for row in table.to_dict("records")}

    def value(level: str, metric: str, column: str = "estimate") -> float:
        return float(rows[(level, metric)][column])

    def interval(level: str, metric: str) -> str:
        low, high = value(level, metric, "ci_low"), value(level, metric, "ci_high")
        return f"{fmt(value(level, metric))} [{fmt(low)}, {fmt(high)}]"

    source = "1 checkpoint" if members == 1 else f"the mean of {members} checkpoints"
    lines = [
        f"evaluate: {len(frame)} images of {frame['subject'].nunique()} subjects, scored by {source}",
        *(
            f"evaluate: {level} level: balanced accuracy {interval(level, 'bacc')}, "
            f"macro AUROC {interval(level, 'auroc')}"
            for level in ("image", "subject")
        ),
    ]
    calibration = f"ECE {value('image', 'ece'):.3f}, Brier {value('image', 'brier'):.3f}"
    if temperature is not None:
        calibration += (
            f"; after T = {temperature:.3f}: ECE {value('image', 'ece_scaled'):.3f}, "
            f"Brier {value('image', 'brier_scaled'):.3f}"
        )
    lines.append(f"evaluate: calibration: {calibration}")
    if no_summary:
        lines.append("evaluate: the checkpoint records no training-cohort summary: the report shows this cohort alone")
    lines.append(f"evaluate: report in {paths['report']} (metrics, predictions, reliability diagram beside it)")
    print("\n".join(lines))


COMMAND = evaluate
