"""Which brain structures drive a prediction: structure occlusion and Integrated Gradients for a checkpoint.

``python -m adni_lightning interpret [--config FILE ...] --ckpt_path C [--split val|test|all] [--out DIR]
[--ig_steps N] [--max_images N] [overrides]`` builds the DataModule and model exactly as ``fit`` does (same config,
same ``--data.*``/``--trainer.*`` overrides), loads the checkpoint's weights and its data state (the training
split's age statistics), and explains each image of the chosen split:

- **structure occlusion** (label maps only): for every FreeSurfer structure in the image (left and right apart)
  and every class, ``delta_p`` = the class probability with the structure *removed* minus the probability of the
  intact image. Removed = its voxels set to background (compact index 0) in the compact label volume before
  the one-hot channels are made, so it vanishes from every channel. Rows in ``structure_importance.csv``; the
  mean per class and structure (and left+right summed), with a 95% bootstrap interval over subjects, ranked by
  absolute mean, in ``structure_ranking.csv`` and ``structure_ranking*.png``. A big structure's removal moves
  the output in proportion to its size, so the ranking also gives the effect per voxel (``rank_per_voxel``).
- **voxel attribution**: Integrated Gradients of the predicted class's probability with respect to the network
  input (baseline: all background), summed over channels, mapped back onto the source file's voxel grid
  (``attributions/<image_id>_ig.nii.gz``, the file's affine and shape: overlay it on the subject's own label
  map) and averaged per class over correctly classified images at network resolution
  (``mean_attribution_<class>.nii.gz`` over ``reference_<class>.nii.gz``, and ``mean_attribution_<class>.png``).

``images.csv`` lists each image's probabilities, IG's convergence delta and the seconds each method took. The
figures also go to ``DIR/tensorboard`` (never the training run's own event folder). The checkpoint must match the
config as for ``validate``: its data contract (classes, preprocessing, tabular features and, for ``val``/``test``,
the split) and its model's shapes are compared before anything is written (:mod:`adni_lightning.checkpoint`).
``DIR`` is the command's own: it must be new, empty, or an earlier ``interpret``'s output (marked by the file
``.adni_lightning_interpret``, whose files are replaced); a folder holding other files is refused, so a user's
``images.csv`` is never overwritten. Needs Captum for voxel attribution (``pip install 'adni_lightning[interpret]'``).
"""

from __future__ import annotations

import time
from collections.abc import Callable
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, Literal, get_args

import pandas as pd
import torch
from lightning.pytorch.trainer.states import TrainerFn
from torch.utils.data import DataLoader, Subset

from adni_lightning.atomic import atomic_path, output_dir, write_text
from adni_lightning.checkpoint import check_model, read_checkpoint
from adni_lightning.cli import ADNILightningCLI
from adni_lightning.data.dataset import VolumeDataset, collate_volumes
from adni_lightning.data.labels import FREESURFER_LUT, KNOWN_LABELS, channel_lookup
from adni_lightning.errors import ProjectError
from adni_lightning.interpret.attribution import captum_attr, integrated_gradients
from adni_lightning.interpret.figures import ranking_figure, triplanar_figure
from adni_lightning.interpret.maps import ClassMaps, save_network_grid, save_on_source_grid, source_grid
from adni_lightning.interpret.occlusion import Predictor, present_structures, structure_occlusion
from adni_lightning.interpret.ranking import IMPORTANCE_COLUMNS, rank_structures
from adni_lightning.module import DATA_STATE_KEY
from adni_lightning.run import Run

PROG = "python -m adni_lightning interpret"
Split = Literal["val", "test", "all"]
SPLITS: tuple[str, ...] = get_args(Split)
#: The file that marks a folder as interpret's output, so a later run may replace its files (and no one else's).
MARKER = ".adni_lightning_interpret"
NO_OCCLUSION = "structure occlusion needs label maps (data.preprocessing.input_kind: labelmap): voxel attribution only"


class InterpretError(ProjectError, ValueError):
    """The checkpoint, config and split cannot be interpreted together; the message says why, in one line."""


