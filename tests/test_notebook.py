"""``notebooks/explore.ipynb`` is what jupytext makes of ``notebooks/explore.py``, and it runs top to bottom headless
on a synthetic cohort and shows what it promises.

The kernel is started from a temporary kernelspec that points at this interpreter, so the notebook runs in the
same environment as the tests whatever kernelspecs the machine has installed (a user-level ``python3`` spec
would otherwise shadow the virtual environment's).
"""

from __future__ import annotations

import json
import os
import sys
from pathlib import Path

import jupytext
import nbformat
from nbclient import NotebookClient

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
KERNEL_NAME = "adni-lightning-test"


def _kernelspec(root: Path) -> Path:
    """A kernelspec running ipykernel in this interpreter; returns the folder to put on JUPYTER_PATH."""
    spec = root / "kernels" / KERNEL_NAME
    spec.mkdir(parents=True)
    argv = [sys.executable, "-m", "ipykernel_launcher", "-f", "{connection_file}"]
    (spec / "kernel.json").write_text(json.dumps({"argv": argv, "display_name": "adni test", "language": "python"}))
    return root


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


def test_notebook_runs_on_a_synthetic_cohort_and_trains_its_own_run(tmp_path, monkeypatch):
    data_dir, run_dir, work = tmp_path / "data", tmp_path / "run", tmp_path / "cwd"
    work.mkdir()
    # The kernel inherits this process's environment at start.
    monkeypatch.setenv("ADNI_DATA_DIR", str(data_dir))
    monkeypatch.setenv("ADNI_RUN_DIR", str(run_dir))
    monkeypatch.setenv("ADNI_SYNTH_SUBJECTS", "40")
    monkeypatch.setenv("ADNI_SYNTH_SIZE", "64")
    jupyter_path = [str(_kernelspec(tmp_path / "jupyter")), os.environ.get("JUPYTER_PATH")]
    monkeypatch.setenv("JUPYTER_PATH", os.pathsep.join(filter(None, jupyter_path)))
    # The package is imported from this checkout (it need not be pip-installed); the kernel runs in tmp_path.
    monkeypatch.setenv("PYTHONPATH", os.pathsep.join(filter(None, [str(REPO), os.environ.get("PYTHONPATH")])))

    nb = nbformat.read(NOTEBOOK, as_version=4)
    client = NotebookClient(nb, timeout=600, kernel_name=KERNEL_NAME, resources={"metadata": {"path": str(work)}})
    client.execute()  # raises CellExecutionError on the first failing cell

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
    assert "training the tiny run" in text
    for tag in ("train/loss", "val/loss", "train/acc", "val/acc", "val/bacc"):
        assert tag in text
    assert "the same split as section 3" in text
    assert _pngs(curves) == 1
    assert list((tmp_path / "run-notebook-demo" / "tensorboard").glob("events.out.tfevents.*"))
    assert not run_dir.exists()  # RUN_DIR stays free for a real `fit`
