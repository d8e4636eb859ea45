"""Test-only callbacks and the arguments of a tiny, fast training run (its options: tests/conf/tiny.yaml)."""

from __future__ import annotations

import copy
import multiprocessing
import os
import shutil
import signal
from collections.abc import Callable
from pathlib import Path
from typing import Any

import lightning as L
import torch
from lightning.pytorch.callbacks import Callback

from adni_lightning.cli import DEFAULT_CONFIG

#: The tiny run (TINY_CONFIG: a 2-stage ResNet of width 4/8 on 16³ inputs) stacked on the packaged synthetic config.
TINY_CONFIG = Path(__file__).parent / "conf" / "tiny.yaml"
TINY_CONFIGS = ["--config", str(DEFAULT_CONFIG), "--config", str(TINY_CONFIG)]


def tiny_args(subcommand: str, root: Path, data_dir: Path, *extra: str) -> list[str]:
    """``subcommand`` on the tiny run's configs, with the test cohort in ``data_dir``, run in ``root``."""
    return [
        subcommand,
        *TINY_CONFIGS,
        "--trainer.default_root_dir",
        str(root),
        "--data.manifest.data_dir",
        str(data_dir),
        "--data.cache_dir",
        str(root.parent / "cache"),
        *extra,
    ]


def trained_run(base: Path, cohort_template: Path, *extra: str) -> dict[str, Path]:
    """One epoch of the tiny model on a copy of the session cohort, in ``base``: a run for tests to evaluate,
    resume or copy. Returns the folder, the cohort, the run's root and its last checkpoint.
    """
    from adni_lightning.main import main

    cohort = base / "K1data"
    shutil.copytree(cohort_template, cohort)
    main(tiny_args("fit", base / "run", cohort, *extra, "--trainer.max_epochs", "1"))
    return {"base": base, "cohort": cohort, "run": base / "run", "ckpt": base / "run" / "checkpoints" / "last.ckpt"}


class KillAtStep(Callback):
    """SIGKILL this process after optimizer step ``step``, as a crash or a pre-empted node would."""

    def __init__(self, step: int) -> None:
        self.step = step

    def on_train_batch_end(self, trainer: L.Trainer, *args: Any) -> None:
        if trainer.global_step == self.step:
            os.kill(os.getpid(), signal.SIGKILL)


class InjectNaN(Callback):
    """Put a NaN into the age feature of the second image of batch ``batch_idx``."""

    def __init__(self, batch_idx: int = 1) -> None:
        self.batch_idx = batch_idx

    def on_train_batch_start(
        self, trainer: L.Trainer, pl_module: L.LightningModule, batch: Any, batch_idx: int
    ) -> None:
        if batch_idx == self.batch_idx:
            batch["tabular"][1, 0] = torch.nan


class RecordConvDtype(Callback):
    """Remembers the dtype of the first Conv3d's output during training (autocast check)."""

    def __init__(self) -> None:
        self.dtypes: set[torch.dtype] = set()

    def on_fit_start(self, trainer: L.Trainer, pl_module: L.LightningModule) -> None:
        conv = next(m for m in pl_module.modules() if isinstance(m, torch.nn.Conv3d))
        conv.register_forward_hook(lambda module, inputs, output: self.dtypes.add(output.dtype))


def as_nobody(action: Callable[[], object]) -> str:
    """Run ``action`` in a forked child that runs as ``nobody`` when the tests run as root (root writes into a
    read-only folder anyway); the project error's message, "" when it succeeded, or the name of any other exception.
    """
    from adni_lightning.errors import ProjectError

    context = multiprocessing.get_context("fork")
    messages = context.Queue()

    def child() -> None:
        if os.geteuid() == 0:
            os.setgroups([])
            os.setgid(65534)
            os.setuid(65534)
        try:
            action()
            messages.put("")
        except ProjectError as err:
            messages.put(str(err))
        except Exception as err:  # noqa: BLE001 (sent back whole, so that the test shows it)
            messages.put(f"not a project error: {type(err).__name__}: {err}")

    process = context.Process(target=child)
    process.start()
    message = messages.get(timeout=300)
    process.join()
    return message


def with_dotted(mapping: dict, **values: object) -> dict:
    """A deep copy of nested ``mapping`` with dotted keys set, e.g. ``with_dotted(m, **{"trainer.max_epochs": 5})``."""
    out = copy.deepcopy(mapping)
    for dotted, value in values.items():
        *groups, name = dotted.split(".")
        target = out
        for group in groups:
            target = target[group]
        target[name] = value
    return out