def _attach(cli: ADNILightningCLI, split: str) -> None:
    """Set the DataModule up as ``predict`` over ``split`` would (``all`` needs no split)."""
    dm = cli.datamodule
    dm.trainer = cli.trainer
    cli.trainer.state.fn = TrainerFn.PREDICTING
    dm.predict_split = split
    if split != "all" and not dm.split_path.is_file():
        raise InterpretError(
            f"--split {split}: no split file {dm.split_path} (fit writes it into the run folder): "
            "pass the run's --trainer.default_root_dir or --data.split.file"
        )


def _images(cli: ADNILightningCLI, checkpoint: dict[str, Any], split: str) -> VolumeDataset:
    """The split's images, read as ``predict`` reads them, with the checkpoint's age statistics."""
    dm = cli.datamodule
    dm.prepare_data()
    dm.setup("predict")
    dm.restore_checkpoint_state(checkpoint[DATA_STATE_KEY])
    dataset = dm.datasets["predict"]
    if len(dataset) == 0:
        raise InterpretError(
            f"--split {split}: the run's split {dm.split_path} has no {split} images "
            f"(set data.split.{split}_fraction > 0 when training)"
        )
    return dataset


def _predictor(
    model: torch.nn.Module, to_input: Callable[[torch.Tensor], torch.Tensor], tabular: torch.Tensor
) -> Predictor:
    """Compact volumes of one image's copies → probabilities, with that image's age and sex."""

    def predict(volumes: torch.Tensor) -> torch.Tensor:
        return model(to_input(volumes), tabular.expand(len(volumes), -1)).float().softmax(dim=1)

    return predict


@dataclass
class _Results:
    """What the per-image loop collects."""

    images: list[dict[str, Any]] = field(default_factory=list)
    importance: list[dict[str, Any]] = field(default_factory=list)


def _occlusion_rows(
    row: dict[str, Any],
    volume: torch.Tensor,
    predict: Predictor,
    table: torch.Tensor,
    classes: list[str],
    chunk: int,
) -> list[dict[str, Any]]:
    """``structure_importance.csv`` rows of one image: each visible structure present × each class."""
    labels = present_structures(volume, table)
    deltas = structure_occlusion(predict, volume, labels, chunk).cpu()
    voxels = torch.bincount(volume.flatten().long(), minlength=len(KNOWN_LABELS)).cpu()
    image = {k: row[k] for k in ("image_id", "subject", "group", "predicted")}
    rows = []
    for index, delta in zip(labels.tolist(), deltas):
        label_id = int(KNOWN_LABELS[index])
        structure = {"label_id": label_id, "structure": FREESURFER_LUT[label_id][0], "voxels": int(voxels[index])}
        rows += [{**image, "class": klass, **structure, "delta_p": float(d)} for klass, d in zip(classes, delta)]
    return rows


