"""Data-path benchmark: the seed's per-item loading against this template's cache, cold and warm.

Why it exists: the issue sets throughput targets for the data path (warm reads >= 100x the seed's path, a
cold cache build >= 3x), and those are claims about *this* code on *this* machine that only a measurement
can back. This program generates a synthetic cohort in the real download format, runs every path over the
same files in one process tree, and prints the figures. It asserts nothing about time: it is a measuring
instrument, not a test.

The paths:

* **seed** (the blog's ``Dataset.__getitem__``): ``nib.load(p).get_fdata()`` (float64, 134 MB for 256³) →
  ``torch.tensor(float32)`` → trilinear ``F.interpolate`` to ``image_size`` → z-score with the volume's own
  mean/std, every epoch, for every item. Measured single-process (the blog's ``num_workers=0``) and through
  a ``DataLoader`` with ``--workers`` processes, so a parallel loader is compared with a parallel loader.
* **cold**: ``VolumeCache.build`` into an empty folder (decode once, canonical orientation, crop, nearest
  neighbour, compact uint8 index, atomic write + CRC sidecar), in-process and with ``--workers`` processes.
* **warm**: ``VolumeDataset`` over the built cache (memory-mapped ``.npy`` reads) through a ``DataLoader``;
  the on-device expansion to one-hot channels (``to_channels``) is timed on its own, on the CPU, so it is
  visible what the warm figure includes and what it leaves to the accelerator.

Files are read from the page cache in every path: they were just written by the generator and OS caches
are not dropped (that needs root and would also penalise the seed's path alike).

Run: ``python benchmarks/data_path.py [--images 24] [--size 256] [--image-size 128] [--workers 2]``.
"""

from __future__ import annotations

import argparse
import datetime
import gzip
import os
import platform
import shutil
import statistics
import sys
import tempfile
import time
import zlib
from collections.abc import Callable, Sequence
from dataclasses import dataclass, field
from pathlib import Path

# The cache's tqdm bars would interleave with the table (child processes inherit this too).
os.environ.setdefault("TQDM_DISABLE", "1")

_REPO = Path(__file__).resolve().parents[1]
if str(_REPO) not in sys.path:  # runnable from a checkout without `pip install -e .`
    sys.path.insert(0, str(_REPO))

import nibabel as nib  # noqa: E402
import numpy as np  # noqa: E402
import pandas as pd  # noqa: E402
import torch  # noqa: E402
import torch.nn.functional as F  # noqa: E402
from nibabel.freesurfer.mghformat import MGHImage  # noqa: E402
from torch.utils.data import DataLoader, Dataset  # noqa: E402

from adni_lightning.data.augment import to_channels  # noqa: E402
from adni_lightning.data.cache import VolumeCache, _atomic_write  # noqa: E402
from adni_lightning.data.dataset import VolumeDataset  # noqa: E402
from adni_lightning.data.labels import DEFAULT_CHANNELS, channel_lookup  # noqa: E402
from adni_lightning.data.manifest import ManifestSpec, build_manifest  # noqa: E402
from adni_lightning.data.preprocess import (  # noqa: E402
    Preprocessing,
    _foreground,
    crop_box,
    preprocess,
    resample_nearest,
    to_compact,
)
from adni_lightning.data.tabular import TabularEncoder  # noqa: E402
from adni_lightning.data.volume_io import read_volume, to_canonical  # noqa: E402
from adni_lightning.synth import CSV_NAME, generate_cohort  # noqa: E402

#: Targets set by the issue, as ratios to the seed's path (printed for reference, never asserted).
TARGET_WARM = 100.0
TARGET_COLD = 3.0


# --- the seed's path ----------------------------------------------------------------------------------------
def seed_load(path: str | Path, size: tuple[int, int, int]) -> torch.Tensor:
    """One item as the blog's ``__getitem__`` produced it: ``(1, D, H, W)`` float32, z-scored."""
    volume = torch.tensor(nib.load(path).get_fdata(), dtype=torch.float32)
    volume = F.interpolate(volume[None, None], size=size, mode="trilinear", align_corners=True)[0]
    return (volume - volume.mean()) / volume.std()


