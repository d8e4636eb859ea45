"""Training throughput, three ways, to name what sets the pace: the model or the data path.

Why it exists: on an accelerator the loader can starve the model, and nothing in a training log shows it. This
program measures, on the current device (CUDA when available, else the CPU), training volumes per second

* **model-only**: one batch resident on the device; forward, loss, backward, gradient clipping (the config's
  ``gradient_clip_val``) and the optimizer step, under the precision's autocast (and a GradScaler for
  ``16-mixed``), as Lightning's precision plugin runs them, plus the module's per-step finiteness check;
* **data-only**: the DataModule's training loader → device → ``on_after_batch_transfer`` (augmentation and
  ``to_channels``), i.e. all the model waits for;
* **end-to-end**: Lightning's ``fit`` on the same objects, steps timed by a callback (validation off:
  training volumes/s; checkpoints off);

for both data paths: ``loader`` (DataLoader with ``data.loader.num_workers`` workers) and ``resident``
(``data.loader.device_cache``: the cohort in one tensor on the device), and for model variants: precision
(``32-true``, ``bf16-mixed``, ``16-mixed`` on CUDA only), ``model.channels_last``, ``model.compile`` and fused
AdamW (``model.optimizer.init_args.fused``). By default each variant changes one option of the baseline (the
first value of each list); ``--grid`` runs every combination. busy = end-to-end ÷ model-only of the same
variant; "limits" names the slower of model-only and data-only. Every figure comes from this one run.

The model, DataModule and Trainer are built from ``--config`` through the CLI's own parser, as ``fit`` builds
them. Without ``--data_dir`` a synthetic cohort is generated in the work folder; the cache and the split go
there too (a temp folder unless ``--out``), never into the data folder. It asserts nothing about time.

Peak device memory is ``torch.cuda.max_memory_allocated`` of the end-to-end run; peak host RSS is this
process's high-water mark (``VmHWM``, reset before each measurement) and leaves out DataLoader workers.

Run: ``python benchmarks/throughput.py [--config FILE] [--image_sizes 48 128] [--steps 10] [--short]``.
"""

from __future__ import annotations

import argparse
import datetime
import gc
import itertools
import logging
import math
import os
import platform
import resource
import shutil
import sys
import tempfile
import time
import warnings
from collections.abc import Iterator
from dataclasses import dataclass, replace
from pathlib import Path

# The cache's and the generator's progress bars would interleave with the table.
os.environ.setdefault("TQDM_DISABLE", "1")

_REPO = Path(__file__).resolve().parents[1]
if str(_REPO) not in sys.path:  # runnable from a checkout without `pip install -e .`
    sys.path.insert(0, str(_REPO))

import lightning as L  # noqa: E402
import torch  # noqa: E402
import torch.nn.functional as F  # noqa: E402
from lightning.fabric.utilities.apply_func import move_data_to_device  # noqa: E402
from lightning.pytorch.callbacks import Callback, ModelCheckpoint  # noqa: E402

from adni_lightning.cli import DEFAULT_CONFIG, ADNILightningCLI  # noqa: E402
from adni_lightning.console import KNOWN_NOISE  # noqa: E402
from adni_lightning.data.batch import Batch  # noqa: E402
from adni_lightning.data.dataset import collate_volumes  # noqa: E402
from adni_lightning.data.resident import ResidentCohort  # noqa: E402
from adni_lightning.run import Run  # noqa: E402
from adni_lightning.synth import generate_cohort  # noqa: E402

#: Autocast dtype of each precision (None: no autocast).
AUTOCAST = {"32-true": None, "bf16-mixed": torch.bfloat16, "16-mixed": torch.float16}
PATHS = ("loader", "resident")
#: Short mode: the test cohort's scale and a tiny network, so the whole table takes seconds on a CPU.
SHORT_MODEL = [
    "--model.image_encoder.init_args.widths",
    "[4, 8]",
    "--model.image_encoder.init_args.blocks",
    "[1, 1]",
]


