"""Many workers, one Optuna study: exactly the requested number of trials, and a dead worker's trial run again.

Every worker is the same command started again (another process, another machine, a SLURM array task) on one
folder and one Optuna storage: by default a journal file in that folder (no server, works on a shared
filesystem), or any storage URL Optuna accepts. Three locks, all ``flock`` on files in the folder, which the kernel
releases when a process ends however it ends (``kill -9`` included):

- the **study lock**, held for a moment while a worker counts the trials and asks for one, so two workers never
  both take the last slot (Optuna alone would overshoot the count by up to one trial per worker);
- the **worker lock**, held for the worker's life: a trial left ``RUNNING`` by a worker whose lock is free is
  dead. The next worker to ask marks it failed and enqueues its parameters again (``retry_of``), and the retry
  trains in the dead trial's folder, so its runs resume from their last checkpoints;
- a **job lock** per refit or fold, so that each is run by one worker while the others move on.

Each trial's sampler is seeded from the study's seed and the trial's number, so one worker is reproducible and
workers that ask at the same moment draw different points.
"""

from __future__ import annotations

import contextlib
import fcntl
import logging
import os
import socket
import time
from collections.abc import Callable, Iterator
from dataclasses import dataclass
from pathlib import Path

import optuna
from optuna.pruners import BasePruner
from optuna.samplers import BaseSampler
from optuna.storages import BaseStorage
from optuna.storages.journal import JournalFileBackend, JournalStorage
from optuna.trial import FrozenTrial, TrialState

from adni_lightning.errors import ProjectError

log = logging.getLogger(__name__)

JOURNAL_FILE = "study.journal"
WORKERS_DIR = "workers"
#: User attributes of a trial: the worker that ran it, the folder its runs live in, the trial it re-runs.
WORKER, FOLDER, RETRY_OF = "worker", "folder", "retry_of"
FINISHED = (TrialState.COMPLETE, TrialState.PRUNED)


def open_storage(storage: str | None, root: Path) -> BaseStorage | str:
    """``storage`` as Optuna takes it, or the default journal file ``root/study.journal``."""
    if storage:
        return storage
    return JournalStorage(JournalFileBackend(str(root / JOURNAL_FILE)))


@contextlib.contextmanager
def file_lock(path: Path, wait: bool = True) -> Iterator[bool]:
    """Hold the ``flock`` of ``path`` inside the block; with ``wait=False`` yield ``False`` at once when it is held."""
    path.parent.mkdir(parents=True, exist_ok=True)
    fd = os.open(path, os.O_RDWR | os.O_CREAT | os.O_CLOEXEC, 0o644)
    try:
        try:
            fcntl.flock(fd, fcntl.LOCK_EX | (0 if wait else fcntl.LOCK_NB))
        except BlockingIOError:
            yield False
            return
        yield True
    finally:
        os.close(fd)  # closing the descriptor releases the lock


def _is_held(path: Path) -> bool:
    """Whether a live process holds the ``flock`` of ``path`` (never this one's own worker lock: it is held)."""
    if not path.exists():
        return False
    with file_lock(path, wait=False) as taken:
        return not taken


class Worker:
    """This process as a worker of the studies in ``root``: it holds ``root/workers/<host>-<pid>.lock`` while alive."""

    def __init__(self, root: Path) -> None:
        self.name = f"{socket.gethostname()}-{os.getpid()}"
        self.root = root
        self.path = root / WORKERS_DIR / f"{self.name}.lock"
        self._lock = contextlib.ExitStack()

    def __enter__(self) -> Worker:
        self._lock.enter_context(file_lock(self.path))
        return self

    def __exit__(self, *exc: object) -> None:
        self._lock.close()
        with contextlib.suppress(OSError):
            self.path.unlink()

    def peers_on_host(self) -> int:
        """Workers alive on this machine, this one included."""
        host = socket.gethostname()
        return sum(_is_held(p) for p in (self.root / WORKERS_DIR).glob(f"{host}-*.lock"))

    def alive(self, name: str) -> bool:
        return name == self.name or _is_held(self.root / WORKERS_DIR / f"{name}.lock")