class SeedDataset(Dataset):
    """The seed's dataset reduced to its image path, so a ``DataLoader`` can run it in workers."""

    def __init__(self, paths: Sequence[str | Path], size: tuple[int, int, int]) -> None:
        self.paths = list(paths)
        self.size = size

    def __len__(self) -> int:
        return len(self.paths)

    def __getitem__(self, index: int) -> torch.Tensor:
        return seed_load(self.paths[index], self.size)


# --- measuring ----------------------------------------------------------------------------------------------
@dataclass
class Rate:
    """Volumes per second of one path, from one or more timed passes (median reported, spread kept)."""

    path: str
    per_pass: list[float] = field(default_factory=list)
    baseline: str | None = None  # key of the seed figure this one is compared with
    note: str = ""

    @property
    def median(self) -> float:
        return statistics.median(self.per_pass)

    @property
    def spread(self) -> str:
        if len(self.per_pass) < 2:
            return ""
        return f"{min(self.per_pass):.3g}-{max(self.per_pass):.3g}"


def _batch_volumes(batch: object) -> int:
    """Volumes in a collated batch: a tensor (seed) or a dict with ``image`` (VolumeDataset)."""
    image = batch["image"] if isinstance(batch, dict) else batch
    return int(image.shape[0])


def time_passes(run_pass: Callable[[], int], warmup: int, repeats: int, min_seconds: float = 0.0) -> list[float]:
    """Volumes/s of each timed pass of ``run_pass`` (which returns the volumes it produced).

    ``warmup`` untimed passes first start persistent workers and fault in code and allocator state; then
    at least ``repeats`` passes, and more until ``min_seconds`` have elapsed, so short passes (warm reads)
    are averaged over enough work to be stable.
    """
    for _ in range(warmup):
        run_pass()
    rates: list[float] = []
    began = time.perf_counter()
    while len(rates) < repeats or time.perf_counter() - began < min_seconds:
        start = time.perf_counter()
        volumes = run_pass()
        rates.append(volumes / (time.perf_counter() - start))
    return rates


def loader_rates(
    dataset: Dataset, batch_size: int, workers: int, warmup: int, repeats: int, min_seconds: float = 0.0
) -> list[float]:
    """Per-pass volumes/s of a ``DataLoader`` over ``dataset``.

    Workers are persistent, as the DataModule's loaders are, and started by the warm-up pass: the steady
    state of an epoch is measured, not process start-up.
    """
    loader = DataLoader(dataset, batch_size=batch_size, num_workers=workers, persistent_workers=workers > 0)

    def one_pass() -> int:
        return sum(_batch_volumes(batch) for batch in loader)

    try:
        return time_passes(one_pass, warmup, repeats, min_seconds)
    finally:
        del loader  # shuts persistent workers down before the next measurement starts its own


def cold_rates(
    items: list[tuple[str, Path]], root: Path, params: Preprocessing, workers: int, repeats: int
) -> tuple[list[float], dict[str, Path]]:
    """Volumes/s of ``VolumeCache.build`` into an empty folder, each repeat in a fresh one."""
    rates, entries = [], {}
    for repeat in range(repeats):
        folder = root / f"cold-w{workers}-{repeat}"
        shutil.rmtree(folder, ignore_errors=True)
        cache = VolumeCache(folder, params)
        start = time.perf_counter()
        entries = cache.build(items, num_workers=workers)
        rates.append(len(items) / (time.perf_counter() - start))
    return rates, entries


def channel_rates(entries: list[Path], batch_size: int, min_seconds: float) -> list[float]:
    """Volumes/s of ``to_channels`` (default channel table) on the CPU over cached batches.

    On a GPU this runs after the transfer, on the device; timing it on the CPU is the pessimistic bound.
    """
    table = torch.from_numpy(channel_lookup(DEFAULT_CHANNELS))
    arrays = [torch.from_numpy(np.array(np.load(e, mmap_mode="r")))[None] for e in entries]
    batches = [torch.stack(arrays[i : i + batch_size]) for i in range(0, len(arrays), batch_size)]

    def one_pass() -> int:
        for batch in batches:
            to_channels(batch, table).float()
        return len(arrays)

    return time_passes(one_pass, warmup=1, repeats=3, min_seconds=min_seconds)