@dataclass(frozen=True)
class Variant:
    """The model options one row measures."""

    precision: str = "32-true"
    channels_last: bool = False
    compile: bool = False
    fused: bool = False

    @property
    def name(self) -> str:
        flags = [name for name in ("channels_last", "compile", "fused") if getattr(self, name)]
        return "+".join([self.precision, *flags])

    def overrides(self) -> list[str]:
        options = [
            *("--trainer.precision", self.precision),
            *("--model.channels_last", str(self.channels_last).lower()),
            *("--model.compile", str(self.compile).lower()),
        ]
        if self.fused:
            options += ["--model.optimizer.init_args.fused", "true"]
        return options


@dataclass
class Measure:
    """Volumes/s of one measurement, with what it cost."""

    rate: float
    first_step_s: float = math.nan
    peak_device_gib: float = math.nan
    peak_rss_gib: float = math.nan


# --- the machine ---------------------------------------------------------------------------------------------
def synchronize(device: torch.device) -> None:
    """Wait for the device's queued work, so a timestamp covers it (a no-op on the CPU)."""
    if device.type == "cuda":
        torch.cuda.synchronize(device)


def reset_peaks(device: torch.device) -> None:
    """Start a measurement's peaks: the device allocator's and this process's RSS high-water mark.

    Writing 5 to ``/proc/self/clear_refs`` resets ``VmHWM`` to the current RSS (Linux ≥ 4.0); elsewhere the
    figure is the process's lifetime peak.
    """
    gc.collect()
    if device.type == "cuda":
        torch.cuda.empty_cache()
        torch.cuda.reset_peak_memory_stats(device)
    try:
        Path("/proc/self/clear_refs").write_text("5")
    except OSError:
        pass


def peak_rss_gib() -> float:
    """This process's RSS high-water mark since :func:`reset_peaks`, GiB."""
    try:
        for line in Path("/proc/self/status").read_text().splitlines():
            if line.startswith("VmHWM:"):
                return int(line.split()[1]) / 2**20
    except OSError:
        pass
    kib = resource.getrusage(resource.RUSAGE_SELF).ru_maxrss  # KiB on Linux
    return kib / 2**20


def peak_device_gib(device: torch.device) -> float:
    return torch.cuda.max_memory_allocated(device) / 2**30 if device.type == "cuda" else math.nan


def machine_lines(device: torch.device) -> list[str]:
    name = torch.cuda.get_device_name(device) if device.type == "cuda" else platform.processor() or "CPU"
    cudnn = f", cuDNN {torch.backends.cudnn.version()}" if device.type == "cuda" else ""
    return [
        f"date {datetime.date.today().isoformat()}, {platform.system()} {platform.machine()}, device {device} ({name})",
        f"cpu_count {os.cpu_count()} (usable {len(os.sched_getaffinity(0))}), torch threads {torch.get_num_threads()}, "
        f"torch {torch.__version__}{cudnn}, lightning {L.__version__}, python {platform.python_version()}",
    ]


def load_average() -> str:
    return " ".join(f"{x:.2f}" for x in os.getloadavg())


# --- building a run as `fit` does ----------------------------------------------------------------------------
@dataclass
class Setup:
    """Everything every build shares: the config, the cohort, where runs go, and the command line's sizes."""

    configs: list[Path]
    data_dir: Path
    work: Path
    batch_size: int
    accelerator: str
    extra: list[str]

    def build(self, size: int, path: str, variant: Variant, max_steps: int | None = None) -> ADNILightningCLI:
        """The CLI's model, DataModule and Trainer for one measurement (nothing run yet); ``max_steps``: a fit
        of that many training steps, across as many epochs as it takes.
        """
        run = self.work / "runs" / f"{size}-{path}-{variant.name}"
        shutil.rmtree(run, ignore_errors=True)
        overrides = [
            *("--data.manifest.data_dir", str(self.data_dir)),
            *("--data.cache_dir", str(self.work / "cache")),
            *("--data.split.file", str(self.work / "split.csv")),
            *("--data.preprocessing.image_size", str(size)),
            *("--data.loader.batch_size", str(self.batch_size)),
            *("--data.loader.device_cache", str(path == "resident").lower()),
            *("--trainer.default_root_dir", str(run)),
            *("--trainer.accelerator", self.accelerator, "--trainer.devices", "1"),
            *("--trainer.logger", "false", "--trainer.enable_progress_bar", "false"),
            *("--trainer.enable_model_summary", "false"),
            *("--trainer.limit_val_batches", "0", "--trainer.num_sanity_val_steps", "0"),
            # Some 3D pooling backward kernels have no deterministic CUDA implementation (as configs/adni.yaml).
            *(("--trainer.deterministic", "warn") if self.accelerator == "gpu" else ()),
            *variant.overrides(),
            *self.extra,
            # A step count, not epochs: no schedule over max_epochs (the learning rate does not change the speed).
            *(
                ("--trainer.max_steps", str(max_steps), "--trainer.max_epochs", "-1", "--model.lr_scheduler", "null")
                if max_steps
                else ()
            ),
        ]
        return Run(self.configs, overrides).cli


