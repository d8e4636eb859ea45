"""Errors a person can read: one line without a traceback, raised before anything is written where they can be."""

from __future__ import annotations

import logging
import os
import subprocess
import sys
import traceback
from pathlib import Path

import pandas as pd
import pytest

from adni_lightning.data.manifest import CSV_NAME, ManifestError, ManifestSpec, build_manifest
from adni_lightning.main import PROG, main, run_from_command_line
from tests.helpers import tiny_args

REPO = Path(__file__).resolve().parents[1]


def _empty_one_file(cohort: Path) -> str:
    """Empty one image's file; return the one-line report the manifest gives for it."""
    row = build_manifest(ManifestSpec(data_dir=cohort)).iloc[3]
    Path(row["path"]).write_bytes(b"")
    return (
        f"{cohort / CSV_NAME}: CSV row {row['row']}, image {row['image_id']}, file {row['path']}: empty file (0 bytes) "
        "(set on_bad_rows: skip to train without them)"
    )


def test_a_project_error_on_the_command_line_is_one_line_without_traceback(cohort, tmp_path):
    expected = _empty_one_file(cohort)
    done = subprocess.run(
        [sys.executable, "-m", "adni_lightning", *tiny_args("fit", tmp_path / "run", cohort)],
        capture_output=True,
        text=True,
        timeout=300,
        env={**os.environ, "PYTHONPATH": str(REPO)},
    )
    assert done.returncode == 1
    assert "Traceback" not in done.stderr
    errors = [line for line in done.stderr.splitlines() if "error" in line.lower()]
    assert errors == [f"{PROG} fit: error: {expected}"]
    assert done.stderr.splitlines()[-1] == errors[0]


def test_debug_shows_the_traceback_and_is_not_passed_on(cohort, tmp_path, monkeypatch, capsys):
    """Raised from Lightning's prepare_data hook, the error arrives as the project's class, not wrapped."""
    expected = _empty_one_file(cohort)
    args = tiny_args("fit", tmp_path / "run", cohort)
    monkeypatch.setattr(sys, "argv", [PROG, *args])
    with pytest.raises(SystemExit) as exit_:
        run_from_command_line()
    assert exit_.value.code == 1
    assert capsys.readouterr().err.splitlines()[-1] == f"{PROG} fit: error: {expected}"
    monkeypatch.setattr(sys, "argv", [PROG, *args[:1], "--debug", *args[1:]])
    monkeypatch.setenv("ADNI_LIGHTNING_DEBUG", "")  # recorded, so the value --debug sets is undone after the test
    with pytest.raises(ManifestError) as err:
        run_from_command_line()
    assert str(err.value) == expected
    assert "--debug" not in sys.argv and os.environ["ADNI_LIGHTNING_DEBUG"] == "1"


def test_an_unwritable_cache_directory_is_named_with_its_option(cohort, tmp_path, monkeypatch, capsys):
    (tmp_path / "file").write_text("")
    cache = tmp_path / "file" / "cache"
    monkeypatch.setattr(
        sys, "argv", [PROG, *tiny_args("fit", tmp_path / "run", cohort, "--data.cache_dir", str(cache))]
    )
    monkeypatch.delenv("ADNI_LIGHTNING_DEBUG", raising=False)
    with pytest.raises(SystemExit):
        run_from_command_line()
    assert capsys.readouterr().err.splitlines()[-1] == (
        f"{PROG} fit: error: cache directory {cache} cannot be written (Not a directory): "
        "point data.cache_dir at a writable folder"
    )


def test_batch_size_zero_is_refused_before_anything_is_written(cohort, tmp_path):
    with pytest.raises(ValueError) as err:  # jsonargparse wraps the option group's own error
        main(tiny_args("fit", tmp_path / "run", cohort, "--data.loader.batch_size", "0"))
    chain, error = [], err.value
    while error is not None:
        chain.append(str(error))
        error = error.__cause__ or error.__context__
    assert any("batch_size must be at least 1, got 0" in text for text in chain)
    assert not (tmp_path / "cache").exists() and not (tmp_path / "run").exists()


def _snapshot(folder: Path) -> dict[str, tuple[int, int]]:
    return {str(p.relative_to(folder)): (p.stat().st_size, p.stat().st_mtime_ns) for p in folder.rglob("*")}


def _real_download(cohort: Path, tmp_path: Path) -> Path:
    """A real download's layout: CN/ MCI/ AD/ with label maps, the IDA CSV under another name."""
    folder = tmp_path / "ADNI"
    cohort.rename(folder)
    (folder / CSV_NAME).rename(folder / "ADNI1_Screening_1.5T_2_20_2024.csv")
    for marker in folder.glob(".adni_lightning_synthetic"):
        marker.unlink()
    return folder


