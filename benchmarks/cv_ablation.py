"""Cross-validated ablation of the embedded default: which model earns its place, with CIs over subjects.

``python benchmarks/cv_ablation.py [--root runs/ablation] [--cohort embedded|second] [--folds 5] [--variants ...]``

Runs ``python -m adni_lightning cv`` (5 folds, same split seed, so the same folds) for each variant of
``configs/synthetic.yaml`` and prints, from each variant's out-of-fold predictions, the pooled balanced accuracy and
AUROC with 95 % CIs from a bootstrap over subjects, the subject-level balanced accuracy, the paired difference to
the regional-volume baseline on the same folds, the same for the mean of the CNN's and the baseline's probabilities
(the report's ``cnn+baseline`` row), and the variant's wall time. Finished folds are skipped on a re-run (the wall
time then covers only what ran).

Variants: the CNN with age and sex only; with age, sex and ICV-normalised volumes (``configs/volumes.yaml``,
concatenation fusion); the same with wide-and-deep fusion (``model.fusion wide_deep``), with partial-volume
(occupancy) input channels, and with both; age and sex with the random affine augmentation; twice as wide.
``--cohort second`` stacks ``benchmarks/ablation/second_cohort.yaml``: another synthetic cohort (other people,
image count and signal strength) that played no part in choosing the default.
"""

from __future__ import annotations

import argparse
import subprocess
import sys
import time
from pathlib import Path

import pandas as pd

from adni_lightning.data.manifest import ADNI1_GROUPS
from adni_lightning.evaluation.metrics import bootstrap_ci, paired_difference, subject_level

REPO = Path(__file__).resolve().parents[1]
ABLATION = REPO / "benchmarks" / "ablation"
VOLUMES = REPO / "configs" / "volumes.yaml"
#: Variant → (configs stacked on configs/synthetic.yaml, overrides). Each names its covariates and fusion
#: explicitly, so a change of the embedded default does not change what a variant means.
VARIANTS: dict[str, tuple[list[Path], list[str]]] = {
    "age_sex": ([], ["--data.tabular.volumes", "[]", "--model.fusion", "concat"]),
    "volumes": ([VOLUMES], ["--model.fusion", "concat"]),
    "wide_deep": ([VOLUMES], ["--model.fusion", "wide_deep"]),
    "occupancy": ([VOLUMES, ABLATION / "occupancy.yaml"], ["--model.fusion", "concat"]),
    "wide_deep_occupancy": ([VOLUMES, ABLATION / "occupancy.yaml"], ["--model.fusion", "wide_deep"]),
    "affine": ([ABLATION / "affine.yaml"], ["--data.tabular.volumes", "[]", "--model.fusion", "concat"]),
    "wide": ([ABLATION / "wide.yaml"], ["--data.tabular.volumes", "[]", "--model.fusion", "concat"]),
}
#: Cohort → configs stacked right after configs/synthetic.yaml.
COHORTS: dict[str, list[Path]] = {"embedded": [], "second": [ABLATION / "second_cohort.yaml"]}


def run_variant(name: str, cohort: str, root: Path, folds: int) -> float:
    """Run (or finish) one variant's cross-validation; return its wall time in seconds."""
    extra, overrides = VARIANTS[name]
    configs = [REPO / "configs" / "synthetic.yaml", *COHORTS[cohort], *extra]
    command = [sys.executable, "-m", "adni_lightning", "cv", "--folds", str(folds), "--root", str(root / name)]
    command += [arg for config in configs for arg in ("--config", str(config))] + overrides
    command += ["--trainer.enable_progress_bar", "false", "--trainer.default_root_dir", str(root / f"{name}_run")]
    start = time.perf_counter()
    subprocess.run(command, check=True)
    return time.perf_counter() - start


def _interval(ci: pd.DataFrame, metric: str, signed: bool = False) -> str:
    row = ci[ci["metric"] == metric].iloc[0]
    number = "{:+.3f}" if signed else "{:.3f}"
    return f"{number.format(row['estimate'])} [{number.format(row['ci_low'])}, {number.format(row['ci_high'])}]"


def summarise(name: str, root: Path, seconds: float, resamples: int) -> list[dict[str, str]]:
    """One row per model of the variant's report: the CNN, the CNN + baseline mean and the baseline."""
    oof = pd.read_csv(root / name / "oof_predictions.csv", dtype={"image_id": str, "subject": str})
    labels = {"cnn": f"CNN: {name}", "cnn+baseline": f"CNN: {name} + baseline (mean)", "baseline": "baseline"}
    rows = []
    for model, label in labels.items():
        part = oof[oof["model"] == model]
        image = bootstrap_ci(part, ADNI1_GROUPS, n_resamples=resamples)
        subject = bootstrap_ci(subject_level(part, ADNI1_GROUPS), ADNI1_GROUPS, n_resamples=resamples)
        row = {
            "model": label,
            "OOF bacc [95% CI]": _interval(image, "bacc"),
            "OOF AUROC [95% CI]": _interval(image, "auroc"),
            "subject bacc [95% CI]": _interval(subject, "bacc"),
            "− baseline, bacc": "",
            "− baseline, AUROC": "",
            "wall time": f"{seconds / 60:.1f} min" if model == "cnn" else "",
        }
        if model != "baseline":
            difference = paired_difference(oof, model, "baseline", ADNI1_GROUPS, n_resamples=resamples)
            row["− baseline, bacc"] = _interval(difference, "bacc", signed=True)
            row["− baseline, AUROC"] = _interval(difference, "auroc", signed=True)
        rows.append(row)
    return rows


def main() -> None:
    """Run the variants one after the other (never side by side: 2 cores) and print the table."""
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--root", type=Path, default=Path("runs/ablation"), help="one cv folder per variant")
    parser.add_argument("--cohort", choices=list(COHORTS), default="embedded", help="the synthetic cohort")
    parser.add_argument("--folds", type=int, default=5, help="folds per cross-validation")
    parser.add_argument("--variants", nargs="+", choices=list(VARIANTS), default=list(VARIANTS))
    parser.add_argument("--bootstrap", type=int, default=2000, help="resamples over subjects")
    args = parser.parse_args()
    rows = []
    for name in args.variants:
        seconds = run_variant(name, args.cohort, args.root.resolve(), args.folds)
        rows += summarise(name, args.root.resolve(), seconds, args.bootstrap)
        print(f"{name}: {seconds / 60:.1f} min", flush=True)
    table = pd.DataFrame(rows).drop_duplicates(subset=["model"])  # the baseline is the same on every variant
    table.to_csv(args.root / "ablation.csv", index=False)
    lines = [" | ".join(table.columns), " | ".join("---" for _ in table.columns)]
    lines += [" | ".join(str(v) for v in row) for row in table.itertuples(index=False)]
    print("\n".join(f"| {line} |" for line in lines))


if __name__ == "__main__":
    main()
