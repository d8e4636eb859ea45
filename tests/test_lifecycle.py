"""A run's life on the command line: a signal ends ``fit`` as a failure that says how to resume, a resume cannot
change what the run is, one process writes a run folder, and mistakes are refused before anything is written.
"""

from __future__ import annotations

import os
import shlex
import signal
import subprocess
import sys
import time
from pathlib import Path
from typing import Any

import lightning as L
import pytest
import torch
from lightning.pytorch.callbacks import Callback
from lightning.pytorch.plugins.environments import SLURMEnvironment

from adni_lightning.main import PROG, main, run_from_command_line
from adni_lightning.run_lock import RunLockedError, run_lock
from adni_lightning.stopping import StopOnSignals
from tests.helpers import tiny_args, trained_run

REPO = Path(__file__).resolve().parents[1]
SLOW = "--trainer.callbacks+=tests.test_lifecycle.SlowBatches"


class SlowBatches(Callback):
    """Sleep after each training batch, so a signal sent from outside lands inside an epoch."""

    def __init__(self, seconds: float = 0.3) -> None:
        self.seconds = seconds

    def on_train_batch_end(self, trainer: L.Trainer, *args: Any) -> None:
        time.sleep(self.seconds)


def _start_fit(args: list[str], env: dict[str, str] | None = None) -> subprocess.Popen:
    """``python -m adni_lightning`` with ``args`` in a process of its own (with ``env`` added), its stderr kept."""
    return subprocess.Popen(
        [sys.executable, "-m", "adni_lightning", *args],
        cwd=REPO,
        env={**os.environ, "PYTHONPATH": str(REPO), **(env or {})},
        stdout=subprocess.DEVNULL,
        stderr=subprocess.PIPE,
        text=True,
    )


def _wait_for(path: Path, process: subprocess.Popen) -> None:
    deadline = time.monotonic() + 300
    while not path.exists():
        assert process.poll() is None, process.stderr.read()[-3000:]
        assert time.monotonic() < deadline, f"{path} never appeared"
        time.sleep(0.05)


def _files(root: Path) -> dict[str, bytes]:
    """Every file under ``root`` with its bytes."""
    return {str(p.relative_to(root)): p.read_bytes() for p in sorted(root.rglob("*")) if p.is_file()}


def _command_line(args: list[str], monkeypatch, capsys) -> tuple[int, list[str]]:
    """Run ``args`` as ``python -m adni_lightning`` does; its exit status and stderr lines."""
    monkeypatch.setattr(sys, "argv", [PROG, *args])
    with pytest.raises(SystemExit) as exit_:
        run_from_command_line()
    return exit_.value.code, capsys.readouterr().err.splitlines()


@pytest.mark.parametrize("signum", [signal.SIGTERM, signal.SIGINT, signal.SIGUSR1], ids=lambda s: s.name)
def test_a_signal_stops_fit_as_a_failure_that_says_how_to_resume(cohort, tmp_path, signum):
    run = tmp_path / "run"
    args = tiny_args("fit", run, cohort, "--trainer.max_epochs", "3", SLOW)
    process = _start_fit(args)
    last = run / "checkpoints" / "last.ckpt"
    _wait_for(last, process)  # the first epoch is saved: the signal lands in the second
    process.send_signal(signum)
    _, stderr = process.communicate(timeout=120)
    assert process.returncode == 128 + signum
    resume = shlex.join(["python", "-m", "adni_lightning", *args, "--ckpt_path", "last"])
    assert stderr.splitlines()[-1] == (
        f"{PROG} fit: stopped by {signum.name}; {last} holds 1 finished epoch(s) and a resume restarts the next one: "
        f"{resume}"
    )
    assert not (run / ".lock").exists()
    steps = torch.load(last, weights_only=False)["global_step"]
    resumed = main(shlex.split(resume)[3:])
    assert resumed.trainer.current_epoch == 3 and resumed.trainer.global_step == 3 * steps
    if signum == signal.SIGTERM:  # the interrupted epoch is trained again as the uninterrupted run trains it
        straight = main(tiny_args("fit", tmp_path / "straight", cohort, "--trainer.max_epochs", "3"))
        for name, tensor in straight.model.state_dict().items():
            torch.testing.assert_close(resumed.model.state_dict()[name], tensor, rtol=0, atol=0, msg=name)


def test_a_second_fit_in_a_folder_in_use_is_refused_naming_the_other_process(cohort, tmp_path, monkeypatch, capsys):
    run = tmp_path / "run"
    process = _start_fit(tiny_args("fit", run, cohort, "--trainer.max_epochs", "50", SLOW))
    try:
        _wait_for(run / "checkpoints" / "last.ckpt", process)
        before = _files(run / "checkpoints")
        code, stderr = _command_line(tiny_args("fit", run, cohort, "--ckpt_path", "last"), monkeypatch, capsys)
        assert code == 1
        assert stderr == [
            f"{PROG} fit: error: {run} is in use by pid {process.pid}, which is training there: one run per folder; "
            "wait for it to end, stop it, or train in another folder (--trainer.default_root_dir)"
        ]
        assert (run / ".lock").read_text() == f"{process.pid}\n"
    finally:
        process.send_signal(signal.SIGTERM)
        process.communicate(timeout=120)
    assert process.returncode == 128 + signal.SIGTERM
    assert set(before) <= set(_files(run / "checkpoints")) and not (run / ".lock").exists()


