"""The README as a new user reads it: every ``bash`` block runs as written (but those :data:`SKIPPED` names, each with
its reason), its figures come from a run.
"""

from __future__ import annotations

import importlib.util
import json
import os
import re
import subprocess
import sys
import textwrap
from pathlib import Path

import pytest

REPO = Path(__file__).resolve().parents[1]
README = (REPO / "README.md").read_text()
BASH_BLOCK = re.compile(r"^( *)```bash\n(.*?)^\1```", re.DOTALL | re.MULTILINE)
#: The blocks that do not run here, by their first line, and why.
SKIPPED = {
    "make install  ": "builds .venv and trains the default for minutes; the blocks below check the same commands",
    "make install && make test": "the test suite itself",
    "python -m adni_lightning fit --config configs/adni.yaml\n": "needs a real ADNI download (the smoke test "
    "below runs the same config on a synthetic one)",
    "python -m adni_lightning fit --config configs/synthetic.yaml --ckpt_path last": "needs a finished run (minutes); "
    "resume and evaluation are tested in tests/test_main.py",
    "python -m adni_lightning fit --config configs/adni.yaml --trainer.devices 4": "needs 4 GPUs and 2 nodes",
    "python -m adni_lightning inspect": "needs a real ADNI download; cv runs 5 trainings (tests/commands)",
    "python -m adni_lightning fit --config configs/adni.yaml --config configs/tasks": "needs a real ADNI download "
    "and its ADNIMERGE.csv (benchmarks/tasks.py runs the tasks on the synthetic cohort)",
    "#SBATCH --array=0-4": "needs SLURM",
    "#SBATCH --array=0-3": "needs SLURM",
    "python -m adni_lightning tune": "needs a real ADNI download; tests/commands/test_tune.py runs tune, "
    "benchmarks/nested_tune.py the measured search",
    "make install TORCH_INDEX=": "installs the CUDA build of torch: a CUDA machine and its wheel index",
    "python -m adni_lightning interpret": "needs a finished run (tests/interpret)",
    "python -m adni_lightning evaluate": "needs a finished run and a second cohort (tests/commands/test_evaluate.py)",
    "python -m adni_lightning synth --out data/demo --subjects 200 --size 256": "200 subjects at 256³ take minutes "
    "(tests/test_synth.py writes the same format)",
}
BLOCKS = [textwrap.dedent(block) for _, block in BASH_BLOCK.findall(README)]


def _skipped(block: str) -> str | None:
    return next((why for start, why in SKIPPED.items() if (block + "\n").startswith(start)), None)


RUN = [block for block in BLOCKS if _skipped(block) is None]


def _default_run():
    spec = importlib.util.spec_from_file_location("default_run", REPO / "benchmarks" / "default_run.py")
    module = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(module)
    return module


def test_readme_figures_are_the_reproduce_scripts_last_output():
    default_run = _default_run()
    result = json.loads(default_run.JSON.read_text())
    assert default_run.readme_block(README) == default_run.render(result)


def test_every_bash_block_runs_or_is_skipped_with_a_reason():
    assert len(BLOCKS) == len(re.findall(r"^ *```bash$", README, re.MULTILINE))  # the pattern finds them all
    for start in SKIPPED:  # no stale entry: each names one block
        assert sum((block + "\n").startswith(start) for block in BLOCKS) == 1, start
    ran = "\n".join(RUN)
    for command in (
        "source .venv/bin/activate",
        "--help",
        "synth --out",
        "adni.yaml",
        "--model.optimizer.init_args.lr",
    ):
        assert command in ran


@pytest.fixture(scope="module")
def reader(tmp_path_factory: pytest.TempPathFactory) -> Path:
    """One empty folder for every block, in the README's order, holding the repository's ``configs`` and this test's
    own environment as ``.venv`` (in CI, the fresh one .ci/run builds), as a user who cloned the project and ran
    ``make install``.
    """
    folder = tmp_path_factory.mktemp("reader")
    (folder / "configs").symlink_to(REPO / "configs")
    (folder / ".venv").symlink_to(Path(sys.prefix))
    return folder


@pytest.mark.slow
@pytest.mark.parametrize("block", RUN, ids=lambda b: b.splitlines()[0][:40])
def test_a_readme_block_runs_as_written(block, reader):
    script = reader / "block.sh"
    script.write_text("set -euo pipefail\nsource .venv/bin/activate\n" + block)
    done = subprocess.run(
        ["bash", str(script)], cwd=reader, capture_output=True, text=True, env={**os.environ, "COLUMNS": "120"}
    )
    assert done.returncode == 0, done.stderr[-3000:]
    assert "Traceback" not in done.stderr
    assert "Warning" not in done.stderr, done.stderr[-3000:]  # e.g. torch's "suggested max number of worker"
