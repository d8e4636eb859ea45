"""Shared fixtures: small synthetic cohorts in the real ADNI download format."""

from __future__ import annotations

import os
import shutil
from collections.abc import Iterator
from pathlib import Path

import nibabel as nib
import numpy as np
import pytest

LIA_1MM = np.array([[-1.0, 0, 0, 128], [0, 0, 1, -128], [0, -1, 0, 128], [0, 0, 0, 1]])


def write_mgz(path: Path, data: np.ndarray, affine: np.ndarray = LIA_1MM) -> Path:
    """Save an int16 label map as FastSurfer does."""
    path.parent.mkdir(parents=True, exist_ok=True)
    nib.save(nib.MGHImage(data.astype(np.int16), affine), path)
    return path


@pytest.fixture(scope="session", autouse=True)
def user_cache(tmp_path_factory: pytest.TempPathFactory) -> Iterator[Path]:
    """A temporary ``$XDG_CACHE_HOME`` for the whole suite (and the commands it runs in subprocesses): a real-data
    module's default cache goes there, never into the real ``~/.cache``.
    """
    before = os.environ.get("XDG_CACHE_HOME")
    os.environ["XDG_CACHE_HOME"] = str(tmp_path_factory.mktemp("xdg_cache"))
    yield Path(os.environ["XDG_CACHE_HOME"])
    if before is None:
        del os.environ["XDG_CACHE_HOME"]
    else:
        os.environ["XDG_CACHE_HOME"] = before


@pytest.fixture(scope="session")
def cohort_template(tmp_path_factory: pytest.TempPathFactory) -> Path:
    """A 24-subject cohort at 32³ (some with two visits), generated once per test session."""
    from adni_lightning.synth import generate_cohort

    out = tmp_path_factory.mktemp("cohort")
    generate_cohort(out, subjects=24, size=32, seed=3, workers=1)
    return out


@pytest.fixture
def cohort(cohort_template: Path, tmp_path: Path) -> Path:
    """A private copy of the session cohort that a test may damage."""
    target = tmp_path / "K1data"
    shutil.copytree(cohort_template, target)
    return target
