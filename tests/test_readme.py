"""The README as a new user reads it: its cheap code blocks run as written, its figures come from a run."""

from __future__ import annotations

import importlib.util
import json
import os
import re
import subprocess
import sys
from pathlib import Path

import pytest

REPO = Path(__file__).resolve().parents[1]
README = (REPO / "README.md").read_text()
MARKED_BLOCK = re.compile(r"<!-- readme-test -->\n```bash\n(.*?)```", re.DOTALL)


def _default_run():
    spec = importlib.util.spec_from_file_location("default_run", REPO / "benchmarks" / "default_run.py")
    module = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(module)
    return module


def test_readme_figures_are_the_reproduce_scripts_last_output():
    default_run = _default_run()
    result = json.loads(default_run.JSON.read_text())
    assert default_run.readme_block(README) == default_run.render(result)


def test_the_marked_blocks_cover_the_first_hour():
    blocks = "\n".join(MARKED_BLOCK.findall(README))
    for command in ("source .venv/bin/activate", "--help", "synth --out", "--trainer.fast_dev_run", "adni.yaml"):
        assert command in blocks


@pytest.mark.slow
@pytest.mark.parametrize("block", MARKED_BLOCK.findall(README), ids=lambda b: b.splitlines()[0][:40])
def test_a_marked_readme_block_runs_as_written(block, tmp_path):
    """In an empty folder that holds the repository's ``configs`` and this test's own environment as ``.venv``
    (in CI, the fresh one .ci/run builds), as a user who cloned the project and ran ``make install``.
    """
    (tmp_path / "configs").symlink_to(REPO / "configs")
    (tmp_path / ".venv").symlink_to(Path(sys.prefix))
    script = tmp_path / "block.sh"
    script.write_text("set -euo pipefail\nsource .venv/bin/activate\n" + block)
    done = subprocess.run(
        ["bash", str(script)], cwd=tmp_path, capture_output=True, text=True, env={**os.environ, "COLUMNS": "120"}
    )
    assert done.returncode == 0, done.stderr[-3000:]
    assert "Traceback" not in done.stderr
