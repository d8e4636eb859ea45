"""One writer per run folder: ``fit`` holds ``<root>/.lock`` for its whole life, a second ``fit`` there is refused.

Two trainings in one folder would overwrite each other's ``last.ckpt``, append to the same TensorBoard events and
rewrite ``config.yaml``; nothing in Lightning stops them. The lock is an ``flock`` on ``<root>/.lock``: the kernel
releases it whenever the process ends, by a clean exit, an exception, a signal or ``kill -9``, so a lock is never
stale. The file holds the owner's pid, which the refusal names, and is removed when the run ends; folders the lock
had to create are removed too if the run left them empty (a run refused before it wrote anything leaves no trace).
"""

from __future__ import annotations

import contextlib
import fcntl
import os
from collections.abc import Iterator
from pathlib import Path

from adni_lightning.atomic import write_error
from adni_lightning.errors import ProjectError

LOCK_NAME = ".lock"


class RunLockedError(ProjectError, RuntimeError):
    """Another process is writing into the run folder; the message names the folder and that process's pid."""


def _holder(path: Path) -> str:
    """The pid recorded in a held lock file, as the message words it."""
    with contextlib.suppress(OSError, ValueError):
        return f"pid {int(path.read_text().strip())}"
    return "another process (pid not yet recorded)"


def _acquire(path: Path) -> int:
    """A descriptor of ``path`` holding its exclusive lock; raises :class:`RunLockedError` when another one holds it.

    The owner unlinks the file before it unlocks, so a descriptor locked after that would hold an orphan: the lock
    counts only while ``path`` still names the locked file, else it is taken again on the new file.
    """
    while True:
        fd = os.open(path, os.O_RDWR | os.O_CREAT | os.O_CLOEXEC, 0o644)
        try:
            fcntl.flock(fd, fcntl.LOCK_EX | fcntl.LOCK_NB)
        except BlockingIOError:
            os.close(fd)
            raise RunLockedError(
                f"{path.parent} is in use by {_holder(path)}, which is training there: one run per folder; wait for "
                "it to end, stop it, or train in another folder (--trainer.default_root_dir)"
            ) from None
        try:
            if os.stat(path).st_ino == os.fstat(fd).st_ino:
                return fd
        except FileNotFoundError:
            pass
        os.close(fd)


@contextlib.contextmanager
def run_lock(root: str | Path) -> Iterator[Path]:
    """Hold ``<root>/.lock`` (creating ``root`` if needed) while the block runs; yields the lock file's path."""
    root = Path(root)
    created = [folder for folder in (root, *root.parents) if not folder.exists()]  # deepest first
    path = root / LOCK_NAME
    try:
        root.mkdir(parents=True, exist_ok=True)
        fd = _acquire(path)
    except OSError as error:  # a read-only or full run folder: the first write of a run is its lock
        raise write_error(path, error, "--trainer.default_root_dir") from error
    try:
        os.ftruncate(fd, 0)
        os.write(fd, f"{os.getpid()}\n".encode())
        yield path
    finally:
        path.unlink(missing_ok=True)
        os.close(fd)
        with contextlib.suppress(OSError):  # not empty: the run wrote into it
            for folder in created:
                folder.rmdir()