# --- where the cold time goes -------------------------------------------------------------------------------
#: Stages of one cold cache entry, in the order ``VolumeCache._build_one`` runs them.
STAGES = (
    ("bookkeeping", "entry_path (stat + sha1) and is_valid miss"),
    ("read", "read the .mgz bytes (page cache)"),
    ("gunzip", "gzip.decompress of the whole file"),
    ("nib_parse", "MGHImage.from_bytes: header + image object"),
    ("dataobj", "np.asanyarray(img.dataobj): voxels out of the proxy"),
    ("byteswap", "astype native byte order (>i2 -> <i2)"),
    ("canonical", "to_canonical: LIA -> RAS permute/flip + contiguous copy"),
    ("crop", "foreground mask + crop_box"),
    ("resample", "resample_nearest to image_size"),
    ("to_compact", "FreeSurfer ids -> uint8 compact index + check"),
    ("write_npy", "np.save to temp + fsync + rename"),
    ("crc", "CRC32 of the array bytes"),
    ("write_json", "CRC sidecar: temp + fsync + rename"),
)


def profile_cold(items: list[tuple[str, Path]], root: Path, params: Preprocessing) -> dict[str, list[float]]:
    """Seconds per stage per volume, single process, re-running the build step by step.

    The steps are those of ``read_volume`` → ``preprocess`` → ``VolumeCache.write``, split open so each can
    be timed; the result is checked against ``preprocess(*read_volume(p))`` so the profile cannot drift
    from the code it describes without saying so.
    """
    folder = root / "profile"
    shutil.rmtree(folder, ignore_errors=True)
    cache = VolumeCache(folder, params)
    folder.mkdir(parents=True)
    times: dict[str, list[float]] = {name: [] for name, _ in STAGES}
    for index, (image_id, source) in enumerate(items):
        source = Path(source)
        clock = time.perf_counter()

        def lap(stage: str) -> None:
            nonlocal clock
            now = time.perf_counter()
            times[stage].append(now - clock)
            clock = now

        entry = cache.entry_path(image_id, source)
        cache.is_valid(entry)
        lap("bookkeeping")
        raw = source.read_bytes()
        lap("read")
        decompressed = gzip.decompress(raw)
        lap("gunzip")
        img = MGHImage.from_bytes(decompressed)
        affine = np.asarray(img.affine, dtype=np.float64)
        lap("nib_parse")
        data = np.asanyarray(img.dataobj)
        lap("dataobj")
        data = data.astype(data.dtype.newbyteorder("="), copy=False)
        lap("byteswap")
        canonical, zooms = to_canonical(data, affine)
        lap("canonical")
        start, extent = crop_box(_foreground(canonical, "labelmap"), zooms, params.image_size, params.margin_mm)
        lap("crop")
        resampled = resample_nearest(canonical, start, extent, params.image_size)
        lap("resample")
        compact = to_compact(resampled)
        lap("to_compact")
        _atomic_write(entry, lambda f: np.save(f, compact, allow_pickle=False))
        lap("write_npy")
        crc = zlib.crc32(np.ascontiguousarray(compact).tobytes())
        lap("crc")
        meta = f'{{"crc32": {crc}}}'.encode()
        _atomic_write(entry.with_suffix(".json"), lambda f: f.write(meta))
        lap("write_json")
        if index == 0 and not np.array_equal(compact, preprocess(*read_volume(source), params)):
            raise RuntimeError("the staged profile no longer matches preprocess(read_volume()): update profile_cold")
    return times


# --- report -------------------------------------------------------------------------------------------------
def _cpu_model() -> str:
    try:
        for line in Path("/proc/cpuinfo").read_text().splitlines():
            if line.startswith("model name"):
                return line.split(":", 1)[1].strip()
    except OSError:
        pass
    return platform.processor() or "unknown"


