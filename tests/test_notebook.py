"""``notebooks/explore.ipynb`` is what jupytext makes of ``notebooks/explore.py``, and its documented
``jupyter nbconvert --execute`` command runs it top to bottom headless on a synthetic cohort, showing what it promises.

The command runs with this interpreter's ``jupyter`` and a temporary Jupyter data folder, so its ``python3`` kernel
is this environment's whatever kernelspecs the machine has installed (a user-level ``python3`` spec would otherwise
shadow the virtual environment's).
"""

from __future__ import annotations

import os
import re
import shlex
import subprocess
import sys
from pathlib import Path

import jupytext
import nbformat

REPO = Path(__file__).resolve().parents[1]
NOTEBOOK = REPO / "notebooks" / "explore.ipynb"
SOURCE = REPO / "notebooks" / "explore.py"  # the notebook as a jupytext percent script: the one to edit
REGENERATE = "jupytext --update --to ipynb notebooks/explore.py"
# Tags of the cells the execution test reads.
INSPECTED = (
    "parameters",
    "setup",
    "csv",
    "leak",
    "split",
    "slices",
    "hippocampus-slices",
    "resampling",
    "volumes",
    "curves",
)
#: The command the notebook's opening cell documents, run from the repository.
DOCUMENTED = re.compile(r"^# (jupyter nbconvert --to notebook --execute notebooks/explore\.ipynb .*)$", re.MULTILINE)


def _tagged(nb: nbformat.NotebookNode, tag: str) -> nbformat.NotebookNode:
    cells = [c for c in nb.cells if tag in c.get("metadata", {}).get("tags", [])]
    assert len(cells) == 1, f"expected one cell tagged {tag!r}, found {len(cells)}"
    return cells[0]


def _text(cell: nbformat.NotebookNode) -> str:
    parts = []
    for out in cell.get("outputs", []):
        if out.get("output_type") == "stream":
            parts.append(out["text"])
        elif "data" in out:
            parts.append(out["data"].get("text/plain", ""))
    return "".join(parts)


def _pngs(cell: nbformat.NotebookNode) -> int:
    return sum("image/png" in out.get("data", {}) for out in cell.get("outputs", []))


def _cells(nb: nbformat.NotebookNode) -> list[tuple[str, str, tuple[str, ...]]]:
    """Type, source and tags of each cell: what the notebook says, without ids and jupytext's own metadata."""
    return [(c.cell_type, c.source, tuple(c.metadata.get("tags", ()))) for c in nb.cells]


def test_notebook_is_what_jupytext_makes_of_its_script():
    expected = _cells(jupytext.read(SOURCE))
    committed = _cells(nbformat.read(NOTEBOOK, as_version=4))
    first = next((i for i, (a, b) in enumerate(zip(committed, expected)) if a != b), min(len(committed), len(expected)))
    assert committed == expected, f"{NOTEBOOK.name} differs from {SOURCE.name} from cell {first} on: run `{REGENERATE}`"
    assert sorted(tag for _, _, tags in expected for tag in tags) == sorted(INSPECTED)
    # The script holds the magic commented out (plain Python for ruff); the notebook gets it back as a magic.
    setup = next(source for _, source, tags in expected if "setup" in tags)
    assert setup.startswith("%matplotlib inline\n")
    assert "# %matplotlib inline\n" in SOURCE.read_text(encoding="utf-8")


def test_committed_notebook_has_no_outputs():
    nb = nbformat.read(NOTEBOOK, as_version=4)
    nbformat.validate(nb)
    code = [c for c in nb.cells if c.cell_type == "code"]
    assert code and all(not c.outputs and c.execution_count is None for c in code)
    assert "ADNI_DATA_DIR" in code[0].source and "ADNI_RUN_DIR" in code[0].source


def _decoy_events(folder: Path) -> None:
    """Event files that are not the run's training curves (an evaluation's): newer, and without train/loss."""
    from torch.utils.tensorboard import SummaryWriter

    with SummaryWriter(str(folder)) as writer:
        writer.add_scalar("val/bacc", 0.5, 0)


def test_the_documented_command_runs_the_notebook_on_the_run_it_is_given(tmp_path):
    [command] = DOCUMENTED.findall(SOURCE.read_text(encoding="utf-8"))
    data_dir, run_dir, out = tmp_path / "data", tmp_path / "run", tmp_path / "out"
    _decoy_events(run_dir / "validate")  # the run folder holds other events than its training curves
    env = {
        **os.environ,
        "ADNI_DATA_DIR": str(data_dir),
        "ADNI_RUN_DIR": str(run_dir),
        "ADNI_SYNTH_SUBJECTS": "40",
        "ADNI_SYNTH_SIZE": "64",
        "JUPYTER_DATA_DIR": str(tmp_path / "jupyter"),  # no user-level kernelspec shadows this environment's
        # The package is imported from this checkout (it need not be pip-installed).
        "PYTHONPATH": os.pathsep.join(filter(None, [str(REPO), os.environ.get("PYTHONPATH")])),
        "PATH": os.pathsep.join([str(Path(sys.executable).parent), os.environ["PATH"]]),
    }
    argv = shlex.split(command.replace("--output-dir runs/notebook", f"--output-dir {out}"))
    done = subprocess.run(argv, cwd=REPO, env=env, capture_output=True, text=True, timeout=900)
    assert done.returncode == 0, done.stderr[-3000:]
    nb = nbformat.read(out / NOTEBOOK.name, as_version=4)

    setup = _text(_tagged(nb, "setup"))
    assert f"python: {sys.executable}" in setup
    assert "generating a synthetic cohort" in setup
    assert (data_dir / "ADNI_1p5T_Filtered.csv").is_file()

    assert "has 2 images" in _text(_tagged(nb, "csv"))  # the synthetic cohort has subjects with two visits
    leak = _text(_tagged(nb, "leak"))
    assert "naive image-level 80/20 split" in leak and "on both sides" in leak
    assert "subjects on both sides on average" in leak

    split = _tagged(nb, "split")
    assert "0 subjects on more than one side" in _text(split)
    assert _pngs(split) == 1

    assert _pngs(_tagged(nb, "slices")) == 1
    assert _pngs(_tagged(nb, "hippocampus-slices")) == 1
    resampling = _text(_tagged(nb, "resampling"))
    assert "trilinear: 17 (Left-Hippocampus), 26 (Left-Accumbens-area), 35 (not an aseg/DKT id)" in resampling
    assert "44 (Right-Inf-Lat-Vent)" in resampling
    assert "ids that are not in the input" in resampling and "nearest to" in resampling
    assert resampling.rstrip().endswith(": 0 ids that are not in the input")
    assert _pngs(_tagged(nb, "volumes")) == 1

    curves = _tagged(nb, "curves")
    text = _text(curves)
    demo = tmp_path / "run-notebook-demo"
    assert f"no TensorBoard event files in {run_dir / 'tensorboard'}; using a tiny run in {demo}" in text
    assert "training the tiny run" in text
    assert f"read {demo / 'tensorboard'}: " in text
    for tag in ("train/loss", "val/loss", "train/acc", "val/acc", "val/bacc"):
        assert tag in text
    assert "the same split as section 3" in text
    assert _pngs(curves) == 1
    assert list((demo / "tensorboard").glob("events.out.tfevents.*"))
    assert sorted(p.name for p in run_dir.iterdir()) == ["validate"]  # RUN_DIR stays free for a real `fit`
