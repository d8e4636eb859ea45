"""Interpretation tests run many small forward passes: one torch thread each.

On a machine whose cores other jobs keep busy, OpenMP's spin-waiting threads make a tiny model's forward pass
tens of times slower than a single thread (measured: 0.18 s against 0.005 s for 16 volumes of 16³).
"""

from __future__ import annotations

import pytest
import torch


@pytest.fixture(scope="module", autouse=True)
def one_thread():
    """Module scope, so that it also covers the module-scoped fixtures that train the models."""
    threads = torch.get_num_threads()
    torch.set_num_threads(1)
    yield
    torch.set_num_threads(threads)