@dataclass
class Search:
    """One study searched by many workers until ``trials`` trials have finished (completed or pruned)."""

    name: str
    storage: BaseStorage | str
    trials: int
    lock: Path
    worker: Worker
    sampler: Callable[[int], BaseSampler]
    pruner: BasePruner

    def study(self, number: int = 0) -> optuna.Study:
        """The study, its sampler seeded for trial ``number``."""
        return optuna.load_study(
            study_name=self.name, storage=self.storage, sampler=self.sampler(number), pruner=self.pruner
        )

    def trials_in(self, *states: TrialState) -> list[FrozenTrial]:
        return self.study().get_trials(deepcopy=False, states=states or None)

    def _fail_dead(self, study: optuna.Study) -> None:
        """Mark the running trials of dead workers failed and enqueue their parameters again (under the lock)."""
        for trial in study.get_trials(deepcopy=False, states=(TrialState.RUNNING,)):
            owner = trial.user_attrs.get(WORKER)
            if owner is None or self.worker.alive(str(owner)):
                continue
            _fail_and_queue(study, trial.number, trial.params, trial.user_attrs)
            log.warning(
                "%s: trial %d of worker %s died with it; its parameters are queued again (runs resume in %s)",
                self.name,
                trial.number,
                owner,
                trial.user_attrs.get(FOLDER),
            )

    def ask(self) -> tuple[optuna.Study, optuna.Trial] | None:
        """A trial for this worker (a queued retry first), or ``None`` when the running ones fill the count."""
        with file_lock(self.lock):
            study = self.study()
            self._fail_dead(study)
            trials = study.get_trials(deepcopy=False)
            states = [t.state for t in trials]
            taken = sum(s in (*FINISHED, TrialState.RUNNING) for s in states)
            if taken >= self.trials and TrialState.WAITING not in states:
                return None
            study = self.study(len(trials))  # the number ask() gives to a new trial
            trial = study.ask()
            trial.set_user_attr(WORKER, self.worker.name)
            if FOLDER not in trial.user_attrs:
                trial.set_user_attr(FOLDER, f"trial_{trial.number}")
            return study, trial

    def run(self, objective: Callable[[optuna.Trial], float], deadline: float, wait: bool) -> None:
        """Run trials until the count is reached or ``deadline`` passes; with ``wait``, then also wait for the other
        workers' running trials (failing those a dead worker left), so that the study is final on return.
        """
        while True:
            asked = self.ask() if time.monotonic() < deadline else None
            if asked is not None:
                _run_trial(*asked, objective)
                continue
            if wait:
                with file_lock(self.lock):
                    self._fail_dead(self.study())
            if not wait or not self.trials_in(TrialState.RUNNING):
                return
            time.sleep(2.0)

    def best(self) -> FrozenTrial:
        """The best completed trial; refused in one line when no trial completed."""
        if not self.trials_in(TrialState.COMPLETE):
            raise StudyError(f"{self.name}: no trial completed, so there is no configuration to choose")
        return self.study().best_trial


class StudyError(ProjectError, RuntimeError):
    """A study that cannot give what is asked of it."""


def _fail_and_queue(study: optuna.Study, number: int, params: dict, attrs: dict) -> None:
    """Fail trial ``number`` and queue its parameters again, to train on in the same folder."""
    study.tell(number, state=TrialState.FAIL)
    retry = {RETRY_OF: attrs.get(RETRY_OF, number), FOLDER: attrs.get(FOLDER, f"trial_{number}")}
    study.enqueue_trial(params, user_attrs=retry)


def _run_trial(study: optuna.Study, trial: optuna.Trial, objective: Callable[[optuna.Trial], float]) -> None:
    """Run and tell one trial. An interrupted one (Ctrl-C, a stop signal) is queued again; an error is not: it
    would fail again, so it ends the worker with its own message.
    """
    try:
        value = objective(trial)
    except optuna.TrialPruned:
        study.tell(trial, state=TrialState.PRUNED)
        return
    except (KeyboardInterrupt, SystemExit):
        _fail_and_queue(study, trial.number, trial.params, trial.user_attrs)
        raise
    except BaseException:
        study.tell(trial, state=TrialState.FAIL)
        raise
    study.tell(trial, value)