def machine_facts() -> list[str]:
    affinity = len(os.sched_getaffinity(0)) if hasattr(os, "sched_getaffinity") else os.cpu_count()
    return [
        f"date {datetime.date.today().isoformat()}, {platform.system()} {platform.machine()}, CPU {_cpu_model()}",
        f"cpu_count {os.cpu_count()} (usable {affinity}), torch {torch.__version__}, "
        f"torch threads {torch.get_num_threads()} (1 inside DataLoader workers), numpy {np.__version__}, "
        f"nibabel {nib.__version__}, python {platform.python_version()}",
    ]


def print_table(rates: dict[str, Rate]) -> None:
    """Path, median volumes/s (spread over passes), ratio to the comparable seed figure."""
    header = f"{'path':<52} {'vol/s':>9} {'(min-max)':>15} {'x seed':>8}  compared with"
    print(header)
    print("-" * len(header))
    for rate in rates.values():
        base = rates[rate.baseline] if rate.baseline else None
        ratio = f"{rate.median / base.median:.1f}" if base else "-"
        against = base.path if base else rate.note
        print(f"{rate.path:<52} {rate.median:>9.3g} {rate.spread:>15} {ratio:>8}  {against}")


def print_profile(times: dict[str, list[float]], cold_single: float) -> None:
    """Mean ms per stage, its share, and the sum next to the measured single-process build."""
    total = sum(statistics.fmean(v) for v in times.values())
    print(f"{'stage':<12} {'ms/vol':>7} {'share':>6}  what")
    for name, what in STAGES:
        mean = statistics.fmean(times[name])
        print(f"{name:<12} {1000 * mean:>7.1f} {100 * mean / total:>5.1f}%  {what}")
    print(f"{'sum':<12} {1000 * total:>7.1f}         measured VolumeCache.build, 1 process: "
          f"{1000 / cold_single:.1f} ms/vol (rest: pool, tqdm, Python overhead)")


def _mib(n: float) -> str:
    return f"{n / 2**20:.2f} MiB"