def _explain(
    cli: ADNILightningCLI,
    dataset: VolumeDataset,
    out: Path,
    ig_steps: int,
    max_images: int | None,
    chunk: int,
) -> tuple[_Results, ClassMaps]:
    """Occlusion (label maps) and IG for each image; IG maps saved on the source grid as they are made."""
    dm, model = cli.datamodule, cli.model
    classes, labelmap = dm.classes, dm.preprocessing.labelmap
    device = next(model.parameters()).device
    table = torch.from_numpy(channel_lookup(dm.preprocessing.channel_map)).to(device)
    paths = dict(zip(dataset.rows["image_id"], dataset.rows["path"]))
    count = len(dataset) if max_images is None else min(max_images, len(dataset))
    loader = DataLoader(Subset(dataset, range(count)), batch_size=dm.loader.batch_size, collate_fn=collate_volumes)
    results, maps = _Results(), ClassMaps(len(classes), labelmap)
    if ig_steps:
        (out / "attributions").mkdir(parents=True, exist_ok=True)
    for batch in loader:
        volumes, tabular = batch["volume"].to(device), batch["tabular"].to(device)
        with torch.no_grad():
            images = dm.network_input(volumes)
            probabilities = model(images, tabular).float().softmax(dim=1).cpu()
        for i, image_id in enumerate(batch["image_id"]):
            predicted, true_class = int(probabilities[i].argmax()), int(batch["label"][i])
            row = {
                "image_id": image_id,
                "subject": batch["subject"][i],
                "group": batch["group"][i],
                "split": batch["split"][i],
                "predicted": classes[predicted],
                **{f"p_{c}": float(p) for c, p in zip(classes, probabilities[i])},
            }
            if labelmap:
                started = time.perf_counter()
                predict = _predictor(model, dm.network_input, tabular[i : i + 1])
                results.importance += _occlusion_rows(row, volumes[i], predict, table, classes, chunk)
                row["occlusion_s"] = time.perf_counter() - started
            if ig_steps:
                started = time.perf_counter()
                attribution, convergence = integrated_gradients(
                    model, images[i : i + 1], tabular[i : i + 1], predicted, ig_steps, chunk
                )
                row["ig_s"] = time.perf_counter() - started
                target = out / "attributions" / f"{image_id}_ig.nii.gz"
                save_on_source_grid(attribution.cpu().numpy(), source_grid(paths[image_id], dm.preprocessing), target)
                row.update(
                    ig_class=classes[predicted],
                    ig_sum=float(attribution.sum()),
                    ig_convergence_delta=convergence,
                    attribution_file=str(target.relative_to(out)),
                )
                if predicted == true_class:
                    maps.add(predicted, attribution, volumes[i, 0])
            results.images.append(row)
    return results, maps


def _write_csv(frame: pd.DataFrame, path: Path) -> None:
    write_text(path, frame.to_csv(index=False, float_format="%.6g"), "--out")


def _save_figure(figure, path: Path) -> None:
    with atomic_path(path, "--out") as tmp:
        figure.savefig(tmp, format="png")


def own_folder(out: Path) -> Path:
    """Make ``out`` the command's folder: refuse one that holds files ``interpret`` did not write, else mark it."""
    output_dir(out, "--out")
    if not (out / MARKER).is_file():
        foreign = sorted(p.name for p in out.iterdir())
        if foreign:
            shown = ", ".join(foreign[:3]) + (f" and {len(foreign) - 3} more" if len(foreign) > 3 else "")
            raise InterpretError(
                f"--out {out} holds files that interpret did not write ({shown}): pass a new or empty folder"
            )
        write_text(out / MARKER, f"written by {PROG}: its next run may replace the files here\n", "--out")
    return out


def _write_maps(maps: ClassMaps, classes: list[str], labelmap: bool, out: Path, writer) -> list[str]:
    """Per-class mean maps as NIfTI (network grid) and triplanar PNGs; returns the classes drawn."""
    drawn = []
    for k, klass in enumerate(classes):
        mean, reference = maps.mean(k), maps.reference(k)
        if mean is None:
            continue
        save_network_grid(mean, out / f"mean_attribution_{klass}.nii.gz")
        save_network_grid(reference, out / f"reference_{klass}.nii.gz")
        title = f"mean IG of p({klass}), {maps.counts[k]} correctly classified {klass} image(s)"
        figure = triplanar_figure(mean, reference, labelmap, title)
        _save_figure(figure, out / f"mean_attribution_{klass}.png")
        writer.add_figure(f"interpret/mean_attribution/{klass}", figure)
        drawn.append(klass)
    return drawn


