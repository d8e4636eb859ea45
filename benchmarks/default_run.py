"""Reproduce the README's figures for the embedded default: ``python -m adni_lightning fit`` from scratch.

``python benchmarks/default_run.py [--write-readme] [-- extra fit options]`` runs the command in an empty
folder (the synthetic cohort is generated, cached and trained on, as a new user's first run), times it, reads
the validation curve from the run's TensorBoard events, scores the last checkpoint on the validation split for
the confusion matrix, and keeps the run's ``environment.json`` (packages, torch build, CPU, kernels) and how the
installed packages differ from ``requirements/lock.txt``.

``make reproduce`` compares the figures with the README's (``benchmarks/results/default_run.json``, which the
README block is rendered from): it prints each figure that differs, README vs now, and what differs between the
two environments, and exits 1; the new figures go to ``runs/default_run.json``. ``--write-readme`` writes them
to ``benchmarks/results/default_run.json``, ``default_run.md`` and the README block instead; a test fails when
README.md and the JSON disagree, so the figures cannot drift.
"""

from __future__ import annotations

import argparse
import datetime
import json
import subprocess
import sys
import tempfile
import time
from pathlib import Path

import pandas as pd
from tensorboard.backend.event_processing.event_accumulator import EventAccumulator

from adni_lightning.environment import FILENAME, differences, lock_differences, read_record, summary

REPO = Path(__file__).resolve().parents[1]
RESULTS = REPO / "benchmarks" / "results"
JSON = RESULTS / "default_run.json"
LATEST = REPO / "runs" / "default_run.json"
LOCK = REPO / "requirements" / "lock.txt"
BEGIN, END = "<!-- default_run:begin (benchmarks/default_run.py writes this block) -->", "<!-- default_run:end -->"
RUN = Path("runs") / "synthetic"
SCALARS = ("val/bacc", "val/acc", "val/auroc", "val/f1", "val/loss", "train/loss")


def _command(*args: str, cwd: Path) -> float:
    """Run ``python -m adni_lightning ARGS`` in ``cwd``; its wall-clock seconds."""
    start = time.perf_counter()
    subprocess.run([sys.executable, "-m", "adni_lightning", *args], cwd=cwd, check=True)
    return time.perf_counter() - start


def measure(extra: list[str], workdir: Path | None = None) -> dict[str, object]:
    """The default run, from an empty folder (``workdir``, kept, or a temporary one), and what the README reports."""
    if workdir is not None:
        workdir.mkdir(parents=True)  # refuses a folder that exists: the run must start from nothing
    with tempfile.TemporaryDirectory(prefix="default_run_") as folder:
        cwd = workdir or Path(folder)
        wall = _command("fit", *extra, cwd=cwd)
        run = cwd / RUN
        events = EventAccumulator(str(run / "tensorboard"), size_guidance={"scalars": 0}).Reload()
        curves = {name: [e.value for e in events.Scalars(name)] for name in SCALARS}
        _command(
            "predict",
            *extra,
            "--ckpt_path",
            str(run / "checkpoints" / "last.ckpt"),
            "--data.predict_split",
            "val",
            cwd=cwd,
        )
        predictions = pd.read_csv(run / "predictions.csv")
        split = pd.read_csv(run / "split.csv", dtype=str)
        environment = read_record(run / FILENAME)
    classes = [c[2:] for c in predictions.columns if c.startswith("p_")]
    confusion = pd.crosstab(predictions["group"], predictions["predicted"]).reindex(
        index=classes, columns=classes, fill_value=0
    )
    bacc = curves["val/bacc"]
    best = max(range(len(bacc)), key=bacc.__getitem__)
    return {
        "command": " ".join(["python -m adni_lightning fit", *extra]).strip(),
        "date": datetime.date.today().isoformat(),
        "wall_seconds": round(wall, 1),
        "epochs": len(bacc),
        "final": {name: round(values[-1], 3) for name, values in curves.items()},
        "best_bacc": round(bacc[best], 3),
        "best_epoch": best + 1,
        "classes": classes,
        "confusion": confusion.to_numpy().tolist(),
        "images": split["split"].value_counts().to_dict(),
        "subjects": split.groupby("split")["subject"].nunique().to_dict(),
        "environment": environment,
        "lock": {"file": str(LOCK.relative_to(REPO)), "differences": lock_differences(LOCK)},
    }


def _minutes(seconds: float) -> str:
    return f"{int(seconds // 60)} min {round(seconds % 60):02d} s"


def _environment_line(result: dict[str, object]) -> str:
    """The run's CPU, torch build and lock file; results from before ``environment.json`` name the machine only."""
    if "environment" not in result:
        return str(result["machine"])
    lock = result["lock"]
    pinned = (
        f"the packages of `{lock['file']}`"
        if not lock["differences"]
        else f"packages other than `{lock['file']}`'s ({'; '.join(lock['differences'])})"
    )
    return f"{summary(result['environment'])}, {pinned}"


