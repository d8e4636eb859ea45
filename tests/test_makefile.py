"""`make install`: torch from the CPU wheel index (a fast fallback), the rest pinned; `make lock` pins a venv."""

from __future__ import annotations

import subprocess
import sys
from importlib import metadata
from pathlib import Path

from adni_lightning.environment import lock_differences

REPO = Path(__file__).resolve().parents[1]
LOCKED_TORCH = next(line for line in (REPO / "requirements" / "lock.txt").read_text().splitlines() if "torch==" in line)


def _make(*args: str) -> subprocess.CompletedProcess:
    command = ["make", "--no-print-directory", *args]
    return subprocess.run(command, cwd=REPO, capture_output=True, text=True, timeout=120)


def test_install_takes_the_locked_cpu_torch_then_the_project_with_the_lock(tmp_path):
    done = _make("-n", "install", f"VENV={tmp_path / 'venv'}")
    pip = f"{tmp_path / 'venv'}/bin/pip install --quiet"
    cpu_index = "--index-url https://download.pytorch.org/whl/cpu"
    assert f'{pip} --no-deps --timeout 10 --retries 1 {cpu_index} "{LOCKED_TORCH}"' in done.stdout
    assert f'{pip} --no-deps "{LOCKED_TORCH}"; }}' in done.stdout  # the fallback: the default index
    assert done.stdout.rstrip().endswith(f'{pip} --constraint requirements/lock.txt -e ".[dev]"')


def test_install_without_the_lock_takes_the_newest_torch(tmp_path):
    done = _make("-n", "install", f"VENV={tmp_path / 'venv'}", "LOCK=")
    assert '--index-url https://download.pytorch.org/whl/cpu "torch"' in done.stdout
    assert "--constraint" not in done.stdout


def test_lock_pins_every_package_of_the_venv_but_the_project(tmp_path):
    lock = tmp_path / "lock.txt"
    done = _make("lock", f"VENV={sys.prefix}", f"LOCK={lock}")
    assert done.returncode == 0, done.stderr
    lines = lock.read_text().splitlines()
    assert lines[0].startswith("# make lock: ")
    pins = dict(line.split("==") for line in lines[1:])
    assert "adni-lightning" not in pins and "adni_lightning" not in pins
    assert pins["torch"] == metadata.version("torch").split("+")[0]  # fits a CPU and a CUDA build alike
    assert pins["numpy"] == metadata.version("numpy")
    assert lock_differences(lock) == []


def test_lock_differences_name_each_package_off_the_lock(tmp_path):
    lock = tmp_path / "lock.txt"
    torch = metadata.version("torch").split("+")[0]
    lock.write_text(f"# header\ntorch=={torch}\nnumpy==0.0.1\nno-such-package==1.0\n")
    assert lock_differences(lock) == [
        f"numpy: installed {metadata.version('numpy')}, lock 0.0.1",
        "no-such-package: installed nothing, lock 1.0",
    ]
