"""Seeds derived from the run's seed and a counter (epoch or step), so randomness survives a resume.

A resumed run cannot reproduce the global generators' state at an epoch or step, but it knows the run's
seed and where it is: shuffling, augmentation and dropout all draw from seeds made here.
"""

from __future__ import annotations

import os


def run_seed(default: int = 0) -> int:
    """The seed LightningCLI's ``seed_everything`` set for this run (``PL_GLOBAL_SEED``), else ``default``."""
    return int(os.environ.get("PL_GLOBAL_SEED", default))


def derived_seed(seed: int, counter: int) -> int:
    """A distinct seed per ``(seed, counter)`` pair, in the range every generator accepts (numpy: < 2**32)."""
    return (seed * 1_000_003 + counter) % 2**32
