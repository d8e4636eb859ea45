"""A training stopped by a signal ends as a failure (exit status 128 + the signal's number), not as a success.

Lightning turns SIGTERM into a ``SystemExit`` without a code: a job that SLURM cancelled, or that a person stopped,
exits 0 and is recorded as done, and SIGUSR1 (outside SLURM's requeue) kills it outright. :class:`StopOnSignals`
handles SIGTERM, SIGINT and SIGUSR1 while ``fit`` runs: once Lightning's loops run, the first one stops training after
the current batch, as Lightning does for SIGTERM (a second one stops at once); before that (data preparation, the
cache build) it stops at once. Nothing is saved mid-epoch: ``last.ckpt`` holds the last finished epoch, and a resume
restarts the interrupted epoch bit for bit (a mid-epoch checkpoint would resume on other batches). Where SLURM's
auto-requeue is on, its signal (SIGUSR1) stays Lightning's: it saves ``hpc_ckpt_N.ckpt`` and requeues the job.
"""

from __future__ import annotations

import signal
import threading
from collections.abc import Callable
from pathlib import Path
from types import FrameType, TracebackType
from typing import Any

from lightning.pytorch import Trainer
from lightning.pytorch.plugins.environments import SLURMEnvironment
from lightning.pytorch.utilities.exceptions import SIGTERMException

STOP_SIGNALS = (signal.SIGTERM, signal.SIGINT, signal.SIGUSR1)

#: What ``signal.signal`` installs and returns: a function, ``SIG_DFL``/``SIG_IGN``, or ``None`` (not set from Python).
_Handler = Callable[[int, FrameType | None], Any] | int | signal.Handlers | None


class RunInterrupted(SystemExit):
    """``fit`` in ``root`` stopped by a signal: the exit status is 128 + its number; ``message`` says how to go on."""

    def __init__(self, signum: int, message: str, root: str | Path) -> None:
        super().__init__(128 + signum)
        self.signum = signum
        self.message = message
        self.root = Path(root)


def requeue_signal(trainer: Trainer) -> int | None:
    """The signal on which Lightning saves an HPC checkpoint and requeues the job (SLURM auto-requeue), or ``None``."""
    # What Lightning's signal connector reads: a single-device strategy has no cluster_environment of its own.
    environment = trainer._accelerator_connector.cluster_environment
    if isinstance(environment, SLURMEnvironment) and environment.auto_requeue:
        return environment.requeue_signal
    return None


class StopOnSignals:
    """Within the block, SIGTERM, SIGINT and SIGUSR1 stop ``trainer`` (see the module); ``signum`` is the first one."""

    def __init__(self, trainer: Trainer) -> None:
        self.trainer = trainer
        self.signum: int | None = None
        self._previous: dict[int, _Handler] = {}

    def __enter__(self) -> StopOnSignals:
        if threading.current_thread() is not threading.main_thread():
            return self  # Python takes signals in the main thread only (Lightning skips its handlers there too)
        for signum in STOP_SIGNALS:
            if signum != requeue_signal(self.trainer):
                self._previous[signum] = signal.signal(signum, self._handle)
        return self

    def __exit__(self, *exc: type[BaseException] | BaseException | TracebackType | None) -> None:
        for signum, handler in self._previous.items():
            signal.signal(signum, handler)

    def _handle(self, signum: int, frame: FrameType | None) -> None:
        first = self.signum is None
        if first:
            self.signum = signum
        # Lightning installs its own SIGTERM handler (which calls this one) while its loops run: they stop after the
        # batch at hand when its flag is set, on every rank.
        looping = signal.getsignal(signal.SIGTERM) != self._handle
        if first and looping:
            self.trainer._signal_connector.received_sigterm = True  # the flag its SIGTERM handler sets
            return
        raise SIGTERMException
