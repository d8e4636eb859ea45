"""Atomic writes: a full disk, a read-only folder or concurrent writers never leave a cut or mixed file."""

from __future__ import annotations

import errno
import multiprocessing
import os
import subprocess
from collections.abc import Iterator
from pathlib import Path

import pandas as pd
import pytest

import adni_lightning.atomic as atomic
from adni_lightning.atomic import WriteError, output_dir, write_bytes, write_once, write_text
from adni_lightning.data.split import SplitError, SplitSpec, save_split, saved_form, split_subjects
from tests.data.test_split import _manifest


class HalfThenFull:
    """A file that takes half of the first write, then reports a full disk (ENOSPC), as a disk filling up would."""

    def __init__(self, path: str | Path, mode: str) -> None:
        self.file = open(path, mode)  # noqa: SIM115 (closed in __exit__)

    def write(self, data: bytes) -> int:
        self.file.write(bytes(data[: len(data) // 2]))
        self.file.flush()
        raise OSError(errno.ENOSPC, os.strerror(errno.ENOSPC))

    def __enter__(self) -> HalfThenFull:
        return self

    def __exit__(self, *exc: object) -> None:
        self.file.close()


def fill_disk_on(monkeypatch: pytest.MonkeyPatch, name: str, call: int = 1) -> list[int]:
    """Make the ``call``-th atomic write of a file called ``name`` run out of space halfway; returns the call count."""
    calls = [0]

    def fake_open(path, mode="r", *args, **kwargs):
        if Path(path).name.startswith(f".{name}."):
            calls[0] += 1
            if calls[0] == call:
                return HalfThenFull(path, mode)
        return open(path, mode, *args, **kwargs)

    monkeypatch.setattr(atomic, "open", fake_open, raising=False)
    return calls


def leftovers(folder: Path) -> list[str]:
    return sorted(p.name for p in folder.iterdir() if p.name.endswith(".tmp"))


def test_a_write_cut_short_by_a_full_disk_keeps_the_previous_file(tmp_path, monkeypatch):
    target = tmp_path / "report.csv"
    write_text(target, "previous, whole\n", "--root")
    fill_disk_on(monkeypatch, "report.csv")
    with pytest.raises(WriteError) as refused:
        write_text(target, "new " * 1000, "--root")
    assert str(refused.value) == (
        f"cannot write {target}: the disk is full (No space left on device); free space or move it with --root"
    )
    assert target.read_text() == "previous, whole\n"
    assert leftovers(tmp_path) == []


def test_a_new_file_is_not_left_half_written_under_its_name(tmp_path, monkeypatch):
    fill_disk_on(monkeypatch, "new.csv")
    with pytest.raises(WriteError, match="the disk is full"):
        write_bytes(tmp_path / "new.csv", b"x" * 10_000, "--root")
    assert list(tmp_path.iterdir()) == []


@pytest.fixture
def tiny_disk(tmp_path: Path) -> Iterator[Path]:
    """A 64 KiB tmpfs: a real full disk (needs root and a kernel that lets the tests mount; skipped otherwise)."""
    mount = tmp_path / "disk"
    mount.mkdir()
    done = subprocess.run(["mount", "-t", "tmpfs", "-o", "size=64k", "tmpfs", str(mount)], capture_output=True)
    if done.returncode != 0:
        pytest.skip(f"cannot mount a tmpfs here: {done.stderr.decode().strip()}")
    try:
        yield mount
    finally:
        subprocess.run(["umount", str(mount)], check=True)


def test_a_real_full_disk_keeps_the_previous_file(tiny_disk):
    target = tiny_disk / "last.ckpt"
    write_bytes(target, b"good" * 1000, "--trainer.default_root_dir")
    with pytest.raises(WriteError) as refused:
        write_bytes(target, b"bigger" * 20_000, "--trainer.default_root_dir")
    assert str(refused.value) == (
        f"cannot write {target}: the disk is full (No space left on device); free space or move it with "
        "--trainer.default_root_dir"
    )
    assert target.read_bytes() == b"good" * 1000
    assert leftovers(tiny_disk) == []


def test_a_file_where_a_folder_belongs_is_one_line(tmp_path):
    (tmp_path / "taken").write_text("a user's file")
    with pytest.raises(WriteError) as refused:
        output_dir(tmp_path / "taken", "--root")
    assert (
        str(refused.value)
        == f"--root {tmp_path / 'taken'} is a file, not a folder: pass a folder (it is created if missing)"
    )
    with pytest.raises(WriteError) as refused:
        output_dir(tmp_path / "taken" / "cv", "--root")
    assert str(refused.value) == (
        f"cannot write {tmp_path / 'taken' / 'cv'}: a part of the path is a file, not a folder (Not a directory); "
        "move it with --root"
    )
    assert (tmp_path / "taken").read_text() == "a user's file"


def test_written_files_get_the_usual_mode_not_the_temporary_files_private_one(tmp_path):
    write_text(tmp_path / "shared.csv", "a\n", "--root")
    umask = os.umask(0)
    os.umask(umask)
    assert (tmp_path / "shared.csv").stat().st_mode & 0o777 == 0o666 & ~umask


def test_write_once_keeps_the_first_file(tmp_path):
    assert write_once(tmp_path / "a.yaml", b"first", "--root") is True
    assert write_once(tmp_path / "a.yaml", b"second", "--root") is False
    assert (tmp_path / "a.yaml").read_bytes() == b"first"
    assert leftovers(tmp_path) == []


def _save_concurrently(path: Path, seeds: list[int]) -> list[str]:
    """``save_split`` from one forked process per seed, all released at once; each one's error message or ""."""
    context = multiprocessing.get_context("fork")
    start, results = context.Barrier(len(seeds)), context.Queue()
    manifest = _manifest()

    def child(seed: int) -> None:
        spec = SplitSpec(folds=3, fold=0, seed=seed)
        split = split_subjects(manifest, spec)
        start.wait()
        try:
            save_split(split, path, spec)
            results.put("")
        except SplitError as err:
            results.put(str(err))

    processes = [context.Process(target=child, args=(seed,)) for seed in seeds]
    for process in processes:
        process.start()
    messages = [results.get(timeout=120) for _ in processes]
    for process in processes:
        process.join()
    return messages


def test_processes_drawing_the_same_split_at_once_leave_one_whole_copy(tmp_path):
    path = tmp_path / "cv" / "split.csv"
    assert _save_concurrently(path, [4] * 8) == [""] * 8
    spec = SplitSpec(folds=3, fold=0, seed=4)
    pd.testing.assert_frame_equal(
        pd.read_csv(path, dtype={"image_id": str, "subject": str}), saved_form(split_subjects(_manifest(), spec))
    )
    assert path.with_suffix(".json").read_text() == '{\n "test_fraction": 0.0,\n "seed": 4,\n "folds": 3\n}'
    assert leftovers(path.parent) == []


def test_processes_drawing_other_splits_at_once_are_refused_but_one(tmp_path):
    path = tmp_path / "cv" / "split.csv"
    messages = _save_concurrently(path, [1, 2, 3, 4])
    assert messages.count("") == 1
    expected = (
        f"{path.with_suffix('.json')} already holds another split (drawn by a run on the same folder with other "
        "options or data, perhaps at the same time): give each run its own data.split.file, or delete split.json "
        "and run again"
    )
    assert sorted(messages)[1:] == [expected] * 3
    saved = pd.read_json(path.with_suffix(".json"), typ="series")["seed"]
    winner = saved_form(split_subjects(_manifest(), SplitSpec(folds=3, fold=0, seed=int(saved))))
    pd.testing.assert_frame_equal(pd.read_csv(path, dtype={"image_id": str, "subject": str}), winner)
