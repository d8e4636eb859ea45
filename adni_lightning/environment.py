"""What a run's figures depend on besides its config: package versions, torch's build and kernels, the CPU.

The same commit, config and package versions gave the default run a final ``val/bacc`` of 0.701 on one machine
and 0.671 on another: oneDNN picks its convolution kernels by the CPU's instruction set (AVX2 or AVX-512) and
the thread count splits its sums, and each choice rounds differently (README, "Reproducibility"). A figure
without its environment cannot be checked, so every ``fit`` writes :func:`environment` into its run folder as
``environment.json`` (:class:`EnvironmentRecord`), and ``benchmarks/default_run.py`` compares two records with
:func:`differences`.
"""

from __future__ import annotations

import datetime
import json
import os
import platform
import re
import shlex
import subprocess
import sys
import tempfile
from importlib import metadata
from pathlib import Path
from typing import Any

import lightning as L
import torch
from lightning.pytorch.callbacks import Callback

from adni_lightning.errors import ProjectError

FILENAME = "environment.json"
#: The packages whose versions can move a figure (scipy only where something installed it).
PACKAGES = (
    "torch",
    "lightning",
    "torchmetrics",
    "numpy",
    "nibabel",
    "scipy",
    "scikit-learn",
    "pandas",
    "jsonargparse",
)
#: Variables that choose kernels, instruction sets or thread counts, recorded when set.
KERNEL_VARIABLES = (
    "ATEN_CPU_CAPABILITY",
    "ONEDNN_MAX_CPU_ISA",
    "DNNL_MAX_CPU_ISA",
    "MKL_CBWR",
    "MKL_ENABLE_INSTRUCTIONS",
    "MKL_NUM_THREADS",
    "OMP_NUM_THREADS",
    "OPENBLAS_CORETYPE",
    "OPENBLAS_NUM_THREADS",
    "NPY_DISABLE_CPU_FEATURES",
)
#: CPU flags of the instruction-set families that kernels dispatch on (the full list is ~150 unrelated flags).
SIMD_FLAG = re.compile(r"^(sse|ssse|avx|fma|f16c|amx|asimd|sve|neon)")
PROJECT_ROOT = Path(__file__).resolve().parents[1]


class EnvironmentRecordError(ProjectError):
    """A run folder's ``environment.json`` is not a record this module wrote: it is not overwritten."""


def _version(name: str) -> str | None:
    """The installed version of distribution ``name``; ``None`` when it is not installed."""
    try:
        return metadata.version(name)
    except metadata.PackageNotFoundError:
        return None


def _torch_build() -> dict[str, Any]:
    """The libraries torch was built with (``torch.__config__.show()``'s list, less its long compiler flags)."""
    lines = [line.strip()[2:] for line in torch.__config__.show().splitlines() if line.strip().startswith("- ")]
    return {
        "version": torch.__version__,
        "git_version": torch.version.git_version,
        "cuda": torch.version.cuda,
        "libraries": [line for line in lines if not line.startswith(("Build settings", "CPU capability usage"))],
        "cpu_capability": torch.backends.cpu.get_cpu_capability(),
        "threads": torch.get_num_threads(),
        "interop_threads": torch.get_num_interop_threads(),
    }


def _cpu() -> dict[str, Any]:
    """The CPU's model and instruction-set flags (``/proc/cpuinfo`` on Linux; the model alone elsewhere)."""
    try:
        info = Path("/proc/cpuinfo").read_text()
    except OSError:
        info = ""
    first: dict[str, str] = {}  # the first processor's fields: they hold for every core of one machine
    for line in info.splitlines():
        key, _, value = line.partition(":")
        first.setdefault(key.strip(), value.strip())
    # A hypervisor may name the CPU only "AMD EPYC": vendor, family and model still tell its generation.
    ident = " ".join(f"{k.replace('cpu ', '')} {first[k]}" for k in ("cpu family", "model", "stepping") if k in first)
    flags = first.get("flags") or first.get("Features") or ""
    return {
        "model": first.get("model name") or platform.processor() or platform.machine(),
        "id": " ".join(filter(None, (first.get("vendor_id"), ident))),
        "cores": os.cpu_count(),
        "machine": platform.machine(),
        "simd_flags": sorted(f for f in flags.split() if SIMD_FLAG.match(f)),
    }


def _git(*args: str) -> str | None:
    try:
        done = subprocess.run(
            ["git", "-C", str(PROJECT_ROOT), *args], capture_output=True, text=True, timeout=10, check=True
        )
    except (OSError, subprocess.SubprocessError):
        return None
    return done.stdout.strip()


def _project() -> dict[str, Any]:
    """The project's version, and its commit and uncommitted changes when it runs from a git checkout."""
    commit = _git("rev-parse", "HEAD") if (PROJECT_ROOT / ".git").exists() else None
    changes = _git("status", "--porcelain") if commit else None
    return {
        "version": _version("adni_lightning"),
        "git_commit": commit,
        "git_dirty": None if changes is None else bool(changes),
    }


def environment() -> dict[str, Any]:
    """Everything this process's figures may depend on besides the config, as plain JSON values."""
    gpus = [torch.cuda.get_device_name(i) for i in range(torch.cuda.device_count())]
    return {
        "date": datetime.datetime.now(datetime.timezone.utc).isoformat(timespec="seconds"),
        "command": shlex.join([Path(sys.orig_argv[0]).name, *sys.orig_argv[1:]]),  # as typed: `python -m …`
        "python": f"{platform.python_implementation()} {platform.python_version()}",
        "os": platform.platform(),
        "packages": {name: _version(name) for name in PACKAGES},
        "torch": _torch_build(),
        "cpu": _cpu(),
        "gpus": gpus,
        "cudnn": torch.backends.cudnn.version() if gpus else None,
        "kernel_variables": {k: os.environ[k] for k in KERNEL_VARIABLES if k in os.environ},
        "project": _project(),
    }


