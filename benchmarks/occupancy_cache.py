"""Occupancy (partial-volume) channels against the nearest-neighbour label index: cache size, build time, volumes.

Why it exists: ``data.preprocessing.label_encoding occupancy`` caches one uint8 fraction per structure channel and
voxel instead of one uint8 label index per voxel, so its cache is C times larger (C = 9 default channels) and its
build does more work per image. Issue 17 asks for the size per image at 48³, 96³ and 128³, on disk and in the
device-resident cohort, and the preprocessing time per image; this program measures them on real-size (256³, 1 mm)
synthetic label maps in the download format, and shows what the encoding is for: each channel's volume at network
resolution against its full-resolution volume (nearest neighbour biases small structures; the fractions sum to the
full-resolution volume up to uint8 rounding). It asserts nothing about time: it is a measuring instrument.

Each build runs in this process (``num_workers 0``) into an empty cache folder, so its time per image is decode +
preprocess + write; the files are in the page cache (just generated). On a shared machine the times vary with the
load: compare the two encodings of one run, not runs.

Run: ``python benchmarks/occupancy_cache.py [--images 4] [--sizes 48 96 128]``.
"""

from __future__ import annotations

import argparse
import os
import sys
import tempfile
import time
from pathlib import Path

os.environ.setdefault("TQDM_DISABLE", "1")

_REPO = Path(__file__).resolve().parents[1]
if str(_REPO) not in sys.path:  # runnable from a checkout without `pip install -e .`
    sys.path.insert(0, str(_REPO))

import numpy as np  # noqa: E402
import pandas as pd  # noqa: E402
import torch  # noqa: E402

from adni_lightning.data.augment import to_channels  # noqa: E402
from adni_lightning.data.cache import VolumeCache  # noqa: E402
from adni_lightning.data.labels import channel_lookup  # noqa: E402
from adni_lightning.data.preprocess import FULL, LabelEncoding, Preprocessing  # noqa: E402
from adni_lightning.synth import generate_cohort  # noqa: E402

ENCODINGS: tuple[LabelEncoding, ...] = ("nearest", "occupancy")
#: The channels whose volume error is shown: the small AD markers and the largest structure.
SHOWN = ("hippocampus", "amygdala", "inf_lat_vent", "cortex")


def _build(images: pd.DataFrame, params: Preprocessing, root: Path) -> tuple[dict[str, Path], float]:
    """Build the cache of ``images`` into an empty folder; the entries and the seconds per image."""
    cache = VolumeCache(root, params)
    started = time.perf_counter()
    entries = cache.build(zip(images["image_id"], images["path"]))
    return entries, (time.perf_counter() - started) / len(images)


def _channel_volumes(entry: Path, cache: VolumeCache) -> np.ndarray:
    """Each channel's volume (mm³) as the network sees it: one-hot voxels, or the sum of fractions."""
    geometry = cache.geometry(entry)
    voxel_mm3 = float(np.prod(np.asarray(geometry.extent) / np.asarray(cache.params.size)))  # 1 mm source voxels
    array = torch.from_numpy(np.load(entry))
    if cache.params.occupancy:
        return array.flatten(1).double().sum(dim=1).numpy() / FULL * voxel_mm3
    table = torch.from_numpy(channel_lookup(cache.params.channel_map))
    return to_channels(array[None, None], table)[0].flatten(1).double().sum(dim=1).numpy() * voxel_mm3


def main(argv: list[str] | None = None) -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--images", type=int, default=4, help="synthetic subjects (256³ label maps) to build")
    parser.add_argument("--sizes", type=int, nargs="+", default=[48, 96, 128], help="cached image sizes (cubes)")
    args = parser.parse_args(argv)
    torch.set_num_threads(1)
    with tempfile.TemporaryDirectory() as tmp:
        folder = Path(tmp)
        generate_cohort(folder / "cohort", subjects=args.images, size=256, seed=0, second_visit_fraction=0.0, workers=1)
        csv = next((folder / "cohort").glob("*.csv"))
        table = pd.read_csv(csv)
        images = pd.DataFrame(
            {
                "image_id": table["Image Data ID"].astype(str),
                "path": [next((folder / "cohort").rglob(f"{i}.*")) for i in table["Image Data ID"].astype(str)],
            }
        )
        rows = []
        for size in args.sizes:
            for encoding in ENCODINGS:
                params = Preprocessing(image_size=size, label_encoding=encoding)
                root = folder / f"cache-{encoding}-{size}"
                entries, seconds = _build(images, params, root)
                cache = VolumeCache(root, params)
                first = entries[images["image_id"].iloc[0]]
                errors = []  # per image and channel: network-resolution volume / full-resolution volume - 1
                for image_id, source in zip(images["image_id"], images["path"]):
                    counted = cache.volumes(image_id, source)  # full resolution, from the sidecar
                    full = np.array([sum(counted.get(i, 0.0) for i in ids) for ids in params.channel_map.values()])
                    errors.append(_channel_volumes(entries[image_id], cache) / full - 1)
                mean_abs = 100 * np.abs(np.array(errors)).mean(axis=0)
                rows.append(
                    {
                        "size": f"{size}³",
                        "encoding": encoding,
                        "entry bytes (disk)": first.stat().st_size,
                        "resident bytes": int(np.load(first, mmap_mode="r").nbytes),
                        "s / image": round(seconds, 3),
                        **{
                            f"{name} |err| %": round(float(e), 2)
                            for name, e in zip(params.channel_map, mean_abs)
                            if name in SHOWN
                        },
                    }
                )
    frame = pd.DataFrame(rows)
    print(f"{args.images} synthetic 256³ label maps, {torch.get_num_threads()} torch thread, in-process builds")
    print("'|err| %': mean over images of |channel volume at network resolution / full-resolution volume - 1|")
    print(frame.to_string(index=False))


if __name__ == "__main__":
    main()