def resident_batch(cli: ADNILightningCLI, device: torch.device, batch_size: int) -> Batch:
    """The first ``batch_size`` training images as a network-ready batch on ``device`` (no augmentation)."""
    dm = cli.datamodule
    dm.prepare_data()
    dm.setup("fit")
    train = dm.datasets["train"]
    if len(train) < batch_size:
        raise SystemExit(f"the training split has {len(train)} images, fewer than --batch_size {batch_size}")
    batch = move_data_to_device(collate_volumes([train[i] for i in range(batch_size)]), device)
    batch["image"] = dm.network_input(batch["volume"])
    return batch


# --- the three measurements ----------------------------------------------------------------------------------
def model_only(cli: ADNILightningCLI, variant: Variant, device: torch.device, warmup: int, steps: int) -> Measure:
    """Training steps on one batch kept on the device; the first step (compilation, if any) is reported apart."""
    batch = resident_batch(cli, device, cli.datamodule.loader.batch_size)
    model = cli.model.to(device).train()
    optimizer = model.optimizer_factory(model.parameters())  # the schedule steps per epoch: not timed here
    clip = cli.trainer.gradient_clip_val
    dtype = AUTOCAST[variant.precision]
    scaler = torch.amp.GradScaler(device.type, enabled=dtype is torch.float16)

    def step() -> None:
        with torch.autocast(device.type, dtype=dtype or torch.float32, enabled=dtype is not None):
            logits = model(batch["image"], batch["tabular"]).float()
        loss = F.cross_entropy(logits, batch["label"], weight=model.class_weights)
        bool(torch.isfinite(loss))  # the module's check: one device sync per step
        scaler.scale(loss).backward()
        if clip:
            scaler.unscale_(optimizer)
            torch.nn.utils.clip_grad_norm_(model.parameters(), clip)
        scaler.step(optimizer)
        scaler.update()
        optimizer.zero_grad(set_to_none=True)

    reset_peaks(device)
    start = time.perf_counter()
    step()
    synchronize(device)
    first = time.perf_counter() - start
    for _ in range(warmup - 1):
        step()
    synchronize(device)
    start = time.perf_counter()
    for _ in range(steps):
        step()
    synchronize(device)
    elapsed = time.perf_counter() - start
    return Measure(steps * len(batch["label"]) / elapsed, first, peak_device_gib(device), peak_rss_gib())


def _endless(loader: torch.utils.data.DataLoader) -> Iterator[Batch]:
    """Batches epoch after epoch, the sampler told each epoch as Lightning tells it."""
    for epoch in itertools.count():
        loader.sampler.set_epoch(epoch)
        yield from loader


def data_only(cli: ADNILightningCLI, device: torch.device, warmup: int, steps: int) -> tuple[Measure, float]:
    """Loader → device → ``on_after_batch_transfer``, as in training; also the resident cohort's load time."""
    dm, trainer = cli.datamodule, cli.trainer
    dm.trainer = trainer  # what train_dataloader and on_after_batch_transfer read
    trainer.training = True  # augment, as in a training step
    dm.prepare_data()
    dm.setup("fit")
    reset_peaks(device)
    start = time.perf_counter()
    loader = dm.train_dataloader()
    if dm.loader.device_cache:
        dm.resident_cohort()
    load_s = time.perf_counter() - start
    batches = _endless(loader)
    volumes = 0
    for index in range(warmup + steps):
        if index == warmup:
            synchronize(device)
            start, volumes = time.perf_counter(), 0
        batch = dm.on_after_batch_transfer(move_data_to_device(next(batches), device), 0)
        volumes += len(batch["label"])
    synchronize(device)
    rate = volumes / (time.perf_counter() - start)
    batches.close()  # shuts persistent workers down before the next measurement
    return Measure(rate, peak_device_gib=peak_device_gib(device), peak_rss_gib=peak_rss_gib()), load_s


