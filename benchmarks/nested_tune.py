"""The nested search on the embedded synthetic cohort, with 1 worker and then 2 workers (threads split); prints
the wall times, the nested estimate beside the default configuration and the baseline on the same outer folds
(95 % CIs over subjects, paired differences) and each outer fold's choice.

``python benchmarks/nested_tune.py [--out runs/nested_tune] [--workers 1 2] [--trials 4] [--inner-folds 2]
[--outer-folds 3] [--epochs 15]``

Each worker count runs ``python -m adni_lightning tune --outer_folds K`` from scratch in its own folder on the
packaged config and search space (``configs/search/synthetic.yaml``); with N workers, worker i runs under
``taskset -c i`` with ``--threads`` = cores / N, so the workers never share a core. The cohort and its cache are
built before any clock starts. Every option that changes the figures is printed with them.
"""

from __future__ import annotations

import argparse
import os
import subprocess
import sys
import time
from pathlib import Path

import pandas as pd

from adni_lightning.data.manifest import ADNI1_GROUPS
from adni_lightning.evaluation.metrics import bootstrap_ci, paired_difference
from adni_lightning.run import Run

REPO = Path(__file__).resolve().parents[1]


def tune_command(root: Path, args: argparse.Namespace, threads: int) -> list[str]:
    return [
        sys.executable,
        "-m",
        "adni_lightning",
        "tune",
        "--root",
        str(root / "tune"),
        "--trials",
        str(args.trials),
        "--inner_folds",
        str(args.inner_folds),
        "--outer_folds",
        str(args.outer_folds),
        "--threads",
        str(threads),
        "--trainer.max_epochs",
        str(args.epochs),
        "--trainer.enable_progress_bar",
        "false",
        "--trainer.default_root_dir",
        str(root / "run"),
    ]


def run_workers(root: Path, args: argparse.Namespace, workers: int) -> float:
    """Start ``workers`` copies of the command, each on its own cores; wall seconds until the last one ends."""
    cores = sorted(os.sched_getaffinity(0))
    share = max(1, len(cores) // workers)
    root.mkdir(parents=True, exist_ok=True)
    start = time.perf_counter()
    processes = []
    for i in range(workers):
        mine = cores[i * share : (i + 1) * share] or cores[-1:]
        pin = ["taskset", "-c", ",".join(map(str, mine))]
        with open(root / f"worker_{i}.log", "w") as log:
            processes.append(subprocess.Popen([*pin, *tune_command(root, args, len(mine))], stdout=log, stderr=log))
    codes = [p.wait() for p in processes]
    seconds = time.perf_counter() - start
    if any(codes):
        raise SystemExit(f"a worker failed ({codes}); see {root}/worker_*.log")
    return seconds


def _interval(ci: pd.DataFrame, metric: str) -> str:
    row = ci[ci["metric"] == metric].iloc[0]
    return f"{row['estimate']:.3f} [{row['ci_low']:.3f}, {row['ci_high']:.3f}]"


def summarise(root: Path, resamples: int) -> None:
    oof = pd.read_csv(root / "tune" / "oof_predictions.csv", dtype={"image_id": str, "subject": str})
    for model in ("tuned", "default", "baseline", "tuned+baseline"):
        ci = bootstrap_ci(oof[oof["model"] == model], ADNI1_GROUPS, n_resamples=resamples)
        print(f"  {model:15s} balanced accuracy {_interval(ci, 'bacc')}   macro AUROC {_interval(ci, 'auroc')}")
    for reference in ("default", "baseline"):
        diff = paired_difference(oof, "tuned", reference, ADNI1_GROUPS, n_resamples=resamples)
        bacc, auroc = _interval(diff, "bacc"), _interval(diff, "auroc")
        print(f"  tuned − {reference:9s} Δ balanced accuracy {bacc}   Δ AUROC {auroc}")
    chosen = pd.read_csv(root / "tune" / "chosen.csv")
    print(chosen.to_string(index=False, float_format=lambda x: f"{x:.4g}"))


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--out", type=Path, default=REPO / "runs" / "nested_tune")
    parser.add_argument("--workers", type=int, nargs="+", default=[1, 2])
    parser.add_argument("--trials", type=int, default=4)
    parser.add_argument("--inner-folds", type=int, default=2)
    parser.add_argument("--outer-folds", type=int, default=3)
    parser.add_argument("--epochs", type=int, default=15)
    parser.add_argument("--bootstrap", type=int, default=2000)
    args = parser.parse_args()
    default = Run()
    default.cohort()
    default.datamodule.fill_cache()  # the cohort and its cache exist before any clock starts
    cores = len(os.sched_getaffinity(0))
    print(
        f"embedded synthetic config (200 subjects, 48³ inputs), {args.epochs} epochs, {args.trials} trials per "
        f"search (packaged space), {args.inner_folds} inner folds, {args.outer_folds} outer folds; {cores} cores"
    )
    for workers in args.workers:
        root = args.out / f"workers_{workers}"
        if (root / "tune").exists():
            raise SystemExit(f"{root / 'tune'} exists: the wall time must cover a whole search; pass another --out")
        seconds = run_workers(root, args, workers)
        print(f"{workers} worker(s), {max(1, cores // workers)} thread(s) each: {seconds / 60:.1f} min")
        summarise(root, args.bootstrap)


if __name__ == "__main__":
    main()
