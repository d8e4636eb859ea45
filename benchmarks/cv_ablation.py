"""Cross-validated ablation of the embedded default: which model earns its place, with CIs over subjects.

``python benchmarks/cv_ablation.py [--root runs/ablation] [--folds 5] [--variants age_sex volumes affine wide]``

Runs ``python -m adni_lightning cv`` (5 folds, same split seed, so the same folds) for each variant of
``configs/synthetic.yaml`` — the CNN with age and sex only, with age, sex and ICV-normalised volumes
(``configs/volumes.yaml``, the embedded default since this ablation), with age and sex and the random affine
augmentation, twice as wide — and prints, from each variant's out-of-fold
predictions, the pooled balanced accuracy and AUROC with 95 % CIs from a bootstrap over subjects, the
subject-level balanced accuracy, the paired difference to the regional-volume baseline on the same folds,
and the variant's wall time. Finished folds are skipped on a re-run (the wall time then covers only what ran).
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
#: Variant → (configs stacked on configs/synthetic.yaml, overrides). Each names its covariates explicitly, so a
#: change of the embedded default does not change what a variant means.
VARIANTS: dict[str, tuple[list[Path], list[str]]] = {
    "age_sex": ([], ["--data.tabular.volumes", "[]"]),
    "volumes": ([REPO / "configs" / "volumes.yaml"], []),
    "affine": ([REPO / "benchmarks" / "ablation" / "affine.yaml"], ["--data.tabular.volumes", "[]"]),
    "wide": ([REPO / "benchmarks" / "ablation" / "wide.yaml"], ["--data.tabular.volumes", "[]"]),
}


def run_variant(name: str, root: Path, folds: int) -> float:
    """Run (or finish) one variant's cross-validation; return its wall time in seconds."""
    extra, overrides = VARIANTS[name]
    configs = [REPO / "configs" / "synthetic.yaml", *extra]
    command = [sys.executable, "-m", "adni_lightning", "cv", "--folds", str(folds), "--root", str(root / name)]
    command += [arg for config in configs for arg in ("--config", str(config))] + overrides
    command += ["--trainer.enable_progress_bar", "false", "--trainer.default_root_dir", str(root / f"{name}_run")]
    start = time.perf_counter()
    subprocess.run(command, check=True)
    return time.perf_counter() - start


def _interval(ci: pd.DataFrame, model: str, metric: str) -> str:
    row = ci[(ci["model"] == model) & (ci["metric"] == metric)].iloc[0]
    return f"{row['estimate']:.3f} [{row['ci_low']:.3f}, {row['ci_high']:.3f}]"


def summarise(name: str, root: Path, seconds: float, resamples: int) -> list[dict[str, str]]:
    oof = pd.read_csv(root / name / "oof_predictions.csv", dtype={"image_id": str, "subject": str})
    image = bootstrap_ci(oof, ADNI1_GROUPS, n_resamples=resamples)
    subject = bootstrap_ci(subject_level(oof, ADNI1_GROUPS), ADNI1_GROUPS, n_resamples=resamples)
    difference = paired_difference(oof, "cnn", "baseline", ADNI1_GROUPS, n_resamples=resamples).set_index("metric")
    rows = []
    for model in ("cnn", "baseline"):
        rows.append(
            {
                "variant": f"CNN: {name}" if model == "cnn" else "regional-volume baseline",
                "OOF bacc [95% CI]": _interval(image, model, "bacc"),
                "OOF AUROC [95% CI]": _interval(image, model, "auroc"),
                "subject bacc [95% CI]": _interval(subject, model, "bacc"),
                "CNN − baseline, bacc": (
                    f"{difference.at['bacc', 'estimate']:+.3f} [{difference.at['bacc', 'ci_low']:+.3f}, "
                    f"{difference.at['bacc', 'ci_high']:+.3f}]"
                    if model == "cnn"
                    else ""
                ),
                "CNN − baseline, AUROC": (
                    f"{difference.at['auroc', 'estimate']:+.3f} [{difference.at['auroc', 'ci_low']:+.3f}, "
                    f"{difference.at['auroc', 'ci_high']:+.3f}]"
                    if model == "cnn"
                    else ""
                ),
                "wall time": f"{seconds / 60:.1f} min" if model == "cnn" else "",
            }
        )
    return rows


def main() -> None:
    """Run the variants one after the other (never side by side: 2 cores) and print the table."""
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--root", type=Path, default=Path("runs/ablation"), help="one cv folder per variant")
    parser.add_argument("--folds", type=int, default=5, help="folds per cross-validation")
    parser.add_argument("--variants", nargs="+", choices=list(VARIANTS), default=list(VARIANTS))
    parser.add_argument("--bootstrap", type=int, default=2000, help="resamples over subjects")
    args = parser.parse_args()
    rows = []
    for name in args.variants:
        seconds = run_variant(name, args.root.resolve(), args.folds)
        rows += summarise(name, args.root.resolve(), seconds, args.bootstrap)
        print(f"{name}: {seconds / 60:.1f} min", flush=True)
    table = pd.DataFrame(rows).drop_duplicates(subset=["variant"])  # the baseline is the same on every variant
    table.to_csv(args.root / "ablation.csv", index=False)
    lines = [" | ".join(table.columns), " | ".join("---" for _ in table.columns)]
    lines += [" | ".join(str(v) for v in row) for row in table.itertuples(index=False)]
    print("\n".join(f"| {line} |" for line in lines))


if __name__ == "__main__":
    main()