def run(args: argparse.Namespace, work: Path) -> None:
    size = (args.image_size,) * 3
    params = Preprocessing("labelmap", size)
    cohort = work / "cohort"
    started = time.perf_counter()
    generate_cohort(cohort, subjects=args.images, size=args.size, seed=args.seed, second_visit_fraction=0.0,
                    workers=max(1, args.workers))
    manifest = build_manifest(ManifestSpec(csv_path=cohort / CSV_NAME, data_dir=cohort))
    items = list(zip(manifest["image_id"], manifest["path"]))
    paths = [Path(p) for p in manifest["path"]]
    print(f"generated {len(items)} label maps of {args.size}^3 in {cohort} "
          f"({time.perf_counter() - started:.1f} s); image_size {args.image_size}^3, workers {args.workers}")
    print("all paths read files from the page cache (just written; OS caches not dropped)\n")

    rates: dict[str, Rate] = {}
    w = args.workers
    seed = SeedDataset(paths, size)
    print("timing the seed's path ...", flush=True)
    rates["seed1"] = Rate("seed: nib get_fdata+interp+zscore, 1 proc, bs1",
                          loader_rates(seed, 1, 0, 1, args.repeats), note="baseline (single process)")
    if w > 0:
        rates["seedW"] = Rate(f"seed: same, DataLoader {w} workers, bs1",
                              loader_rates(seed, 1, w, 1, args.repeats), note="baseline (parallel)")
    parallel_base = "seedW" if w > 0 else "seed1"

    print("timing the cold cache build ...", flush=True)
    single, entries = cold_rates(items, work, params, 0, args.repeats)
    rates["cold1"] = Rate("cold: VolumeCache.build, 1 proc", single, "seed1")
    if w > 0:
        rates["coldW"] = Rate(f"cold: VolumeCache.build, {w} procs", cold_rates(items, work, params, w, args.repeats)[0],
                              parallel_base)

    print("timing warm reads ...", flush=True)
    encoder = TabularEncoder().fit(manifest["age"])
    dataset = VolumeDataset(manifest, entries, encoder)
    for workers, base in ((0, "seed1"), (w, parallel_base)) if w > 0 else ((0, "seed1"),):
        for batch_size in (1, 4):
            label = "1 proc" if workers == 0 else f"{workers} workers"
            rates[f"warm{workers}b{batch_size}"] = Rate(
                f"warm: VolumeDataset mmap, DataLoader {label}, bs{batch_size}",
                loader_rates(dataset, batch_size, workers, 1, 3, args.min_seconds), base)
    ordered = [entries[i] for i in manifest["image_id"]]
    for batch_size in (1, 4):
        rates[f"chan{batch_size}"] = Rate(
            f"to_channels on CPU only ({len(DEFAULT_CHANNELS)} ch), bs{batch_size}",
            channel_rates(ordered, batch_size, args.min_seconds), note="not in warm rows; on device in training")
    warm1 = rates["warm0b4"].median
    chan = rates["chan4"].median
    rates["warmchan"] = Rate("warm bs4 1 proc + to_channels on CPU (1/(1/a+1/b))",
                             [1 / (1 / warm1 + 1 / chan)], "seed1")

    print("profiling the cold path stage by stage ...\n", flush=True)
    times = profile_cold(items, work, params)

    print("== throughput (median over passes; ratios single-process vs single-process, parallel vs parallel)")
    print_table(rates)

    entry_bytes = statistics.fmean(e.stat().st_size for e in ordered)
    sidecar_bytes = statistics.fmean(e.with_suffix(".json").stat().st_size for e in ordered)
    mgz_bytes = statistics.fmean(p.stat().st_size for p in paths)
    seed_bytes = 4 * int(np.prod(size))
    print("\n== sizes per volume")
    print(f".mgz on disk (mean)            {_mib(mgz_bytes)}  ({mgz_bytes:,.0f} B)")
    print(f"cache entry .npy uint8 (mean)  {_mib(entry_bytes)}  ({entry_bytes:,.0f} B) + {sidecar_bytes:.0f} B CRC sidecar")
    print(f"seed float32 tensor            {_mib(seed_bytes)}  ({seed_bytes:,} B) = {seed_bytes / entry_bytes:.1f}x the entry;"
          f" transient float64 get_fdata {_mib(8 * args.size**3)}")
    print(f"to_channels output float32     {_mib(4 * len(DEFAULT_CHANNELS) * np.prod(size))} (made on the device)")

    print("\n== cold path, single process, stage by stage (mean over all volumes)")
    print_profile(times, rates["cold1"].median)

    warm_ratio = min(rates[k].median / rates[rates[k].baseline].median for k in rates if k.startswith("warm") and k != "warmchan")
    cold_ratio = rates["cold1"].median / rates["seed1"].median
    print("\n== targets (informational): warm >= "
          f"{TARGET_WARM:.0f}x seed: worst warm row {warm_ratio:.0f}x; cold >= {TARGET_COLD:.0f}x seed "
          f"(1 proc vs 1 proc): {cold_ratio:.2f}x")
    print("\n== machine")
    for line in machine_facts():
        print(line)


def parse_args(argv: list[str] | None = None) -> argparse.Namespace:
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument("--images", type=int, default=24, help="label maps to generate (one visit per subject)")
    parser.add_argument("--size", type=int, default=256, help="generated grid side (FastSurfer conforms to 256)")
    parser.add_argument("--image-size", type=int, default=128, help="network/cache side")
    parser.add_argument("--workers", type=int, default=2, help="DataLoader workers / cache build processes")
    parser.add_argument("--repeats", type=int, default=3, help="timed passes of the seed and cold paths (median)")
    parser.add_argument("--min-seconds", type=float, default=2.0, help="minimum timed seconds per warm figure")
    parser.add_argument("--seed", type=int, default=0, help="synthetic cohort seed")
    parser.add_argument("--out", type=Path, default=None, help="keep cohort and caches here (default: temp dir)")
    args = parser.parse_args(argv)
    if args.images < 1 or args.workers < 0 or args.repeats < 1:
        parser.error("need --images >= 1, --workers >= 0, --repeats >= 1")
    return args


def main(argv: list[str] | None = None) -> None:
    args = parse_args(argv)
    if args.out is not None:
        args.out.mkdir(parents=True, exist_ok=True)
        run(args, args.out)
    else:
        with tempfile.TemporaryDirectory(prefix="adni-data-path-") as tmp:
            run(args, Path(tmp))


if __name__ == "__main__":
    main()