def test_the_lock_goes_with_its_process_even_on_kill_9(tmp_path):
    root = tmp_path / "run"
    holder = subprocess.Popen(
        [
            sys.executable,
            "-c",
            f"from adni_lightning.run_lock import run_lock\nwith run_lock({str(root)!r}):\n"
            "    print('held', flush=True)\n    input()",
        ],
        cwd=REPO,
        env={**os.environ, "PYTHONPATH": str(REPO)},
        stdin=subprocess.PIPE,
        stdout=subprocess.PIPE,
        text=True,
    )
    assert holder.stdout.readline() == "held\n"
    with pytest.raises(RunLockedError, match=f"^{root} is in use by pid {holder.pid}, which is training there"):
        with run_lock(root):
            pass
    holder.kill()
    holder.wait()
    assert (root / ".lock").exists()  # left behind by kill -9, but no longer locked
    with run_lock(root) as lock:
        assert lock.read_text() == f"{os.getpid()}\n"
    assert list(root.iterdir()) == []


def test_a_refused_run_leaves_no_folder_the_lock_made(tmp_path):
    with pytest.raises(ValueError), run_lock(tmp_path / "new" / "run"):
        raise ValueError("refused")
    assert list(tmp_path.iterdir()) == []


def test_slurm_auto_requeue_keeps_lightnings_requeue_signal(monkeypatch):
    """SIGUSR1 under SLURM's auto-requeue stays Lightning's (HPC checkpoint, requeue); elsewhere it stops fit."""
    for name, value in {"SLURM_NTASKS": "1", "SLURM_JOB_NAME": "train", "SLURM_JOB_ID": "7"}.items():
        monkeypatch.setenv(name, value)
    before = signal.getsignal(signal.SIGUSR1)
    for requeue in (True, False):
        trainer = L.Trainer(accelerator="cpu", devices=1, plugins=[SLURMEnvironment(auto_requeue=requeue)])
        with StopOnSignals(trainer) as stop:
            assert (signal.getsignal(signal.SIGUSR1) is before) == requeue
            assert signal.getsignal(signal.SIGTERM) == stop._handle
        assert signal.getsignal(signal.SIGUSR1) is before


@pytest.fixture(scope="module")
def finished(tmp_path_factory, cohort_template) -> dict[str, Path]:
    """A finished one-epoch run the refusal tests below must leave byte for byte as it is."""
    return trained_run(tmp_path_factory.mktemp("finished"), cohort_template)


REFUSALS = {
    "another learning rate": (
        ["fit", "--trainer.max_epochs", "2", "--ckpt_path", "last", "--model.optimizer.init_args.lr", "0.01"],
        "fit: error: --ckpt_path last ({ckpt}) was trained with other options than this run asks for: "
        "model.optimizer.init_args.lr: checkpoint 0.001, config 0.01; only the run's length, logging, paths and "
        "hardware may change on resume (docs/CHECKS.md): give the checkpoint's values, or train a new run in another "
        "--trainer.default_root_dir",
    ),
    "another batch size": (
        ["fit", "--trainer.max_epochs", "2", "--ckpt_path", "last", "--data.loader.batch_size", "2"],
        "fit: error: --ckpt_path last ({ckpt}) was trained with other options than this run asks for: "
        "data.loader.batch_size: checkpoint 4, config 2; only the run's length, logging, paths and "
        "hardware may change on resume (docs/CHECKS.md): give the checkpoint's values, or train a new run in another "
        "--trainer.default_root_dir",
    ),
    "a finished run": (
        ["fit", "--trainer.max_epochs", "1", "--ckpt_path", "last"],
        "fit: error: --ckpt_path last ({ckpt}) has finished its 1 epoch(s) (trainer.max_epochs 1): nothing to resume; "
        "to train longer pass a larger --trainer.max_epochs (e.g. {again})",
    ),
    "predict without a checkpoint": (
        ["predict"],
        "predict: error: predict needs --ckpt_path, the checkpoint to score (e.g. --ckpt_path {ckpt})",
    ),
    "validate without a checkpoint": (
        ["validate"],
        "validate: error: validate needs --ckpt_path, the checkpoint to score (e.g. --ckpt_path {ckpt})",
    ),
    "test without a checkpoint": (
        ["test"],
        "test: error: test needs --ckpt_path, the checkpoint to score (e.g. --ckpt_path {ckpt})",
    ),
    "test without a test side": (
        ["test", "--ckpt_path", "{ckpt}"],
        "test: error: {run}/split.csv has no test side, so there is nothing to test --ckpt_path {ckpt} on: score it "
        "with validate, or train a run with data.split.test_fraction > 0",
    ),
}


