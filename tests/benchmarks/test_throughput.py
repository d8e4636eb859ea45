"""The throughput benchmark's short mode runs and prints the table it promises (no timings asserted)."""

from __future__ import annotations

import os
import subprocess
import sys
from pathlib import Path

import pytest

REPO = Path(__file__).resolve().parents[2]


def test_short_mode_prints_a_row_per_variant_and_data_path(tmp_path):
    env = {**os.environ, "PYTHONPATH": str(REPO)}
    command = [sys.executable, "benchmarks/throughput.py", "--short", "--out", str(tmp_path / "work")]
    done = subprocess.run(command, cwd=REPO, env=env, capture_output=True, text=True, timeout=300)
    assert done.returncode == 0, done.stderr[-3000:]
    lines = done.stdout.splitlines()
    header = next(line for line in lines if line.startswith("| size |"))
    columns = [cell.strip() for cell in header.strip("|").split("|")]
    rows = [[cell.strip() for cell in line.strip("|").split("|")] for line in lines if line.startswith("| 16³ |")]
    variants = [
        ("32-true", "off", "off"),
        ("bf16-mixed", "off", "off"),
        ("32-true", "on", "off"),
        ("32-true", "off", "on"),
    ]
    expected = [(path, *variant) for variant in variants for path in ("loader", "resident")]
    assert [(r[1], r[2], r[3], r[5]) for r in rows] == expected  # path, precision, channels_last, fused
    assert all(r[4] == "off" for r in rows)  # no compile in short mode
    for name in ("model-only vol/s", "data-only vol/s", "end-to-end vol/s", "busy", "peak host RSS GiB"):
        values = [float(r[columns.index(name)]) for r in rows]
        assert all(v > 0 for v in values), name
    for r in rows:  # busy is end-to-end ÷ model-only (both printed to 3 significant digits)
        ratio = float(r[columns.index("end-to-end vol/s")]) / float(r[columns.index("model-only vol/s")])
        assert float(r[columns.index("busy")]) == pytest.approx(ratio, rel=0.02, abs=0.01)
    assert {r[columns.index("limits")] for r in rows} <= {"model", "data"}
    assert "loading the resident cohort took" in done.stdout
    assert (tmp_path / "work" / "cohort" / "ADNI_1p5T_Filtered.csv").is_file()  # --out keeps the work folder
