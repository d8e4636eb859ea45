"""A run's writes: a full disk keeps the last good checkpoint, a read-only run folder is one line, and ``predict``
with several checkpoints never touches a user's files.
"""

from __future__ import annotations

import shutil
import sys
import tempfile
from pathlib import Path

import pandas as pd
import pytest

from adni_lightning.checkpoint import read_checkpoint
from adni_lightning.main import PROG, main, run_from_command_line
from tests.helpers import as_nobody, tiny_args, trained_run
from tests.test_atomic import fill_disk_on, leftovers


def one_line_error(monkeypatch: pytest.MonkeyPatch, capsys: pytest.CaptureFixture, args: list[str]) -> str:
    """Run ``args`` as the command line; assert it ends in exit 1, and return its last line (the error's).

    ``tests/test_errors.py`` checks that a project error prints that line alone, without a traceback.
    """
    monkeypatch.setattr(sys, "argv", [PROG, *args])
    monkeypatch.delenv("ADNI_LIGHTNING_DEBUG", raising=False)
    with pytest.raises(SystemExit) as exit_:
        run_from_command_line()
    assert exit_.value.code == 1
    return capsys.readouterr().err.splitlines()[-1]


def test_a_full_disk_keeps_the_previous_checkpoint_and_the_run_resumes_from_it(cohort, tmp_path, monkeypatch, capsys):
    run = tmp_path / "run"
    args = tiny_args("fit", run, cohort, "--trainer.max_epochs", "2")
    fill_disk_on(monkeypatch, "last.ckpt", call=2)  # epoch 0's last.ckpt is written, epoch 1's runs out of space
    last = run / "checkpoints" / "last.ckpt"
    assert one_line_error(monkeypatch, capsys, args) == (
        f"{PROG} fit: error: cannot write {last}: the disk is full (No space left on device); free space or move it "
        "with --trainer.default_root_dir (or the checkpoint's dirpath)"
    )
    assert read_checkpoint(last)["epoch"] == 0  # whole (every entry passes its CRC), and the previous epoch's
    assert leftovers(last.parent) == []
    monkeypatch.undo()
    main([*args, "--ckpt_path", "last"])
    assert read_checkpoint(last)["epoch"] == 1


def test_a_read_only_run_folder_is_one_line_naming_the_option(cohort_template):
    base = Path(tempfile.mkdtemp())  # outside pytest's root-only folders, so that nobody may look in
    try:
        base.chmod(0o755)
        cohort = Path(shutil.copytree(cohort_template, base / "K1data"))
        for path in [cohort, *cohort.rglob("*")]:
            path.chmod(0o755 if path.is_dir() else 0o644)
        (base / "cache").mkdir(mode=0o777)
        (base / "cache").chmod(0o777)
        run = base / "run"
        run.mkdir()
        run.chmod(0o555)
        message = as_nobody(lambda: main(tiny_args("fit", run, cohort, "--trainer.max_epochs", "1")))
        assert list(run.iterdir()) == []
    finally:
        shutil.rmtree(base)
    assert message == (
        f"cannot write {run / '.lock'}: the folder is read-only for this process (Permission denied); move it "
        "with --trainer.default_root_dir"
    )


@pytest.fixture(scope="module")
def two_runs(tmp_path_factory, cohort_template) -> dict[str, Path]:
    """Two one-epoch runs of the tiny model on one cohort: the members of an ensemble."""
    first = trained_run(tmp_path_factory.mktemp("ensemble"), cohort_template)
    second = first["base"] / "run2"
    main(tiny_args("fit", second, first["cohort"], "--trainer.max_epochs", "1", "--data.split.seed", "1"))
    return {**first, "ckpt2": second / "checkpoints" / "last.ckpt"}


def _user_folder(root: Path) -> Path:
    """A folder of the user's own under the output root, with the name the ensemble once used for its scratch."""
    mine = root / "ensemble_members" / "member0"
    mine.mkdir(parents=True)
    (mine / "notes.txt").write_text("my notes")
    return mine / "notes.txt"


def test_an_ensemble_writes_its_predictions_and_leaves_the_users_files_alone(two_runs, tmp_path):
    root = tmp_path / "scoring"
    notes = _user_folder(root)
    args = tiny_args("predict", root, two_runs["cohort"], "--ckpt_path", str(two_runs["ckpt"]))
    main([*args, "--ckpt_path", str(two_runs["ckpt2"])])
    assert sorted(p.name for p in root.iterdir()) == [
        "ensemble_members",
        "predict",  # its TensorBoard folder and config.yaml, as a single predict's
        "predictions.csv",
        "predictions_by_subject.csv",
    ]
    assert notes.read_text() == "my notes"
    assert set(pd.read_csv(root / "predictions.csv")["members"]) == {2}


def test_an_ensemble_with_a_damaged_member_writes_nothing(two_runs, tmp_path, monkeypatch, capsys):
    root = tmp_path / "scoring"
    notes = _user_folder(root)
    broken = tmp_path / "broken.ckpt"
    broken.write_bytes(b"not a checkpoint")
    args = tiny_args("predict", root, two_runs["cohort"], "--ckpt_path", str(two_runs["ckpt"]))
    line = one_line_error(monkeypatch, capsys, [*args, "--ckpt_path", str(broken)])
    assert line == (
        f"{PROG} predict: error: {broken} is truncated or not a checkpoint (16 bytes; File is not a zip file)"
    )
    assert sorted(p.name for p in root.iterdir()) == ["ensemble_members"]
    assert notes.read_text() == "my notes"


def test_a_checkpoint_pattern_matching_nothing_is_one_line(tmp_path, monkeypatch, capsys):
    pattern = str(tmp_path / "fold_*" / "checkpoints" / "last.ckpt")
    line = one_line_error(monkeypatch, capsys, ["predict", "--ckpt_path", pattern])
    assert line == (
        f"{PROG} predict: error: --ckpt_path {pattern}: no file matches this pattern (relative to {Path.cwd()}); "
        "check the folder, or pass each checkpoint with its own --ckpt_path"
    )


def test_an_output_root_that_is_a_file_is_one_line(two_runs, tmp_path, monkeypatch, capsys):
    taken = tmp_path / "scores.csv"
    taken.write_text("a user's file")
    args = tiny_args("predict", taken, two_runs["cohort"], "--ckpt_path", str(two_runs["ckpt"]))
    line = one_line_error(monkeypatch, capsys, [*args, "--ckpt_path", str(two_runs["ckpt2"])])
    assert line == (
        f"{PROG} predict: error: --trainer.default_root_dir {taken} is a file, not a folder: pass a folder (it is "
        "created if missing)"
    )
    assert taken.read_text() == "a user's file"
