"""On-disk cache of preprocessed volumes: each source file is decoded and preprocessed once.

An entry is a ``.npy`` file (memory-mapped on read) plus a ``.json`` sidecar with its CRC32, where its voxels came
from in the source file (:class:`~adni_lightning.data.preprocess.SourceGeometry`: the file's grid, its
reorientation and the crop box, so ``interpret`` puts its maps back on the file's grid from this record) and, for
label maps, the regional volumes counted on the full-resolution voxels while they are decoded anyway (see
:mod:`adni_lightning.data.volumes`). Its name holds a key of the source file's identity (resolved path, size,
mtime), of every preprocessing parameter and of the entry format, so a changed file, setting or format never
reuses an old entry. Both files are written to a temporary name and renamed, so a crash leaves no half-written
entry under the real name; an entry that fails its check is rebuilt, and temporary files of writers that no
longer run are deleted before the next build.

A source that cannot be decoded (a corrupt gzip body, non-integer or unknown label values) or holds no labelled
voxel gets a ``.fault`` marker under its entry's key instead, holding the reason: every process of a run, and every
later run, then knows the faults of the files it did not decode itself (the manifest step drops or reports them).
A changed file has another key, so it is decoded again. A label map far smaller than the cohort's others
(:meth:`VolumeCache.small_label_maps`) is a fault of the cohort, not of the file: it is found from the sidecars
each time, never recorded.

Sidecar: ``{"crc32": int, "source": {"shape", "affine", "canonical_shape", "to_file", "start", "extent"},
"voxel_mm3": float, "volumes_mm3": {"<FreeSurfer id>": mm³, ...}}``, the last two for label maps only (every
non-zero id present; absent ids are absent). Fault marker: ``{"reason": str}``.

Pool workers build entries; they ignore Ctrl-C (the parent cancels the queued work and lets the running entries
finish) and die with the parent, even one killed by SIGKILL, so an interrupted build leaves no process behind.
"""

from __future__ import annotations

import ctypes
import hashlib
import io
import json
import logging
import os
import re
import signal
import sys
import tempfile
import threading
import time
import zlib
from collections.abc import Callable, Iterable, Mapping
from concurrent.futures import ProcessPoolExecutor
from dataclasses import dataclass
from pathlib import Path
from typing import Any, BinaryIO, Literal

import numpy as np
from tqdm.auto import tqdm

from adni_lightning.atomic import DISK_FULL, FULL_PHRASE
from adni_lightning.atomic import reason as storage_reason
from adni_lightning.data.preprocess import Preprocessing, SourceGeometry, UnknownLabelError, preprocess_recorded
from adni_lightning.data.volume_io import VolumeError, read_volume
from adni_lightning.data.volumes import EMPTY_LABEL_MAP, small_label_maps, structure_volumes, voxel_volume
from adni_lightning.errors import ProjectError
from adni_lightning.vocabulary import LabelId

log = logging.getLogger(__name__)

#: 2: label-map sidecars hold the regional volumes; 3: every sidecar records its source geometry. The format is part
#: of an entry's key, so entries of an older format are never read: they are rebuilt under a new name.
_CACHE_FORMAT = 3


#: Temporary name of an entry being written: ``.<entry name>.<writer pid>.<random>.tmp``.
_TEMPORARY = re.compile(r"^\..+\.(\d+)\.[A-Za-z0-9_]+\.tmp$")

_PR_SET_PDEATHSIG = 1  # linux/prctl.h


class CacheBuildError(ProjectError, RuntimeError):
    """One or more volumes could not be preprocessed; the message lists each file and reason."""


class CacheDirError(CacheBuildError):
    """The cache directory cannot be written; the message names it and the option that moves it."""


FaultKind = Literal["content", "unreadable", "cache", "cohort"]


@dataclass(frozen=True)
class Fault:
    """Why one image has no entry, as plain data (it crosses the process pool as a return value).

    ``kind``: ``content``, the file's bytes cannot be decoded or hold no label map (recorded: decoding it again
    gives the same answer); ``unreadable``, the file could not be opened (not recorded: permissions may be
    fixed); ``cache``, the entry could not be written (``path`` is then the entry); ``cohort``, the entry is fine
    but the image is an outlier of this cohort (not recorded: another cohort may accept it).
    """

    image_id: str
    path: str
    reason: str
    kind: FaultKind = "content"

    def __str__(self) -> str:
        return f"image {self.image_id}: {self.path}: {self.reason}"


