"""The run object: one configuration parsed and built once, derived into the runs a command needs, executed with
every check of the command line.
"""

from __future__ import annotations

from pathlib import Path

import pytest
from lightning.pytorch.callbacks import Callback

from adni_lightning.checkpoint import ResumeError
from adni_lightning.run import Run, split_run_options
from tests.helpers import tiny_args


class CountEpochs(Callback):
    def __init__(self) -> None:
        self.epochs = 0

    def on_train_epoch_end(self, trainer, pl_module) -> None:
        self.epochs += 1


def _run(tmp_path: Path, cohort: Path, *extra: str) -> Run:
    return Run(overrides=tiny_args("fit", tmp_path / "run", cohort, *extra)[1:])


def test_split_run_options_keeps_the_command_s_own_options_apart():
    own, run = split_run_options(["--folds", "3", "--data.split.seed", "7", "--trainer.fast_dev_run", "--root", "x"])
    assert own == ["--folds", "3", "--root", "x"]
    assert run == ["--data.split.seed", "7", "--trainer.fast_dev_run"]


def test_a_run_is_built_not_executed_and_its_options_win_over_the_command_line(cohort, tmp_path):
    run = _run(tmp_path, cohort, "--trainer.max_epochs", "3")
    assert run.subcommand == "fit" and run.root == tmp_path / "run"
    assert run.trainer.max_epochs == 3 and not (tmp_path / "run").exists()  # nothing written by building it
    assert run.last_checkpoint == tmp_path / "run" / "checkpoints" / "last.ckpt"
    derived = run.derive("fit", {"trainer.max_epochs": 1, "data.split.seed": 5, "trainer.default_root_dir": tmp_path})
    assert derived.trainer.max_epochs == 1 and derived.datamodule.split_spec.seed == 5 and derived.root == tmp_path
    assert run.trainer.max_epochs == 3  # the run it came from is unchanged
    again = derived.derive("fit", {"trainer.max_epochs": 2})  # keeps the options it was derived with
    assert again.trainer.max_epochs == 2 and again.datamodule.split_spec.seed == 5 and again.root == tmp_path


def test_execute_runs_the_subcommand_once_with_extra_callbacks_and_the_cli_checks(cohort, tmp_path):
    run = _run(tmp_path, cohort, "--trainer.max_epochs", "2")
    counter = CountEpochs()
    run.execute([counter])
    assert counter.epochs == 2 and run.last_checkpoint.is_file()
    with pytest.raises(RuntimeError, match="once"):
        run.execute()
    with pytest.raises(ResumeError, match="exists: resume with --ckpt_path last"):  # fit's own check, as on the CLI
        _run(tmp_path, cohort, "--trainer.max_epochs", "2").execute()