def render(result: dict[str, object]) -> str:
    """The README fragment for ``result`` (what :func:`measure` returns)."""
    final = result["final"]
    rows = [
        f"`{result['command']}` in an empty folder, {result['date']}, {_environment_line(result)}: "
        f"**{_minutes(result['wall_seconds'])}** wall clock in all (cohort generation, cache, "
        f"{result['epochs']} epochs on {result['images']['train']} training images, validation on "
        f"{result['images']['val']} images of {result['subjects']['val']} held-out subjects).",
        "",
        f"| | final epoch ({result['epochs']}) | best epoch |",
        "| --- | --- | --- |",
        f"| `val/bacc` | **{final['val/bacc']:.3f}** | {result['best_bacc']:.3f} (epoch {result['best_epoch']}) |",
        f"| `val/acc` | {final['val/acc']:.3f} | |",
        f"| `val/auroc` (macro OvR) | {final['val/auroc']:.3f} | |",
        f"| `val/f1` (macro) | {final['val/f1']:.3f} | |",
        f"| `val/loss` / `train/loss` | {final['val/loss']:.3f} / {final['train/loss']:.3f} | |",
        "",
        f"Validation confusion matrix of the last epoch (rows true, columns predicted; "
        f"{', '.join(result['classes'])}): `{result['confusion']}`.",
    ]
    return "\n".join(rows)


def figure_differences(readme: dict[str, object], now: dict[str, object]) -> list[str]:
    """Each figure of the README block that ``now`` gives otherwise, as ``name: README x, now y``."""
    figures = [(f"{name} (final epoch)", readme["final"][name], now["final"][name]) for name in readme["final"]]
    figures += [
        (key, readme[key], now[key])
        for key in ("best_bacc", "best_epoch", "epochs", "classes", "confusion", "images", "subjects")
    ]
    return [f"{name}: README {a}, now {b}" for name, a, b in figures if a != b]


def environment_differences(readme: dict[str, object], now: dict[str, object]) -> list[str]:
    """What differs between the environments of two results (:func:`differences`), or what each recorded."""
    if "environment" not in readme:
        return [
            f"the README's figures record no environment, only {readme['machine']!r}; now: {_environment_line(now)}"
        ]
    lines = differences(readme["environment"], now["environment"])
    if readme["lock"] != now["lock"]:
        lines.append(f"lock: README {readme['lock']}, now {now['lock']}")
    return lines


def compare(readme: dict[str, object], now: dict[str, object]) -> tuple[bool, str]:
    """Whether ``now`` gives the README's figures, and a report saying which differ and what else did."""
    figures = figure_differences(readme, now)
    if not figures:
        return True, "the figures are the README's, digit for digit"
    environment = environment_differences(readme, now) or ["none recorded (same packages, torch build and CPU)"]
    report = ["figures that differ from the README's:", *(f"  {line}" for line in figures)]
    report += ["environment differences (README -> now):", *(f"  {line}" for line in environment)]
    return False, "\n".join(report)


def readme_block(readme: str) -> str:
    """The text between the README's ``default_run`` markers."""
    start, end = readme.index(BEGIN) + len(BEGIN), readme.index(END)
    return readme[start:end].strip("\n")


def write_readme(fragment: str, path: Path = REPO / "README.md") -> None:
    text = path.read_text()
    start, end = text.index(BEGIN) + len(BEGIN), text.index(END)
    path.write_text(text[:start] + "\n" + fragment + "\n" + text[end:])


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument(
        "--write-readme", action="store_true", help="make these the README's figures (JSON, fragment, README block)"
    )
    parser.add_argument(
        "--out", type=Path, help=f"the JSON to write (default: {LATEST}, or {JSON} with --write-readme)"
    )
    parser.add_argument("--workdir", type=Path, help="run in this new folder and keep it (default: a temporary one)")
    parser.add_argument("extra", nargs="*", help="options passed on to fit and predict (after --)")
    args = parser.parse_args()
    if args.write_readme and args.extra:
        parser.error("--write-readme records the default run only: drop the extra fit options")
    readme = json.loads(JSON.read_text())
    result = measure(args.extra, args.workdir)
    out = args.out or (JSON if args.write_readme else LATEST)
    out.parent.mkdir(parents=True, exist_ok=True)
    out.write_text(json.dumps(result, indent=2) + "\n")
    fragment = render(result)
    print(fragment)
    same, report = compare(readme, result)
    print(f"\n{report}")
    if args.write_readme:
        out.with_suffix(".md").write_text(fragment + "\n")
        write_readme(fragment)
        print(f"README.md and {out} now give these figures")
    elif not same:
        sys.exit(f"the default run does not give the README's figures (this run: {out})")


if __name__ == "__main__":
    main()