def _source_identity(path: Path) -> dict[str, object]:
    stat = path.stat()
    return {"path": str(path.resolve()), "size": stat.st_size, "mtime_ns": stat.st_mtime_ns}


def _atomic_write(target: Path, write: Callable[[BinaryIO], object]) -> None:
    """Write to a temporary name, then rename. No fsync: an entry torn by a power cut fails its CRC check
    and is rebuilt, which is cheaper than syncing every entry.
    """
    fd, tmp = tempfile.mkstemp(dir=target.parent, prefix=f".{target.name}.{os.getpid()}.", suffix=".tmp")
    try:
        with os.fdopen(fd, "wb") as f:
            write(f)
        os.replace(tmp, target)
    except BaseException:
        Path(tmp).unlink(missing_ok=True)
        raise


def _atomic_bytes(target: Path, data: bytes) -> None:
    """:func:`_atomic_write` of ``data``."""
    _atomic_write(target, lambda f: f.write(data))


def _write_reason(error: OSError) -> str:
    """Why an entry could not be written: a full disk says so first (the remedy differs), else the system's words."""
    return storage_reason(error) if error.errno in DISK_FULL else error.strerror or str(error)


def _running(pid: int) -> bool:
    """Whether process ``pid`` exists and is not a zombie (a killed process nobody has reaped yet)."""
    if Path("/proc/self/stat").exists():
        try:
            stat = Path(f"/proc/{pid}/stat").read_text()
        except OSError:
            return False
        return stat[stat.rindex(")") + 2] not in "ZX"  # the state follows the command name
    try:
        os.kill(pid, 0)
    except ProcessLookupError:
        return False
    except PermissionError:  # someone else's process
        return True
    return True


def _remove_stale_temporaries(root: Path) -> None:
    """Delete temporary files whose writer no longer runs (killed mid-write); they were never read as entries."""
    for path in root.glob(".*.tmp"):
        match = _TEMPORARY.match(path.name)
        if match and not _running(int(match.group(1))):
            path.unlink(missing_ok=True)


def _die_with_parent() -> bool:
    """Ask Linux to SIGKILL this process when its parent exits; ``False`` where ``prctl`` is unavailable."""
    if not sys.platform.startswith("linux"):
        return False
    try:
        return ctypes.CDLL(None).prctl(_PR_SET_PDEATHSIG, signal.SIGKILL, 0, 0, 0) == 0
    except (OSError, AttributeError):
        return False


def _exit_when_gone(parent: int, interval: float = 1.0) -> None:
    """Poll for the parent and end this process once it is gone (where the kernel cannot be asked to)."""
    while _running(parent):
        time.sleep(interval)
    os._exit(1)


def _worker_init(parent: int) -> None:
    """Pool worker: leave Ctrl-C to the parent, and never outlive it, even when it is killed by SIGKILL."""
    signal.signal(signal.SIGINT, signal.SIG_IGN)
    if not _die_with_parent():
        threading.Thread(target=_exit_when_gone, args=(parent,), daemon=True).start()
    if not _running(parent):  # gone before the request above took effect
        os._exit(1)


