"""Reproduce the README's figures for the embedded default: ``python -m adni_lightning fit`` from scratch.

``python benchmarks/default_run.py [--write-readme] [-- extra fit options]`` (``make reproduce``) runs the
command in an empty folder (the synthetic cohort is generated, cached and trained on, as a new user's first
run), times it, reads the validation curve from the run's TensorBoard events, scores the last checkpoint on
the validation split for the confusion matrix, and writes ``benchmarks/results/default_run.json`` and the
README fragment ``default_run.md``. ``--write-readme`` also puts that fragment into README.md between its
``default_run`` markers; a test fails when README.md and the JSON disagree, so the figures cannot drift.
"""

from __future__ import annotations

import argparse
import datetime
import json
import os
import platform
import subprocess
import sys
import tempfile
import time
from pathlib import Path

import pandas as pd
import torch
from tensorboard.backend.event_processing.event_accumulator import EventAccumulator

REPO = Path(__file__).resolve().parents[1]
RESULTS = REPO / "benchmarks" / "results"
JSON = RESULTS / "default_run.json"
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
    classes = [c[2:] for c in predictions.columns if c.startswith("p_")]
    confusion = pd.crosstab(predictions["group"], predictions["predicted"]).reindex(
        index=classes, columns=classes, fill_value=0
    )
    bacc = curves["val/bacc"]
    best = max(range(len(bacc)), key=bacc.__getitem__)
    return {
        "command": " ".join(["python -m adni_lightning fit", *extra]).strip(),
        "date": datetime.date.today().isoformat(),
        "machine": f"{os.cpu_count()} CPU cores ({platform.machine()}), torch {torch.__version__}, "
        + (torch.cuda.get_device_name() if torch.cuda.is_available() else "no GPU"),
        "wall_seconds": round(wall, 1),
        "epochs": len(bacc),
        "final": {name: round(values[-1], 3) for name, values in curves.items()},
        "best_bacc": round(bacc[best], 3),
        "best_epoch": best + 1,
        "classes": classes,
        "confusion": confusion.to_numpy().tolist(),
        "images": split["split"].value_counts().to_dict(),
        "subjects": split.groupby("split")["subject"].nunique().to_dict(),
    }


def _minutes(seconds: float) -> str:
    return f"{int(seconds // 60)} min {round(seconds % 60):02d} s"


def render(result: dict[str, object]) -> str:
    """The README fragment for ``result`` (what :func:`measure` returns)."""
    final = result["final"]
    rows = [
        f"`{result['command']}` in an empty folder, {result['date']}, {result['machine']}: "
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
    parser.add_argument("--write-readme", action="store_true", help="put the figures into README.md too")
    parser.add_argument("--out", type=Path, default=JSON, help="the JSON to write (default: %(default)s)")
    parser.add_argument("--workdir", type=Path, help="run in this new folder and keep it (default: a temporary one)")
    parser.add_argument("extra", nargs="*", help="options passed on to fit and predict (after --)")
    args = parser.parse_args()
    result = measure(args.extra, args.workdir)
    args.out.parent.mkdir(parents=True, exist_ok=True)
    args.out.write_text(json.dumps(result, indent=2) + "\n")
    fragment = render(result)
    args.out.with_suffix(".md").write_text(fragment + "\n")
    print(fragment)
    if args.write_readme:
        if args.extra:
            parser.error("--write-readme records the default run only: drop the extra fit options")
        write_readme(fragment)


if __name__ == "__main__":
    main()
