"""Writes that a crash, a full disk or a concurrent writer cannot leave half-done under the real name.

Every result file (checkpoints, split files, reports, predictions) is written to a temporary name in the same
folder and renamed (``os.replace``, atomic on one file system), so a later run reads either the previous whole file
or the new whole file, never a cut-off one. Lightning's own checkpoint writer stages the file in the system's
temporary folder and *moves* it, which across file systems is a copy under the real name: :class:`AtomicCheckpointIO`
stages it beside its target instead. A write refused by the storage (a full disk, a read-only or foreign folder)
ends in one :class:`WriteError` line naming the path, what is wrong with the storage and the option that moves it.

A leaf module: it imports no other module of the package, so every layer may use it.
"""

from __future__ import annotations

import errno
import io
import os
import tempfile
from collections.abc import Iterator
from contextlib import contextmanager
from pathlib import Path
from typing import Any

import torch
from lightning.fabric.plugins import TorchCheckpointIO
from lightning.fabric.utilities.cloud_io import _is_local_file_protocol

from adni_lightning.errors import ProjectError

#: The process's umask, read once: temporary files are created private (0600) and get the usual mode before renaming.
_UMASK = os.umask(0)
os.umask(_UMASK)

#: errno values saying that the storage, not the file, refuses the write.
DISK_FULL = (errno.ENOSPC, errno.EDQUOT)
READ_ONLY = (errno.EROFS, errno.EACCES, errno.EPERM)
#: The phrase :func:`reason` adds for a full disk.
FULL_PHRASE = "the disk is full"


class WriteError(ProjectError):
    """A result could not be written (full disk, read-only folder, a file where a folder belongs)."""


def reason(error: OSError) -> str:
    """``error``'s cause in words; a full disk and a read-only folder say so plainly."""
    text = error.strerror or str(error)
    if error.errno in DISK_FULL:
        return f"{FULL_PHRASE} ({text})"
    if error.errno in READ_ONLY:
        return f"the folder is read-only for this process ({text})"
    if error.errno == errno.ENOTDIR:
        return f"a part of the path is a file, not a folder ({text})"
    return text


def write_error(path: str | Path, error: OSError, option: str) -> WriteError:
    """The one-line error for a write to ``path`` that ``error`` refused; ``option`` moves the file elsewhere."""
    fix = f"free space or move it with {option}" if error.errno in DISK_FULL else f"move it with {option}"
    return WriteError(f"cannot write {path}: {reason(error)}; {fix}")


def output_dir(path: str | Path, option: str) -> Path:
    """Create the folder ``path`` (and its parents) for a command's results; one line when that cannot be done."""
    path = Path(path)
    if path.exists() and not path.is_dir():
        raise WriteError(f"{option} {path} is a file, not a folder: pass a folder (it is created if missing)")
    try:
        path.mkdir(parents=True, exist_ok=True)
    except OSError as err:
        raise write_error(path, err, option) from err
    return path


def _temporary(path: Path, option: str) -> Path:
    """An empty private file beside ``path``, named ``.<name>.<pid>.<random>.tmp`` (unique among writers)."""
    output_dir(path.parent, option)
    try:
        fd, tmp = tempfile.mkstemp(dir=path.parent, prefix=f".{path.name}.{os.getpid()}.", suffix=".tmp")
        os.close(fd)
        os.chmod(tmp, 0o666 & ~_UMASK)
    except OSError as err:
        raise write_error(path, err, option) from err
    return Path(tmp)


@contextmanager
def atomic_path(path: str | Path, option: str) -> Iterator[Path]:
    """Yield a temporary path beside ``path`` to write to; on success it replaces ``path``, on any error it is
    deleted and ``path`` is left as it was. An ``OSError`` of the storage becomes a :class:`WriteError`.
    """
    path = Path(path)
    tmp = _temporary(path, option)
    try:
        yield tmp
        os.replace(tmp, path)
    except OSError as err:
        tmp.unlink(missing_ok=True)
        raise write_error(path, err, option) from err
    except BaseException:
        tmp.unlink(missing_ok=True)
        raise


def write_bytes(path: str | Path, data: bytes | memoryview, option: str, sync: bool = False) -> None:
    """Replace ``path`` with ``data`` atomically; with ``sync``, on the disk before the rename (a checkpoint that a
    power cut must not leave empty under its name).
    """
    with atomic_path(path, option) as tmp, open(tmp, "wb") as f:
        f.write(data)
        if sync:
            f.flush()
            os.fsync(f.fileno())


def write_text(path: str | Path, text: str, option: str) -> None:
    """Replace ``path`` with ``text`` (UTF-8) atomically."""
    write_bytes(path, text.encode("utf-8"), option)


def write_once(path: str | Path, data: bytes, option: str) -> bool:
    """Create ``path`` holding ``data`` unless it exists; ``False`` when it already did (left as it was).

    Concurrent writers (a SLURM array) race safely: the whole file appears at once (a hard link of a finished
    temporary file, which fails if the name is taken), so exactly one of them creates it, and the others then read
    a whole file to compare with what they would have written.
    """
    path = Path(path)
    staged = _temporary(path, option)
    try:
        staged.write_bytes(data)
        try:
            os.link(staged, path)
        except FileExistsError:
            return False
        except OSError as err:
            if err.errno not in (errno.EPERM, errno.EOPNOTSUPP, errno.ENOSYS, errno.EXDEV):
                raise
            if path.exists():  # no hard links on this file system: a rename, racing only with identical writers
                return False
            os.replace(staged, path)
        return True
    except OSError as err:
        raise write_error(path, err, option) from err
    finally:
        staged.unlink(missing_ok=True)


class AtomicCheckpointIO(TorchCheckpointIO):
    """Lightning's checkpoint writer, staging each local checkpoint beside its target and renaming it.

    A failed write (a full disk) leaves the previous ``last.ckpt`` whole, so ``--ckpt_path last`` resumes from the
    last good epoch, and ends in one line. Remote paths (``s3://``, …) are left to Lightning.
    """

    def save_checkpoint(self, checkpoint: dict[str, Any], path: Any, storage_options: Any | None = None) -> None:
        if storage_options is not None or not _is_local_file_protocol(path):
            super().save_checkpoint(checkpoint, path, storage_options)
            return
        buffer = io.BytesIO()
        torch.save(checkpoint, buffer)
        write_bytes(path, buffer.getbuffer(), "--trainer.default_root_dir (or the checkpoint's dirpath)", sync=True)