@pytest.mark.parametrize("mistake", REFUSALS)
def test_a_mistake_is_one_line_and_writes_nothing(finished, monkeypatch, capsys, mistake):
    command, message = REFUSALS[mistake]
    values = {"ckpt": finished["ckpt"], "run": finished["run"]}
    subcommand, *extra = (part.format(**values) for part in command)
    args = tiny_args(subcommand, finished["run"], finished["cohort"], *extra)
    again = [*tiny_args("fit", finished["run"], finished["cohort"]), "--ckpt_path", "last", "--trainer.max_epochs", "2"]
    values["again"] = shlex.join(["python", "-m", "adni_lightning", *again])
    before = _files(finished["base"])
    code, stderr = _command_line(args, monkeypatch, capsys)
    assert code == 1
    assert stderr == [f"{PROG} {message.format(**values)}"]
    assert _files(finished["base"]) == before  # config.yaml, events, checkpoints, split: byte for byte


def test_fit_ends_with_its_last_validation_its_curves_and_commands_that_run_as_printed(cohort, tmp_path, capsys):
    run = tmp_path / "a run"  # a space, for the quoting
    weight_decay = ("--model.optimizer.init_args.weight_decay", "0.01")  # not the config's: the commands keep it
    trained = main(tiny_args("fit", run, cohort, "--trainer.max_epochs", "1", *weight_decay))
    printed = capsys.readouterr().out.splitlines()
    metrics = trained.trainer.callback_metrics
    names = ("val/acc", "val/auroc", "val/bacc", "val/f1", "val/loss")
    assert "last validation (epoch 0): " + ", ".join(f"{n} {float(metrics[n]):.3f}" for n in names) in printed
    assert f"curves:   tensorboard --logdir '{run}/tensorboard'" in printed
    commands = dict(line.split(":", 1) for line in printed if line.startswith(("resume:", "validate:", "predict:")))
    resume, validate = (shlex.split(commands[name]) for name in ("resume", "validate"))
    assert resume == ["python", "-m", "adni_lightning", *tiny_args("fit", run, cohort, *weight_decay)] + [
        "--ckpt_path",
        "last",
        "--trainer.max_epochs",
        "2",
    ]
    resumed = main(resume[3:])  # with the config's weight decay it would be refused as another run
    assert resumed.trainer.current_epoch == 2
    assert resumed.model.hparams.optimizer["init_args"]["weight_decay"] == 0.01
    validated = main(validate[3:])
    assert float(validated.trainer.callback_metrics["val/bacc"]) == pytest.approx(float(metrics["val/bacc"]))


def test_under_slurm_sigusr1_saves_and_requeues_as_lightning_does_and_the_requeued_job_resumes(cohort, tmp_path):
    run = tmp_path / "run"
    slurm = {"SLURM_NTASKS": "1", "SLURM_JOB_NAME": "train", "SLURM_JOB_ID": "7", "SLURM_PROCID": "0"}
    slurm |= {"SLURM_NODEID": "0", "SLURM_LOCALID": "0"}
    args = tiny_args("fit", run, cohort, "--trainer.max_epochs", "3", SLOW)
    process = _start_fit(args, slurm)
    _wait_for(run / "checkpoints" / "last.ckpt", process)
    process.send_signal(signal.SIGUSR1)  # Lightning's: an HPC checkpoint and `scontrol requeue`; training goes on
    _wait_for(run / "hpc_ckpt_1.ckpt", process)
    process.send_signal(signal.SIGTERM)  # what SLURM sends the job it requeues
    _, stderr = process.communicate(timeout=120)
    assert process.returncode == 128 + signal.SIGTERM
    assert "requeing job 7..." in stderr
    requeued = _start_fit(args, slurm)  # the same command line, as SLURM starts it again
    _, stderr = requeued.communicate(timeout=300)
    assert requeued.returncode == 0, stderr[-3000:]
    assert f"Restored all states from the checkpoint at {run / 'hpc_ckpt_1.ckpt'}" in stderr
    assert torch.load(run / "checkpoints" / "last.ckpt", weights_only=False)["epoch"] == 2


def test_a_signal_in_a_cv_fold_ends_cv_as_a_failure_that_names_the_cv_command(cohort, tmp_path):
    root = tmp_path / "cv"
    args = ["cv", "--folds", "2", "--no_baseline", "true", "--root", str(root), "--bootstrap", "10"]
    args += tiny_args("fit", tmp_path / "run", cohort, "--trainer.max_epochs", "3", SLOW)[1:]
    process = _start_fit(args)
    _wait_for(root / "fold_0" / "checkpoints" / "last.ckpt", process)
    process.send_signal(signal.SIGTERM)
    _, stderr = process.communicate(timeout=120)
    assert process.returncode == 128 + signal.SIGTERM
    again = shlex.join(["python", "-m", "adni_lightning", *args])
    assert stderr.splitlines()[-1] == (
        f"{PROG} cv: stopped by SIGTERM while training in {root / 'fold_0'}; the same command goes on from there: "
        f"{again}"
    )
