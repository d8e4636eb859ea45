"""A run's life on the command line: signals end it as a failure that says how to resume, a resume cannot change
what the run is, one process writes a run folder, and mistakes are refused before anything is written.
"""

from __future__ import annotations

import time
from typing import Any

import lightning as L
from lightning.pytorch.callbacks import Callback


class SlowBatches(Callback):
    """Sleep after each training batch, so a signal sent from outside lands inside an epoch."""

    def __init__(self, seconds: float = 0.3) -> None:
        self.seconds = seconds

    def on_train_batch_end(self, trainer: L.Trainer, *args: Any) -> None:
        time.sleep(self.seconds)
