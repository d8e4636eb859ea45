"""Does the embedded default generalise, and can its probabilities be trusted: cv next to a shifted site.

``python benchmarks/external_cohort.py [--root runs/external] [--folds 5]``

1. ``cv`` of ``configs/synthetic.yaml`` (the embedded default; finished folds are skipped on a re-run): pooled
   out-of-fold metrics with subject-bootstrap CIs, ECE and Brier before and after the cross-fitted temperature,
   and ``calibration.json`` (one temperature fitted on all out-of-fold predictions).
2. ``evaluate`` of the folds' ensemble (``fold_*/checkpoints/last.ckpt``) on the shifted synthetic site
   (``configs/synthetic_shifted.yaml``: other people, 6 years younger, heads 5 % larger, a thicker cortex label,
   three small labels missing; the same disease truth), generated on first use, with that temperature.

Prints one markdown table (figures as the reports give them) and the wall time of each step.
"""

from __future__ import annotations

import argparse
import subprocess
import sys
import time
from pathlib import Path

import pandas as pd
from cv_ablation import _interval

from adni_lightning.data.manifest import ADNI1_GROUPS
from adni_lightning.evaluation.metrics import bootstrap_ci, subject_level
from adni_lightning.evaluation.report import SCALED, UNSCALED

REPO = Path(__file__).resolve().parents[1]
CONFIGS = REPO / "configs"


def run(command: list[str]) -> float:
    """Run one ``python -m adni_lightning`` command; its wall time in seconds."""
    start = time.perf_counter()
    subprocess.run([sys.executable, "-m", "adni_lightning", *command], check=True)
    return time.perf_counter() - start


def _calibration(table: pd.DataFrame, metric: str, **where: str) -> float:
    rows = table
    for key, value in where.items():
        rows = rows[rows[key] == value]
    return float(rows[rows["metric"] == metric]["estimate"].iloc[0])


def cv_row(root: Path, resamples: int) -> dict[str, str]:
    """The pooled out-of-fold figures of the CNN, as the cv report computes them."""
    oof = pd.read_csv(root / "oof_predictions.csv", dtype={"image_id": str, "subject": str})
    oof = oof[oof["model"] == "cnn"]
    image = bootstrap_ci(oof, ADNI1_GROUPS, n_resamples=resamples)
    subject = bootstrap_ci(subject_level(oof, ADNI1_GROUPS), ADNI1_GROUPS, n_resamples=resamples)
    calibration = pd.read_csv(root / "cv_calibration.csv")
    before = {m: _calibration(calibration, m, model="cnn", scaling=UNSCALED) for m in ("ece", "brier")}
    after = {m: _calibration(calibration, m, model="cnn", scaling=SCALED) for m in ("ece", "brier")}
    return {
        "cohort": f"embedded default, {oof['fold'].nunique()}-fold cv (out-of-fold)",
        "images / subjects": f"{len(oof)} / {oof['subject'].nunique()}",
        "bacc [95% CI]": _interval(image, "cnn", "bacc"),
        "AUROC [95% CI]": _interval(image, "cnn", "auroc"),
        "subject bacc [95% CI]": _interval(subject, "cnn", "bacc"),
        "ECE before → after": f"{before['ece']:.3f} → {after['ece']:.3f} (cross-fitted T)",
        "Brier before → after": f"{before['brier']:.3f} → {after['brier']:.3f}",
    }


def external_row(root: Path) -> dict[str, str]:
    """The fold ensemble's figures on the shifted site, from ``evaluate_metrics.csv``."""
    metrics = pd.read_csv(root / "evaluate_metrics.csv")
    predictions = pd.read_csv(root / "predictions.csv", dtype={"image_id": str, "subject": str})

    def interval(level: str, metric: str) -> str:
        row = metrics[(metrics["level"] == level) & (metrics["metric"] == metric)].iloc[0]
        return f"{row['estimate']:.3f} [{row['ci_low']:.3f}, {row['ci_high']:.3f}]"

    def value(metric: str) -> float:
        return float(metrics[(metrics["level"] == "image") & (metrics["metric"] == metric)]["estimate"].iloc[0])

    return {
        "cohort": "shifted site (`synthetic_shifted.yaml`), ensemble of the folds",
        "images / subjects": f"{len(predictions)} / {predictions['subject'].nunique()}",
        "bacc [95% CI]": interval("image", "bacc"),
        "AUROC [95% CI]": interval("image", "auroc"),
        "subject bacc [95% CI]": interval("subject", "bacc"),
        "ECE before → after": f"{value('ece'):.3f} → {value('ece_scaled'):.3f} (T = {value('temperature'):.3f})",
        "Brier before → after": f"{value('brier'):.3f} → {value('brier_scaled'):.3f}",
    }


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--root", type=Path, default=Path("runs/external"), help="cv and evaluate write here")
    parser.add_argument("--folds", type=int, default=5, help="folds of the cross-validation")
    parser.add_argument("--bootstrap", type=int, default=2000, help="resamples over subjects")
    args = parser.parse_args()
    root = args.root.resolve()
    cv_root, evaluate_root = root / "cv", root / "shifted"
    quiet = ["--trainer.enable_progress_bar", "false"]
    cv_seconds = run(
        ["cv", "--folds", str(args.folds), "--root", str(cv_root), "--trainer.default_root_dir", str(root / "run")]
        + ["--bootstrap", str(args.bootstrap), *quiet]
    )
    evaluate_seconds = run(
        ["evaluate", "--config", str(CONFIGS / "synthetic.yaml"), "--config", str(CONFIGS / "synthetic_shifted.yaml")]
        + ["--ckpt_path", str(cv_root / "fold_*" / "checkpoints" / "last.ckpt")]
        + ["--calibration", str(cv_root / "calibration.json"), "--root", str(evaluate_root)]
        + ["--bootstrap", str(args.bootstrap), *quiet]
    )
    table = pd.DataFrame([cv_row(cv_root, args.bootstrap), external_row(evaluate_root)])
    table.to_csv(root / "external.csv", index=False)
    lines = [" | ".join(table.columns), " | ".join("---" for _ in table.columns)]
    lines += [" | ".join(str(v) for v in row) for row in table.itertuples(index=False)]
    print("\n".join(f"| {line} |" for line in lines))
    print(f"wall time: cv {cv_seconds / 60:.1f} min (finished folds skipped), evaluate {evaluate_seconds / 60:.1f} min")


if __name__ == "__main__":
    main()