class VolumeCache:
    """Preprocessed volumes under ``root``, one entry per (source file, preprocessing) pair."""

    def __init__(self, root: str | Path, params: Preprocessing) -> None:
        self.root = Path(root)
        self.params = params

    def entry_path(self, image_id: str, source: str | Path) -> Path:
        identity = {**_source_identity(Path(source)), "params": self.params.key(), "format": _CACHE_FORMAT}
        digest = hashlib.sha1(json.dumps(identity, sort_keys=True).encode()).hexdigest()[:16]
        return self.root / f"{image_id}-{digest}.npy"

    def is_valid(self, entry: Path) -> bool:
        """True when the entry has the expected shape and dtype, its bytes match the recorded CRC32, its sidecar
        records its source geometry and, for a label map, the regional volumes.
        """
        sidecar = entry.with_suffix(".json")
        try:
            meta = json.loads(sidecar.read_text())
            array = np.load(entry, mmap_mode="r")
        except (OSError, ValueError):
            return False
        return (
            array.shape == self.params.cached_shape
            and array.dtype == self.params.dtype
            and zlib.crc32(array.tobytes()) == meta.get("crc32")
            and isinstance(meta.get("source"), dict)
            and (not self.params.labelmap or isinstance(meta.get("volumes_mm3"), dict))
        )

    def write(
        self,
        entry: Path,
        array: np.ndarray,
        volumes: Mapping[LabelId, float] | None = None,
        voxel_mm3: float | None = None,
        geometry: SourceGeometry | None = None,
    ) -> None:
        """Write the array and its sidecar; ``volumes`` (id → mm³) and ``voxel_mm3`` for label maps, ``geometry``
        for every entry a build makes (an entry without it is not valid).
        """
        entry.parent.mkdir(parents=True, exist_ok=True)
        encoded_array = io.BytesIO()  # written by Python, not numpy's tofile: a full disk then raises ENOSPC
        np.save(encoded_array, array, allow_pickle=False)
        _atomic_write(entry, lambda f: f.write(encoded_array.getbuffer()))
        meta: dict[str, object] = {"crc32": zlib.crc32(np.ascontiguousarray(array).tobytes())}
        if geometry is not None:
            meta["source"] = geometry.record()
        if volumes is not None:
            meta.update(voxel_mm3=voxel_mm3, volumes_mm3={str(i): v for i, v in sorted(volumes.items())})
        encoded = json.dumps(meta).encode()
        _atomic_write(entry.with_suffix(".json"), lambda f: f.write(encoded))

    def volumes(self, image_id: str, source: str | Path) -> dict[LabelId, float]:
        """FreeSurfer id → mm³ at full resolution, as stored with the entry (build it first); label maps only."""
        if not self.params.labelmap:
            raise ValueError("regional volumes exist for label maps only (data.preprocessing.input_kind: labelmap)")
        sidecar = self.entry_path(image_id, source).with_suffix(".json")
        try:
            stored = json.loads(sidecar.read_text())["volumes_mm3"]
        except (OSError, ValueError, KeyError) as err:
            raise FileNotFoundError(
                f"image {image_id}: {source}: no cache entry with volumes ({sidecar}): build the cache first"
            ) from err
        return {LabelId(int(i)): float(v) for i, v in stored.items()}

    def geometry(self, entry: Path) -> SourceGeometry:
        """Where the voxels of ``entry`` came from in its source file, as recorded when it was built; the source file
        is not read. ``FileNotFoundError`` naming the sidecar when there is no such record.
        """
        sidecar = entry.with_suffix(".json")
        try:
            return SourceGeometry.from_record(json.loads(sidecar.read_text())["source"])
        except (OSError, ValueError, KeyError, TypeError) as err:
            raise FileNotFoundError(
                f"{entry}: no source geometry recorded in {sidecar}: build the cache first"
            ) from err

    def fault_path(self, entry: Path) -> Path:
        """The marker recording why the source of ``entry`` cannot be preprocessed."""
        return entry.with_suffix(".fault")

    def recorded_faults(self, items: Iterable[tuple[str, str | Path]]) -> list[Fault]:
        """The faults an earlier build recorded for these ``(image_id, source)``, without decoding anything."""
        faults = []
        for image_id, source in items:
            try:
                marker = self.fault_path(self.entry_path(image_id, source))
                reason = json.loads(marker.read_text())["reason"]
            except (OSError, ValueError, KeyError, TypeError):
                continue
            faults.append(Fault(image_id, str(source), str(reason)))
        return faults

    def small_label_maps(self, items: Iterable[tuple[str, str | Path]], fraction: float) -> list[Fault] | None:
        """Label maps among ``(image_id, source)`` whose labelled volume is below ``fraction`` of their median.

        Read from the sidecars, so it is found without decoding and gives every process the same answer; ``None``
        while an image has no sidecar yet (a median of part of the cohort would be another median), ``[]`` for
        intensity volumes.
        """
        if not self.params.labelmap:
            return []
        items = list(items)
        labelled = {}
        for image_id, source in items:
            try:
                labelled[image_id] = sum(self.volumes(image_id, source).values())
            except OSError:
                return None
        reasons = small_label_maps(labelled, fraction)
        return [
            Fault(image_id, str(source), reasons[image_id], "cohort")
            for image_id, source in items
            if image_id in reasons
        ]

    def collect(
        self, items: Iterable[tuple[str, str | Path]], num_workers: int = 0
    ) -> tuple[dict[str, Path], list[Fault]]:
        """Make sure every ``(image_id, source)`` has a valid entry, as far as its file allows.

        Entries that exist and pass :meth:`is_valid` are kept; missing, stale or corrupt ones are built in
        ``num_workers`` processes (0: in this process). Returns image_id → entry for every image built or found,
        and a :class:`Fault` for every other one (all of them, whatever their number). Raises
        :class:`CacheDirError` when the entries cannot be written.
        """
        entries, faults = {}, []
        for image_id, source in items:
            try:
                entries[image_id] = (self.entry_path(image_id, source), Path(source))
            except OSError as err:
                faults.append(Fault(image_id, str(source), f"cannot read ({err.strerror})", "unreadable"))
        todo = [(image_id, src, entry) for image_id, (entry, src) in entries.items() if not self.is_valid(entry)]
        if todo:
            self._check_writable()
            _remove_stale_temporaries(self.root)
            log.info("preprocessing %d of %d volumes into %s", len(todo), len(entries), self.root)
            results = self._build_missing(todo, num_workers)
            unwritable = next((f for f in results if f is not None and f.kind == "cache"), None)
            if unwritable is not None:
                raise CacheDirError(self._unwritable_message(unwritable.reason))
            for (image_id, _, entry), fault in zip(todo, results, strict=True):
                marker = self.fault_path(entry)
                if fault is not None and fault.kind == "content":
                    encoded = json.dumps({"reason": fault.reason}).encode()
                    try:
                        _atomic_bytes(marker, encoded)
                    except OSError as err:
                        raise CacheDirError(self._unwritable_message(_write_reason(err))) from err
                else:
                    marker.unlink(missing_ok=True)
                if fault is not None:
                    faults.append(fault)
                    del entries[image_id]
        return {image_id: entry for image_id, (entry, _) in entries.items()}, faults

    def build(self, items: Iterable[tuple[str, str | Path]], num_workers: int = 0) -> dict[str, Path]:
        """:meth:`collect`, raising :class:`CacheBuildError` that lists every fault (one line each) if any."""
        entries, faults = self.collect(items, num_workers)
        if faults:
            raise CacheBuildError(
                f"{len(faults)} volume(s) could not be preprocessed:\n" + "\n".join(sorted(str(f) for f in faults))
            )
        return entries

    def _unwritable_message(self, reason: str) -> str:
        if reason.startswith(FULL_PHRASE):
            return (
                f"cache directory {self.root} cannot be written: {reason}; free space or point data.cache_dir at a "
                "folder with free space"
            )
        return f"cache directory {self.root} cannot be written ({reason}): point data.cache_dir at a writable folder"

    def _check_writable(self) -> None:
        """Fail in one line before any work when the entries could not be written."""
        try:
            self.root.mkdir(parents=True, exist_ok=True)
            with tempfile.TemporaryFile(dir=self.root):
                pass
        except OSError as err:
            raise CacheDirError(self._unwritable_message(_write_reason(err))) from err

    def _build_missing(self, todo: list[tuple[str, Path, Path]], num_workers: int) -> list[Fault | None]:
        jobs = [(self, image_id, src, entry) for image_id, src, entry in todo]
        progress: dict[str, Any] = {"total": len(jobs), "desc": "caching volumes", "unit": "vol"}
        if num_workers == 0:
            return [_build_one(job) for job in tqdm(jobs, **progress)]
        pool = ProcessPoolExecutor(
            max_workers=min(num_workers, len(jobs)), initializer=_worker_init, initargs=(os.getpid(),)
        )
        try:
            return list(tqdm(pool.map(_build_one, jobs, chunksize=1), **progress))
        finally:  # interrupted: drop the queued jobs, let the running ones finish their (atomic) writes
            pool.shutdown(wait=True, cancel_futures=True)


def _build_one(job: tuple[VolumeCache, str, Path, Path]) -> Fault | None:
    """Build one entry; return ``None``, or why not (never raise: the pool returns it as data)."""
    cache, image_id, source, entry = job
    try:
        with open(source, "rb"):
            pass
    except OSError as err:
        return Fault(image_id, str(source), f"cannot read ({err.strerror or err})", "unreadable")
    volumes, voxel_mm3 = None, None
    try:
        data, affine = read_volume(source)
        if cache.params.labelmap:  # counted (and checked) before preprocess picks its subset of the voxels
            volumes, voxel_mm3 = structure_volumes(data, affine), voxel_volume(affine)
            if not volumes:
                return Fault(image_id, str(source), EMPTY_LABEL_MAP)
        array, geometry = preprocess_recorded(data, affine, cache.params)
    except VolumeError as err:
        return Fault(image_id, str(source), err.reason)
    except UnknownLabelError as err:
        return Fault(image_id, str(source), str(err))
    try:
        cache.write(entry, array, volumes, voxel_mm3, geometry)
    except OSError as err:
        return Fault(image_id, str(entry), _write_reason(err), "cache")
    return None