def write_json(data: Any, path: Path) -> None:
    """Write ``data`` as JSON to ``path`` atomically: a reader sees the old file or the new one, never half."""
    path.parent.mkdir(parents=True, exist_ok=True)
    with tempfile.NamedTemporaryFile("w", dir=path.parent, prefix=f".{path.name}.", delete=False) as temp:
        try:
            temp.write(json.dumps(data, indent=2) + "\n")
        except BaseException:
            os.unlink(temp.name)
            raise
    os.replace(temp.name, path)


def summary(record: dict[str, Any]) -> str:
    """One line naming an environment: CPU, kernels, torch and its oneDNN, and any variable that picks kernels."""
    build = record["torch"]
    onednn = next(filter(None, (re.match(r"Intel\(R\) MKL-DNN (v[\d.]+)", lib) for lib in build["libraries"])), None)
    torch_build = f"torch {build['version']}" + (f" (oneDNN {onednn[1]})" if onednn else "")
    parts = [
        f"{record['cpu']['model']} ({record['cpu']['id']}, {record['cpu']['cores']} cores, "
        f"ATen kernels {build['cpu_capability']})",
        torch_build,
        f"Python {record['python'].split()[-1]}",
    ]
    if record["gpus"]:
        parts.insert(1, ", ".join(record["gpus"]))
    parts += [f"{name}={value}" for name, value in record["kernel_variables"].items()]
    return ", ".join(parts)


def differences(before: dict[str, Any], now: dict[str, Any]) -> list[str]:
    """What differs between two records that can move a figure: packages, torch's build and kernels, the CPU,
    kernel variables, the project's commit. One line each, ``name: before -> now``.
    """
    pairs: list[tuple[str, Any, Any]] = []
    for name in sorted(set(before["packages"]) | set(now["packages"])):
        pairs.append((name, before["packages"].get(name), now["packages"].get(name)))
    for key in ("git_version", "cuda", "libraries", "cpu_capability", "threads", "interop_threads"):
        pairs.append((f"torch {key}", before["torch"].get(key), now["torch"].get(key)))
    for key in ("model", "id", "cores"):
        pairs.append((f"CPU {key}", before["cpu"].get(key), now["cpu"].get(key)))
    gone = sorted(set(before["cpu"]["simd_flags"]) - set(now["cpu"]["simd_flags"]))
    new = sorted(set(now["cpu"]["simd_flags"]) - set(before["cpu"]["simd_flags"]))
    lines = [f"{name}: {a} -> {b}" for name, a, b in pairs if a != b]
    if gone or new:
        lines.append(f"CPU flags: {' '.join(['-' + f for f in gone] + ['+' + f for f in new])}")
    for name in sorted(set(before["kernel_variables"]) | set(now["kernel_variables"])):
        a, b = before["kernel_variables"].get(name), now["kernel_variables"].get(name)
        if a != b:
            lines.append(f"${name}: {a or '(unset)'} -> {b or '(unset)'}")
    for key in ("python", "gpus", "cudnn"):
        if before.get(key) != now.get(key):
            lines.append(f"{key}: {before.get(key)} -> {now.get(key)}")
    if before["project"]["git_commit"] != now["project"]["git_commit"]:
        lines.append(f"project commit: {before['project']['git_commit']} -> {now['project']['git_commit']}")
    return lines


class EnvironmentRecord(Callback):
    """Writes :func:`environment` to ``<default_root_dir>/environment.json`` when a fit starts (rank 0 only).

    A resumed fit may run elsewhere: the earlier records of the folder are kept, newest first, under ``previous``.
    """

    def on_fit_start(self, trainer: L.Trainer, pl_module: L.LightningModule) -> None:
        if not trainer.is_global_zero:
            return
        path = Path(trainer.default_root_dir) / FILENAME
        record = environment()
        if path.exists():
            earlier = read_record(path)
            record["previous"] = [{k: v for k, v in earlier.items() if k != "previous"}, *earlier.get("previous", [])]
        write_json(record, path)


def read_record(path: Path) -> dict[str, Any]:
    """An ``environment.json`` that :class:`EnvironmentRecord` wrote."""
    try:
        record = json.loads(path.read_text())
    except (OSError, UnicodeDecodeError, json.JSONDecodeError) as error:
        reason = error.strerror if isinstance(error, OSError) else str(error)
    else:
        if isinstance(record, dict) and isinstance(record.get("packages"), dict):
            return record
        reason = "no 'packages' entry"
    raise EnvironmentRecordError(
        f"{path} is not an environment record of an earlier fit ({reason}): delete it, or run in another "
        "folder (--trainer.default_root_dir)"
    )


def lock_differences(lock: Path) -> list[str]:
    """Each package pinned in ``lock`` (``make lock``'s ``name==version`` lines) that is installed at another
    version or not at all, as ``name: installed X, lock Y``; a local label (``+cpu``) is not a difference.
    """
    lines = []
    for line in lock.read_text().splitlines():
        name, sep, pinned = line.partition("==")
        if line.startswith("#") or not sep:
            continue
        installed = _version(name.strip())
        if (installed or "").split("+")[0] != pinned.strip():
            lines.append(f"{name.strip()}: installed {installed or 'nothing'}, lock {pinned.strip()}")
    return lines
