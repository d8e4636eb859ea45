"""Many workers, one study: processes on one journal run exactly the requested trials, and a dead worker's trial
is failed and run again, with its folder, by the next worker to ask.
"""

from __future__ import annotations

import os
import signal
import subprocess
import sys
import time
from pathlib import Path

import optuna
from optuna.storages import BaseStorage
from optuna.trial import TrialState

from adni_lightning.study import FOLDER, RETRY_OF, WORKER, Search, Worker, open_storage

WORKER_SCRIPT = """
import json, sys, time
from pathlib import Path
import optuna
from adni_lightning.study import Search, Worker, open_storage

root, trials, seconds = Path(sys.argv[1]), int(sys.argv[2]), float(sys.argv[3])
storage = open_storage(None, root)
optuna.create_study(storage=storage, study_name="s", direction="maximize", load_if_exists=True)

def objective(trial):
    x = trial.suggest_float("x", 0.0, 1.0)
    (root / f"started_{trial.number}").touch()
    time.sleep(seconds)
    return x

with Worker(root) as worker:
    search = Search("s", storage, trials, root / "s.lock", worker,
                    lambda n: optuna.samplers.RandomSampler(seed=n), optuna.pruners.NopPruner())
    search.run(objective, float("inf"), wait=False)
    search.run(objective, float("inf"), wait=True)
"""


def _worker(root: Path, trials: int, seconds: float) -> subprocess.Popen:
    return subprocess.Popen([sys.executable, "-c", WORKER_SCRIPT, str(root), str(trials), str(seconds)])


def _search(root: Path, storage: BaseStorage | str, trials: int, worker: Worker) -> Search:
    """The test's study ``s`` in ``root``: random points seeded by trial number, no pruning."""
    sampler = lambda n: optuna.samplers.RandomSampler(seed=n)  # noqa: E731
    return Search("s", storage, trials, root / "s.lock", worker, sampler, optuna.pruners.NopPruner())


def _trials(root: Path) -> list[optuna.trial.FrozenTrial]:
    return optuna.load_study(study_name="s", storage=open_storage(None, root)).trials


def test_two_workers_on_one_journal_run_exactly_the_requested_trials(tmp_path):
    workers = [_worker(tmp_path, 7, 0.3) for _ in range(2)]
    assert [w.wait(timeout=120) for w in workers] == [0, 0]
    trials = _trials(tmp_path)
    numbers = [t.number for t in trials]
    assert sorted(numbers) == list(range(7))  # unique, and no trial beyond the count
    assert [t.state for t in trials] == [TrialState.COMPLETE] * 7
    assert len({t.user_attrs[WORKER] for t in trials}) == 2  # both took trials
    assert len({t.params["x"] for t in trials}) == 7  # each trial's sampler seeded by its number: no duplicates


def test_a_killed_worker_loses_only_its_running_trial(tmp_path):
    doomed = _worker(tmp_path, 3, 60.0)
    deadline = time.monotonic() + 60
    while not (tmp_path / "started_0").exists() and time.monotonic() < deadline:
        time.sleep(0.1)
    os.kill(doomed.pid, signal.SIGKILL)
    doomed.wait()
    assert [t.state for t in _trials(tmp_path)] == [TrialState.RUNNING]  # left behind, as after a crash

    storage = open_storage(None, tmp_path)
    folders = []

    def objective(trial: optuna.Trial) -> float:
        folders.append(trial.user_attrs[FOLDER])
        return trial.suggest_float("x", 0.0, 1.0)

    with Worker(tmp_path) as worker:
        search = _search(tmp_path, storage, 3, worker)
        search.run(objective, float("inf"), wait=True)
    trials = _trials(tmp_path)
    assert [t.state for t in trials] == [TrialState.FAIL, *[TrialState.COMPLETE] * 3]
    retry = trials[1]
    assert retry.user_attrs[RETRY_OF] == 0 and retry.user_attrs[FOLDER] == "trial_0"
    assert retry.params == trials[0].params  # the dead trial's point, run again in its folder
    assert folders == ["trial_0", "trial_2", "trial_3"]


def test_a_live_worker_on_another_process_is_alive_and_an_ended_one_is_not(tmp_path):
    holder = subprocess.Popen(
        [
            sys.executable,
            "-c",
            "import sys, time; from pathlib import Path; from adni_lightning.study import Worker\n"
            "with Worker(Path(sys.argv[1])) as w:\n    print(w.name, flush=True); time.sleep(60)",
            str(tmp_path),
        ],
        stdout=subprocess.PIPE,
        text=True,
    )
    assert holder.stdout is not None
    name = holder.stdout.readline().strip()
    with Worker(tmp_path) as me:
        assert me.alive(name) and me.alive(me.name) and me.peers_on_host() == 2
        holder.kill()
        holder.wait()
        assert not me.alive(name) and me.peers_on_host() == 1


def test_pruned_trials_count_and_any_optuna_storage_url_works(tmp_path):
    storage = open_storage(f"sqlite:///{tmp_path / 'study.db'}", tmp_path)
    assert storage == f"sqlite:///{tmp_path / 'study.db'}"
    optuna.create_study(storage=storage, study_name="s", direction="maximize")

    def objective(trial: optuna.Trial) -> float:
        x = trial.suggest_float("x", 0.0, 1.0)
        trial.report(x, 0)
        if trial.number % 2:
            raise optuna.TrialPruned()
        return x

    with Worker(tmp_path) as worker:
        search = _search(tmp_path, storage, 4, worker)
        search.run(objective, float("inf"), wait=True)
        best = search.best()
    states = [t.state for t in optuna.load_study(study_name="s", storage=storage).trials]
    assert states == [TrialState.COMPLETE, TrialState.PRUNED] * 2  # a pruned trial fills its slot
    assert best.number in (0, 2)