class StepTimer(Callback):
    """Timestamps the end of every training step (after the device's queued work) and counts its volumes."""

    def __init__(self, device: torch.device) -> None:
        self.device = device
        self.ends: list[float] = []
        self.volumes: list[int] = []

    def on_train_batch_end(self, trainer: L.Trainer, module: L.LightningModule, outputs, batch, batch_idx) -> None:
        synchronize(self.device)
        self.ends.append(time.perf_counter())
        self.volumes.append(len(batch["label"]))

    def rate(self, warmup: int) -> float:
        return sum(self.volumes[warmup:]) / (self.ends[-1] - self.ends[warmup - 1])


def timed_fit(cli: ADNILightningCLI) -> StepTimer:
    """Run the CLI's ``fit`` with its steps timed and without checkpoints (their writes are not training)."""
    timer = StepTimer(cli.trainer.strategy.root_device)
    cli.trainer.callbacks = [c for c in cli.trainer.callbacks if not isinstance(c, ModelCheckpoint)] + [timer]
    cli.trainer.fit(cli.model, datamodule=cli.datamodule)
    return timer


def end_to_end(setup: Setup, size: int, path: str, variant: Variant, warmup: int, steps: int) -> Measure:
    """Lightning ``fit`` steps (validation and checkpoints off), timed after ``warmup`` steps."""
    cli = setup.build(size, path, variant, max_steps=warmup + steps)
    device = cli.trainer.strategy.root_device
    reset_peaks(device)
    timer = timed_fit(cli)
    return Measure(timer.rate(warmup), peak_device_gib=peak_device_gib(device), peak_rss_gib=peak_rss_gib())


# --- the table -----------------------------------------------------------------------------------------------
def variants(args: argparse.Namespace) -> list[Variant]:
    """Every combination (``--grid``), or the baseline and each option changed alone."""
    axes = {
        "precision": args.precisions,
        "channels_last": [v == "on" for v in args.channels_last],
        "compile": [v == "on" for v in args.compile],
        "fused": [v == "on" for v in args.fused],
    }
    if args.grid:
        return [Variant(*values) for values in itertools.product(*axes.values())]
    baseline = Variant(**{name: values[0] for name, values in axes.items()})
    changed = [replace(baseline, **{name: v}) for name, values in axes.items() for v in values[1:]]
    return [baseline, *dict.fromkeys(v for v in changed if v != baseline)]


def _fmt(value: float, digits: int = 3) -> str:
    if math.isnan(value):
        return "-"
    return f"{value:.0f}" if value >= 100 else f"{value:.{digits}g}"


HEADER = (
    "| size | data path | precision | channels_last | compile | fused | model-only vol/s | data-only vol/s "
    "| end-to-end vol/s | busy | limits | first step s | peak device GiB | peak host RSS GiB |"
)


def row(size: int, path: str, variant: Variant, model: Measure, data: Measure, e2e: Measure) -> str:
    on = {True: "on", False: "off"}
    limits = "data" if data.rate < model.rate else "model"
    cells = [
        f"{size}³",
        path,
        variant.precision,
        on[variant.channels_last],
        on[variant.compile],
        on[variant.fused],
        _fmt(model.rate),
        _fmt(data.rate),
        _fmt(e2e.rate),
        f"{e2e.rate / model.rate:.2f}",
        limits,
        _fmt(model.first_step_s),
        _fmt(e2e.peak_device_gib, 2),
        _fmt(e2e.peak_rss_gib, 2),
    ]
    return "| " + " | ".join(cells) + " |"


