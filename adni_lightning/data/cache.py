"""On-disk cache of preprocessed volumes: each source file is decoded and preprocessed once.

An entry is a ``.npy`` file (memory-mapped on read) plus a ``.json`` sidecar with its CRC32 and, for label maps,
the regional volumes counted on the full-resolution voxels while they are decoded anyway (see
:mod:`adni_lightning.data.volumes`). Its name holds a key of the source file's identity (resolved path, size,
mtime), of every preprocessing parameter and of the entry format, so a changed file, setting or format never
reuses an old entry. Both files are written to a temporary name and renamed, so a crash leaves no half-written
entry under the real name; an entry that fails its check is rebuilt.

Sidecar: ``{"crc32": int, "voxel_mm3": float, "volumes_mm3": {"<FreeSurfer id>": mm³, ...}}``, the last two
for label maps only (every non-zero id present; absent ids are absent).
"""

from __future__ import annotations

import hashlib
import json
import logging
import os
import tempfile
import zlib
from collections.abc import Iterable
from concurrent.futures import ProcessPoolExecutor
from pathlib import Path

import numpy as np
from tqdm.auto import tqdm

from adni_lightning.data.preprocess import Preprocessing, UnknownLabelError, preprocess
from adni_lightning.data.volume_io import VolumeError, read_volume
from adni_lightning.data.volumes import structure_volumes, voxel_volume

log = logging.getLogger(__name__)

#: 2: label-map sidecars hold the regional volumes (entries of format 1 have none and are rebuilt).
_CACHE_FORMAT = 2


class CacheBuildError(RuntimeError):
    """One or more volumes could not be preprocessed; the message lists each file and reason."""


def _source_identity(path: Path) -> dict[str, object]:
    stat = path.stat()
    return {"path": str(path.resolve()), "size": stat.st_size, "mtime_ns": stat.st_mtime_ns}


def _atomic_write(target: Path, write) -> None:
    """Write to a temporary name, then rename. No fsync: an entry torn by a power cut fails its CRC check
    and is rebuilt, which is cheaper than syncing every entry.
    """
    fd, tmp = tempfile.mkstemp(dir=target.parent, prefix=f".{target.name}.", suffix=".tmp")
    try:
        with os.fdopen(fd, "wb") as f:
            write(f)
        os.replace(tmp, target)
    except BaseException:
        Path(tmp).unlink(missing_ok=True)
        raise


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
        """True when the entry has the expected shape and dtype, its bytes match the recorded CRC32 and, for a
        label map, its sidecar holds the regional volumes.
        """
        sidecar = entry.with_suffix(".json")
        try:
            meta = json.loads(sidecar.read_text())
            array = np.load(entry, mmap_mode="r")
        except (OSError, ValueError):
            return False
        return (
            array.shape == self.params.size
            and array.dtype == self.params.dtype
            and zlib.crc32(array.tobytes()) == meta.get("crc32")
            and (not self.params.labelmap or isinstance(meta.get("volumes_mm3"), dict))
        )

    def write(
        self, entry: Path, array: np.ndarray, volumes: dict[int, float] | None = None, voxel_mm3: float | None = None
    ) -> None:
        """Write the array and its sidecar; ``volumes`` (id → mm³) and ``voxel_mm3`` for label maps."""
        entry.parent.mkdir(parents=True, exist_ok=True)
        _atomic_write(entry, lambda f: np.save(f, array, allow_pickle=False))
        meta: dict[str, object] = {"crc32": zlib.crc32(np.ascontiguousarray(array).tobytes())}
        if volumes is not None:
            meta.update(voxel_mm3=voxel_mm3, volumes_mm3={str(i): v for i, v in sorted(volumes.items())})
        encoded = json.dumps(meta).encode()
        _atomic_write(entry.with_suffix(".json"), lambda f: f.write(encoded))

    def volumes(self, image_id: str, source: str | Path) -> dict[int, float]:
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
        return {int(i): float(v) for i, v in stored.items()}

    def build(self, items: Iterable[tuple[str, str | Path]], num_workers: int = 0) -> dict[str, Path]:
        """Make sure every ``(image_id, source)`` has a valid entry; return image_id → entry path.

        Entries that exist and pass :meth:`is_valid` are kept; missing, stale or corrupt ones are built in
        ``num_workers`` processes (0: in this process). Every failure is collected and raised together.
        """
        entries, failures = {}, []
        for image_id, source in items:
            try:
                entries[image_id] = (self.entry_path(image_id, source), Path(source))
            except OSError as err:
                failures.append(f"image {image_id}: {source}: cannot read ({err.strerror})")
        todo = [(image_id, src, entry) for image_id, (entry, src) in entries.items() if not self.is_valid(entry)]
        if todo:
            log.info("preprocessing %d of %d volumes into %s", len(todo), len(entries), self.root)
            failures += self._build_missing(todo, num_workers)
        if failures:
            raise CacheBuildError(
                f"{len(failures)} volume(s) could not be preprocessed:\n" + "\n".join(sorted(failures))
            )
        return {image_id: entry for image_id, (entry, _) in entries.items()}

    def _build_missing(self, todo: list[tuple[str, Path, Path]], num_workers: int) -> list[str]:
        jobs = [(self, image_id, src, entry) for image_id, src, entry in todo]
        progress = dict(total=len(jobs), desc="caching volumes", unit="vol")
        if num_workers > 0:
            with ProcessPoolExecutor(max_workers=num_workers) as pool:
                results = list(tqdm(pool.map(_build_one, jobs, chunksize=1), **progress))
        else:
            results = [_build_one(job) for job in tqdm(jobs, **progress)]
        return [failure for failure in results if failure]


def _build_one(job: tuple[VolumeCache, str, Path, Path]) -> str | None:
    """Build one entry; return ``None`` or a line naming the image, the file and the reason."""
    cache, image_id, source, entry = job
    try:
        data, affine = read_volume(source)
        if cache.params.labelmap:  # counted (and checked) before preprocess picks its subset of the voxels
            volumes = structure_volumes(data, affine)
            cache.write(entry, preprocess(data, affine, cache.params), volumes, voxel_volume(affine))
        else:
            cache.write(entry, preprocess(data, affine, cache.params))
    except VolumeError as err:
        return f"image {image_id}: {err}"
    except UnknownLabelError as err:
        return f"image {image_id}: {source}: {err}"
    return None
