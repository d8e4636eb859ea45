"""Interpretation tests run many small forward passes of a tiny trained model: one torch thread each.

On a machine whose cores other jobs keep busy, OpenMP's spin-waiting threads make a tiny model's forward pass
tens of times slower than a single thread (measured: 0.18 s against 0.005 s for 16 volumes of 16³).
"""

from __future__ import annotations

from pathlib import Path

import pytest
import torch

from tests.helpers import trained_run


@pytest.fixture(scope="module", autouse=True)
def one_thread():
    """Module scope, so that it also covers the module-scoped fixtures that train the models."""
    threads = torch.get_num_threads()
    torch.set_num_threads(1)
    yield
    torch.set_num_threads(threads)


@pytest.fixture(scope="module")
def run(tmp_path_factory, cohort_template) -> dict[str, Path]:
    """A tiny model trained for one epoch on a copy of the session cohort (no test split), once per module."""
    return trained_run(tmp_path_factory.mktemp("interpret"), cohort_template)