def _write_ranking(importance: pd.DataFrame, classes: list[str], out: Path, top: int, n_resamples: int, writer) -> None:
    _write_csv(importance, out / "structure_importance.csv")
    ranking = rank_structures(importance, classes, n_resamples)
    _write_csv(ranking, out / "structure_ranking.csv")
    figures = (
        ("structure", False, "structure_ranking"),
        ("bilateral", False, "structure_ranking_bilateral"),
        ("bilateral", True, "structure_ranking_bilateral_per_voxel"),
    )
    for level, per_voxel, name in figures:
        figure = ranking_figure(ranking, classes, level, top, per_voxel)
        _save_figure(figure, out / f"{name}.png")
        writer.add_figure(f"interpret/{name}", figure)
    lines = ["| class | rank | structure | mean Δp | 95% CI |", "|---|---|---|---|---|"]
    for row in ranking[(ranking["level"] == "bilateral") & (ranking["rank"] <= top)].to_dict("records"):
        lines.append(
            f"| {row['class']} | {row['rank']} | {row['structure']} | {row['mean_delta_p']:+.4f} | "
            f"[{row['ci_low']:+.4f}, {row['ci_high']:+.4f}] |"
        )
    writer.add_text("interpret/top_structures_bilateral", "\n".join(lines))


def run_interpret(
    run: Run,
    ckpt_path: Path,
    split: Split = "val",
    out: Path | None = None,
    ig_steps: int = 32,
    max_images: int | None = None,
    chunk: int = 16,
    top: int = 10,
    bootstrap: int = 2000,
) -> Path:
    """Explain the checkpoint's predictions on ``split``; returns the output folder.

    Args:
        run: the configuration the checkpoint was trained with.
        ckpt_path: the trained model's checkpoint (.ckpt).
        split: images to explain: the run's val or test side (from its split.csv), or every image of the CSV.
        out: output folder: new, empty or an earlier interpret's (default: <trainer.default_root_dir>/interpret).
        ig_steps: Integrated Gradients steps per image (Riemann sum); 0 skips voxel attribution.
        max_images: explain only the first N images of the split (default: all).
        chunk: volumes per forward pass (occluded copies, IG steps): memory against speed.
        top: structures per class in the bar charts.
        bootstrap: bootstrap resamples (over subjects) for the ranking's 95% intervals.
    """
    from torch.utils.tensorboard import SummaryWriter

    if split not in SPLITS:
        raise InterpretError(f"--split must be one of {', '.join(SPLITS)}, got {split!r}")
    if ig_steps < 0 or chunk < 2 or (max_images is not None and max_images < 1):
        raise InterpretError("--ig_steps must be >= 0, --chunk >= 2 and --max_images >= 1")
    if ig_steps:
        captum_attr()  # fail before any work when Captum is missing
    n_resamples = bootstrap
    checkpoint = read_checkpoint(ckpt_path)
    cli = run.cli
    dm, model = cli.datamodule, cli.model
    _attach(cli, split)
    source = f"--ckpt_path {ckpt_path}"
    dm.check_checkpoint_state(checkpoint.get(DATA_STATE_KEY), "predict", source)
    check_model(checkpoint, model, source)
    model.load_state_dict(checkpoint["state_dict"])
    model.eval().to(cli.trainer.strategy.root_device)
    dataset = _images(cli, checkpoint, split)
    out = own_folder(Path(out) if out else run.root / "interpret")
    if not dm.preprocessing.labelmap:
        print(f"interpret: {NO_OCCLUSION}")
    results, maps = _explain(cli, dataset, out, ig_steps, max_images, chunk)
    images = pd.DataFrame(results.images)
    _write_csv(images, out / "images.csv")
    with SummaryWriter(str(out / "tensorboard")) as writer:
        if results.importance:
            importance = pd.DataFrame(results.importance, columns=list(IMPORTANCE_COLUMNS))
            _write_ranking(importance, dm.classes, out, top, n_resamples, writer)
        drawn = _write_maps(maps, dm.classes, dm.preprocessing.labelmap, out, writer)
    timings = ", ".join(
        f"{name} {images[column].mean():.2f} s/image"
        for name, column in (("occlusion", "occlusion_s"), ("IG", "ig_s"))
        if column in images
    )
    print(
        f"interpret: {len(images)} {split} image(s) explained into {out} ({timings or 'nothing timed'}); "
        + (f"mean maps for {', '.join(drawn) or 'no class (none correctly classified)'}" if ig_steps else "no IG")
    )
    return out


COMMAND = run_interpret
