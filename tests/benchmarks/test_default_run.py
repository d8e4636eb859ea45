"""benchmarks/default_run.py (`make reproduce`): says which figures differ from the README's and in what environment."""

from __future__ import annotations

import copy
import importlib.util
import json
import os
import shlex
import subprocess
import sys
from pathlib import Path

from tests.helpers import TINY_CONFIGS

REPO = Path(__file__).resolve().parents[2]


def _default_run():
    spec = importlib.util.spec_from_file_location("default_run", REPO / "benchmarks" / "default_run.py")
    module = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(module)
    return module


default_run = _default_run()
README_RESULT = json.loads(default_run.JSON.read_text())


def test_a_run_that_gives_other_figures_names_each_and_exits_1(tmp_path):
    """A tiny default run (1 epoch, 24 subjects): its figures are not the README's; nothing of the README's moves."""
    readme_before, json_before = (REPO / "README.md").read_bytes(), default_run.JSON.read_bytes()
    out = tmp_path / "now.json"
    shrink = [*TINY_CONFIGS, "--data.cohort.subjects", "24", "--data.cohort.size", "32", "--trainer.max_epochs", "1"]
    command = [sys.executable, "benchmarks/default_run.py", "--out", str(out), "--workdir", str(tmp_path / "work")]
    env = {**os.environ, "PYTHONPATH": str(REPO), "ONEDNN_MAX_CPU_ISA": "AVX2"}
    done = subprocess.run([*command, "--", *shrink], cwd=REPO, env=env, capture_output=True, text=True, timeout=300)
    assert done.returncode == 1, done.stderr[-3000:]
    assert done.stderr.splitlines()[-1] == f"the default run does not give the README's figures (this run: {out})"
    result = json.loads(out.read_text())
    assert result["environment"] == json.loads(
        (tmp_path / "work" / "runs" / "synthetic" / "environment.json").read_text()
    )
    assert result["environment"]["kernel_variables"]["ONEDNN_MAX_CPU_ISA"] == "AVX2"
    typed = [Path(sys.executable).name, "-m", "adni_lightning", "fit", *shrink]
    assert result["environment"]["command"] == shlex.join(typed)
    report = done.stdout[done.stdout.index("figures that differ from the README's:") :].splitlines()
    assert f"  epochs: README {README_RESULT['epochs']}, now 1" in report
    environment = report[report.index("environment differences (README -> now):") + 1 :]
    if "environment" in README_RESULT:
        assert "  $ONEDNN_MAX_CPU_ISA: (unset) -> AVX2" in environment
    else:  # figures measured before runs recorded their environment
        assert environment[0].startswith(
            f"  the README's figures record no environment, only {README_RESULT['machine']!r}"
        )
    assert (REPO / "README.md").read_bytes() == readme_before and default_run.JSON.read_bytes() == json_before


def _with_environment(result: dict, **packages: str) -> dict:
    record = {
        "python": "CPython 3.11.7",
        "packages": {"torch": "2.13.0+cpu", "numpy": "2.4.6"},
        "torch": {"version": "2.13.0+cpu", "libraries": ["Intel(R) MKL-DNN v3.12.0 (Git Hash 80af)"],
                  "cpu_capability": "AVX512", "threads": 2},
        "cpu": {"model": "AMD EPYC", "id": "AuthenticAMD family 25 model 17 stepping 1", "cores": 2,
                "simd_flags": ["avx2", "avx512f"]},
        "gpus": [],
        "kernel_variables": {},
        "project": {"git_commit": "c1"},
    }  # fmt: skip
    record["packages"].update(packages)
    return {
        **copy.deepcopy(result),
        "environment": record,
        "lock": {"file": "requirements/lock.txt", "differences": []},
    }


def test_the_same_figures_are_reported_as_such():
    assert default_run.compare(README_RESULT, copy.deepcopy(README_RESULT)) == (
        True,
        "the figures are the README's, digit for digit",
    )


def test_each_differing_figure_and_environment_fact_is_one_line():
    readme = _with_environment(README_RESULT)
    now = _with_environment(README_RESULT, numpy="2.4.7")
    now["final"]["val/bacc"], now["best_epoch"] = 0.5, 31
    now["confusion"] = [[1, 1, 1], [1, 1, 1], [1, 1, 1]]
    now["lock"]["differences"] = ["numpy: installed 2.4.7, lock 2.4.6"]
    same, report = default_run.compare(readme, now)
    assert not same
    assert report.splitlines() == [
        "figures that differ from the README's:",
        f"  val/bacc (final epoch): README {README_RESULT['final']['val/bacc']}, now 0.5",
        f"  best_epoch: README {README_RESULT['best_epoch']}, now 31",
        f"  confusion: README {README_RESULT['confusion']}, now [[1, 1, 1], [1, 1, 1], [1, 1, 1]]",
        "environment differences (README -> now):",
        "  numpy: 2.4.6 -> 2.4.7",
        "  lock: README {'file': 'requirements/lock.txt', 'differences': []}, now {'file': 'requirements/lock.txt', "
        "'differences': ['numpy: installed 2.4.7, lock 2.4.6']}",
    ]


def test_the_readme_block_names_cpu_torch_build_and_lock():
    first = default_run.render(_with_environment(README_RESULT)).splitlines()[0]
    assert first.startswith(
        f"`python -m adni_lightning fit` in an empty folder, {README_RESULT['date']}, AMD EPYC (AuthenticAMD family 25 "
        "model 17 stepping 1, 2 cores, ATen kernels AVX512), torch 2.13.0+cpu (oneDNN v3.12.0), Python 3.11.7, the "
        "packages of `requirements/lock.txt`: **"
    )
    off_lock = _with_environment(README_RESULT)
    off_lock["lock"]["differences"] = ["numpy: installed 2.4.7, lock 2.4.6"]
    assert "packages other than `requirements/lock.txt`'s (numpy: installed 2.4.7, lock 2.4.6)" in (
        default_run.render(off_lock)
    )