def rss_cohort(setup: Setup, size: int, images: int, warmup: int, steps: int) -> list[str]:
    """Peak host RSS with a resident cohort of ``images`` volumes: the real ones, then the first entry repeated.

    A dense tensor takes the same memory whatever its contents, so repeating one cached entry measures a
    cohort of that many images without generating and caching it.
    """
    cli = setup.build(size, "resident", Variant(), max_steps=warmup + steps)
    dm, device = cli.datamodule, cli.trainer.strategy.root_device
    dm.trainer = cli.trainer
    dm.prepare_data()
    dm.setup("fit")
    entries = list(dict.fromkeys(e for d in dm.datasets.values() for e in d.entries))
    padded = entries + [entries[0]] * max(0, images - len(entries))
    reset_peaks(device)
    before = peak_rss_gib()
    cohort = dm.resident = ResidentCohort(padded, device)
    built = peak_rss_gib()
    timer = timed_fit(cli)
    if dm.resident is not cohort:
        raise RuntimeError("fit loaded a cohort of its own instead of the padded one: the figure would be wrong")
    return [
        f"resident cohort of {len(padded)} images at {size}³ ({len(entries)} real, the rest one cached entry "
        f"repeated): {dm.resident.nbytes / 2**30:.2f} GiB on {dm.resident.volumes.device}",
        f"host RSS of this process: {before:.2f} GiB before loading it, peak {built:.2f} GiB once loaded, "
        f"peak {peak_rss_gib():.2f} GiB over {warmup + steps} training steps at batch {setup.batch_size} "
        f"({timer.rate(warmup):.3g} vol/s)",
    ]


def parse_args(argv: list[str] | None = None) -> argparse.Namespace:
    cuda = torch.cuda.is_available()
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--config", type=Path, action="append", help="run config(s) (default: packaged synthetic)")
    parser.add_argument("--image_sizes", type=int, nargs="+", default=[48, 128], help="cubic network input sizes")
    parser.add_argument("--batch_size", type=int, default=8)
    parser.add_argument("--steps", type=int, default=10, help="timed steps per measurement")
    parser.add_argument("--warmup", type=int, default=3, help="untimed steps first (at least 1)")
    parser.add_argument("--device", choices=["cuda", "cpu"], default="cuda" if cuda else "cpu")
    parser.add_argument(
        "--precisions",
        nargs="+",
        choices=list(AUTOCAST),
        default=["32-true", "bf16-mixed", "16-mixed"] if cuda else ["32-true", "bf16-mixed"],
        help="16-mixed is CUDA only (Lightning turns it into bf16-mixed on the CPU)",
    )
    parser.add_argument("--channels_last", nargs="+", choices=["off", "on"], default=["off", "on"])
    parser.add_argument("--compile", nargs="+", choices=["off", "on"], help="default: off on (--short: off)")
    parser.add_argument("--fused", nargs="+", choices=["off", "on"], default=["off", "on"], help="fused AdamW")
    parser.add_argument("--paths", nargs="+", choices=PATHS, default=list(PATHS))
    parser.add_argument("--grid", action="store_true", help="every combination of the options, not one at a time")
    parser.add_argument("--data_dir", type=Path, help="an existing cohort (CSV + label maps); default: generate one")
    parser.add_argument("--subjects", type=int, default=64, help="subjects of the generated cohort")
    parser.add_argument("--cohort_size", type=int, default=96, help="grid side of the generated label maps")
    parser.add_argument("--rss_cohort", type=int, help="also: peak host RSS with a resident cohort of this many images")
    parser.add_argument("--out", type=Path, help="keep the work folder (cohort, cache, split) here")
    parser.add_argument(
        "--short", action="store_true", help="a check that it runs: 16³, a tiny network, batch 4, 2 steps"
    )
    args = parser.parse_args(argv)
    if args.device == "cpu" and "16-mixed" in args.precisions:
        parser.error("--precisions 16-mixed needs CUDA (on the CPU Lightning runs it as bf16-mixed)")
    if args.device == "cuda" and not cuda:
        parser.error("--device cuda: no CUDA device is visible")
    if args.warmup < 1 or args.steps < 1:
        parser.error("--warmup and --steps must be at least 1")
    if args.short:
        args.image_sizes, args.batch_size, args.steps, args.warmup = [16], 4, 2, 1
        args.subjects, args.cohort_size = min(args.subjects, 16), 32
    args.compile = args.compile or (["off"] if args.short else ["off", "on"])
    return args


