"""The packaged tasks cross-validated on the embedded synthetic cohort and its clinical table: label counts (the
score's distribution for a regression), exclusions by reason, pooled out-of-fold figures of the CNN, the baseline and
their mean (95 % CIs over subjects), the paired difference to the baseline and the wall time.

``python benchmarks/tasks.py [--root runs/tasks] [--folds 5] [--tasks ad_vs_cn smci_vs_pmci mmse]``

Each task runs ``python -m adni_lightning cv --config configs/synthetic.yaml --config configs/tasks/TASK.yaml``
from the folder it is started in (its ``data/synthetic`` holds the embedded cohort, which writes its own
``ADNIMERGE.csv`` the first time a task asks for it); tasks run one after the other, never side by side.
"""

from __future__ import annotations

import argparse
import subprocess
import sys
import time
from pathlib import Path

import pandas as pd

from adni_lightning.evaluation.metrics import REGRESSION, bootstrap_ci, is_regression, paired_difference
from adni_lightning.run import Run

REPO = Path(__file__).resolve().parents[1]
TASKS = ("ad_vs_cn", "smci_vs_pmci", "mmse")


def _configs(task: str) -> list[str]:
    return [str(REPO / "configs" / "synthetic.yaml"), str(REPO / "configs" / "tasks" / f"{task}.yaml")]


def labels(task: str) -> str:
    """Images and subjects per class, and the images the task excludes, by reason."""
    run = Run(_configs(task))
    manifest = run.cohort()
    if run.datamodule.task.regression:
        score = manifest["label"].astype(float)
        classes = (
            f"{len(manifest)} images / {manifest['subject'].nunique()} subjects, {run.datamodule.task.column} "
            f"{score.mean():.1f} ± {score.std():.1f} (range {score.min():g}–{score.max():g})"
        )
    else:
        counts = manifest.groupby("label").agg(images=("image_id", "size"), subjects=("subject", "nunique"))
        classes = ", ".join(f"{c} {r.images} images / {r.subjects} subjects" for c, r in counts.iterrows())
    excluded = ", ".join(f"{n} {reason}" for reason, n in manifest.attrs.get("excluded", {}).items())
    return f"{classes}; excluded: {excluded or 'none'}"


def run_cv(task: str, root: Path, folds: int) -> float:
    command = [sys.executable, "-m", "adni_lightning", "cv", "--folds", str(folds), "--root", str(root / task)]
    command += [arg for config in _configs(task) for arg in ("--config", config)]
    command += ["--trainer.enable_progress_bar", "false", "--trainer.default_root_dir", str(root / f"{task}_run")]
    start = time.perf_counter()
    subprocess.run(command, check=True)
    return time.perf_counter() - start


def _interval(table: pd.DataFrame, metric: str, signed: bool = False) -> str:
    row = table[table["metric"] == metric].iloc[0]
    number = "{:+.3f}" if signed else "{:.3f}"
    low, high = number.format(row["ci_low"]), number.format(row["ci_high"])
    return f"{number.format(row['estimate'])} [{low}, {high}]"


def summarise(task: str, root: Path, resamples: int) -> list[str]:
    oof = pd.read_csv(root / task / "oof_predictions.csv", dtype={"image_id": str, "subject": str})
    classes = Run(_configs(task)).datamodule.classes
    metrics = REGRESSION if is_regression(oof) else ("bacc", "auroc")
    lines = []
    for model in ("cnn", "baseline", "cnn+baseline"):
        ci = bootstrap_ci(oof[oof["model"] == model], classes, n_resamples=resamples)
        line = f"  {model:13s} " + ", ".join(f"{m} {_interval(ci, m)}" for m in metrics)
        if model != "baseline":
            diff = paired_difference(oof, model, "baseline", classes, metrics=metrics, n_resamples=resamples)
            line += "; − baseline: " + ", ".join(f"{m} {_interval(diff, m, True)}" for m in metrics)
        lines.append(line)
    return lines


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--root", type=Path, default=Path("runs/tasks"))
    parser.add_argument("--folds", type=int, default=5)
    parser.add_argument("--tasks", nargs="+", choices=TASKS, default=list(TASKS))
    parser.add_argument("--bootstrap", type=int, default=2000)
    args = parser.parse_args()
    root = args.root.resolve()
    for task in args.tasks:
        counts = labels(task)
        seconds = run_cv(task, root, args.folds)
        print(f"{task}: {counts}; {args.folds}-fold cv {seconds / 60:.1f} min", flush=True)
        print("\n".join(summarise(task, root, args.bootstrap)), flush=True)


if __name__ == "__main__":
    main()