@pytest.mark.parametrize("layout", ["other_files", "real_download", "empty"])
def test_a_folder_that_is_not_a_synthetic_cohort_is_never_filled(cohort, tmp_path, layout):
    if layout == "empty":  # e.g. made for a download not copied yet
        folder = tmp_path / "K1data_empty"
        folder.mkdir()
    elif layout == "other_files":
        folder = tmp_path / "mistyped"
        folder.mkdir()
        (folder / "notes.txt").write_text("mine")
        pd.DataFrame({"x": [1]}).to_csv(folder / "table.csv")
    else:
        folder = _real_download(cohort, tmp_path)
    before = _snapshot(folder)
    with pytest.raises(ManifestError) as err:
        main(tiny_args("fit", tmp_path / "run", folder))
    message = str(err.value)
    assert len(message.splitlines()) == 1
    held = "exists (empty)" if layout == "empty" else "holds other files ("
    assert message.startswith(f"{folder / CSV_NAME} not found, and {folder} {held}")
    assert "refusing to generate a synthetic cohort there" in message
    assert _snapshot(folder) == before
    assert not (tmp_path / "cache").exists()


def test_generating_a_cohort_says_so_on_the_console(tmp_path, caplog):
    from adni_lightning.console import setup
    from adni_lightning.data.dataset import LoaderSpec
    from adni_lightning.synth import MARKER_NAME, SyntheticCohort, SyntheticDataModule

    folder = tmp_path / "new"
    dm = SyntheticDataModule(
        cohort=SyntheticCohort(subjects=3, size=16, seed=1),
        manifest=ManifestSpec(data_dir=str(folder)),
        loader=LoaderSpec(num_workers=0),
    )
    setup()
    with caplog.at_level(logging.INFO, logger="adni_lightning"):
        dm.prepare_cohort()
    [record] = [r for r in caplog.records if "synthetic" in r.getMessage()]
    assert record.getMessage() == f"generating a synthetic cohort (3 subjects, 16³ voxels) in {folder}"
    assert logging.getLogger(record.name).isEnabledFor(logging.INFO)  # what _console shows
    assert (folder / MARKER_NAME).is_file() and (folder / CSV_NAME).is_file()
    stamps = _snapshot(folder)
    dm.prepare_cohort()  # its own earlier cohort: reused, not rewritten
    assert _snapshot(folder) == stamps


def _spawned(error: Exception) -> Exception:
    """``error`` as torch re-raises one from a process that ``ddp_spawn`` started: its traceback, as text."""
    from torch.multiprocessing.spawn import ProcessRaisedException

    try:
        try:
            raise OSError("the cause")
        except OSError as cause:
            raise error from cause
    except Exception:
        text = traceback.format_exc()
    return ProcessRaisedException(f"\n\n-- Process 1 terminated with the following error:\n{text}", 1, 4242)


def test_a_project_error_of_a_spawned_process_is_still_its_message():
    from adni_lightning.console import error_message
    from adni_lightning.data.cache import CacheDirError

    report = "a.csv: 2 of 9 row(s) cannot be used (set on_bad_rows: skip to train without them):\n  row 2\n  row 3"
    assert error_message(_spawned(ManifestError(report))) == report
    assert error_message(_spawned(CacheDirError("cache directory /c cannot be written"))) == (
        "cache directory /c cannot be written"
    )
    assert error_message(_spawned(KeyError("a bug"))) is None  # its traceback stays
    assert error_message(ManifestError("one line")) == "one line"
    assert error_message(ValueError("not ours")) is None


def test_a_full_disk_under_lightnings_own_writes_is_one_line_naming_the_file(cohort, tmp_path, monkeypatch, capsys):
    """The event files and config.yaml are Lightning's: a full disk there is still the storage's fault, in one line."""
    import errno

    from lightning.pytorch.cli import SaveConfigCallback

    config = tmp_path / "run" / "tensorboard" / "config.yaml"

    def full(*_args: object, **_kwargs: object) -> None:
        raise OSError(errno.ENOSPC, "No space left on device", str(config))

    monkeypatch.setattr(SaveConfigCallback, "save_config", full)
    monkeypatch.setattr(sys, "argv", [PROG, *tiny_args("fit", tmp_path / "run", cohort, "--trainer.max_epochs", "1")])
    monkeypatch.delenv("ADNI_LIGHTNING_DEBUG", raising=False)
    with pytest.raises(SystemExit) as exit_:
        run_from_command_line()
    assert exit_.value.code == 1
    assert capsys.readouterr().err.splitlines()[-1] == (
        f"{PROG} fit: error: cannot write {config}: the disk is full (No space left on device); free space or move it "
        "with --trainer.default_root_dir"
    )


def test_a_bug_keeps_its_traceback_and_a_storage_fault_behind_it_is_found():
    import errno

    from adni_lightning.console import error_message

    try:
        try:
            raise OSError(errno.EROFS, "Read-only file system", "/r/events.out")
        except OSError as fault:
            raise RuntimeError("while logging") from fault
    except RuntimeError as wrapped:
        assert error_message(wrapped) == (
            "cannot write /r/events.out: the folder is read-only for this process (Read-only file system); move it "
            "with --trainer.default_root_dir"
        )
    assert error_message(OSError(errno.ENOENT, "No such file or directory", "/x")) is None