def quiet() -> None:
    """Keep stderr to the progress lines: Lightning's per-Trainer banners and the project's known noise go."""
    for name in ("lightning.pytorch", "lightning.fabric"):
        logging.getLogger(name).setLevel(logging.WARNING)
    for pattern in KNOWN_NOISE:
        warnings.filterwarnings("ignore", message=pattern)


def main(argv: list[str] | None = None) -> None:
    args = parse_args(argv)
    quiet()
    device = torch.device(args.device)
    work = args.out or Path(tempfile.mkdtemp(prefix="throughput-"))
    work.mkdir(parents=True, exist_ok=True)
    data_dir = args.data_dir or work / "cohort"
    try:
        if args.data_dir is None and not (data_dir / "ADNI_1p5T_Filtered.csv").exists():
            generate_cohort(data_dir, subjects=args.subjects, size=args.cohort_size, seed=0, workers=2)
        setup = Setup(
            configs=args.config or [DEFAULT_CONFIG],
            data_dir=data_dir,
            work=work,
            batch_size=args.batch_size,
            accelerator="gpu" if device.type == "cuda" else "cpu",
            extra=SHORT_MODEL if args.short else [],
        )
        run(setup, args, device)
    finally:
        if args.out is None:
            shutil.rmtree(work, ignore_errors=True)


def _progress(what: str) -> None:
    print(f"{what} ...", file=sys.stderr, flush=True)


def run(setup: Setup, args: argparse.Namespace, device: torch.device) -> None:
    """Measure every row, then print the table and what it was measured on."""
    began, load_before = time.perf_counter(), load_average()
    rows, notes = [], []
    chosen = variants(args)
    for size in args.image_sizes:
        data = {}
        for path in args.paths:
            cli = setup.build(size, path, Variant())
            _progress(f"{size}³ data-only, {path}")
            data[path], load_s = data_only(cli, device, args.warmup, args.steps)
            steps_per_epoch = math.ceil(len(cli.datamodule.datasets["train"]) / args.batch_size)
            if path == "resident":
                notes.append(f"{size}³: loading the resident cohort took {load_s:.2f} s (once per run, not timed)")
            del cli
        for variant in chosen:
            _progress(f"{size}³ model-only, {variant.name}")
            model = model_only(setup.build(size, "loader", variant), variant, device, args.warmup, args.steps)
            # A compiled network compiles again for an epoch's short last batch: warm up past the first epoch.
            warmup = max(args.warmup, steps_per_epoch + 1) if variant.compile else args.warmup
            for path in args.paths:
                _progress(f"{size}³ end-to-end, {path}, {variant.name}")
                e2e = end_to_end(setup, size, path, variant, warmup, args.steps)
                rows.append(row(size, path, variant, model, data[path], e2e))
    if args.rss_cohort:
        _progress(f"{max(args.image_sizes)}³ resident cohort of {args.rss_cohort} images")
        notes += rss_cohort(setup, max(args.image_sizes), args.rss_cohort, args.warmup, args.steps)
    print(f"== training throughput, batch {args.batch_size}, {args.steps} timed steps after {args.warmup} warm-up")
    print()
    print(HEADER)
    print("|" + "---|" * (HEADER.count("|") - 1))
    print("\n".join(rows))
    print()
    print(
        "- busy: end-to-end ÷ model-only; limits: the slower of model-only and data-only; first step: model-only's "
        "first step (torch.compile's warm-up when compile is on); peak host RSS: this process, DataLoader workers "
        "not included"
    )
    for note in notes:
        print(f"- {note}")
    print(f"- config {', '.join(str(c) for c in setup.configs)}; data {setup.data_dir}")
    for line in machine_lines(device):
        print(f"- {line}")
    print(f"- load average (1/5/15 min) before {load_before}, after {load_average()}")
    print(f"- wall time {time.perf_counter() - began:.0f} s")


if __name__ == "__main__":
    main()
