"""Interpretation as a callback of ``predict``: each scored batch is explained, and everything written at the end.

:class:`Interpreter` rides on a Lightning ``predict`` run, so the run's checks, checkpoint restore, preprocessing
adoption and device placement are the CLI's (:mod:`adni_lightning.cli`), never replayed here. For each image of a
predict batch (its compact ``volume``, ``tabular`` covariates and ids, and the probabilities ``predict_step``
returned) it runs structure occlusion (label maps; :mod:`.occlusion`) and Integrated Gradients (:mod:`.attribution`),
saving each IG map on the source file's grid from the geometry its cache entry recorded (:mod:`.maps`). Occupancy
inputs (``data.preprocessing.label_encoding occupancy``) cache channel fractions, not FreeSurfer ids: occlusion there
removes one channel at a time (a channel merges ids: left and right, a whole cortex). At the end of
the run it writes ``images.csv``, ``structure_importance.csv``, ``structure_ranking.csv`` and its bar charts, the
per-class mean maps and their figures, and the same figures into ``<out>/tensorboard``.

Lightning runs ``predict`` under ``torch.inference_mode`` by default, whose tensors can never take part in autograd;
IG needs gradients, so the run must use ``trainer.inference_mode: false`` (``torch.no_grad``), and the callback turns
gradients back on around IG alone. Occlusion and IG run in full precision, outside the run's autocast; the
probabilities and the predicted class are the run's own (``predict_step``'s).

A score task's model (a regression) has one output, :data:`SCORE_OUTPUT`, in place of the classes: occlusion's
``delta_p`` and IG attribute the change of the predicted score, in the score's units; ``images.csv`` gives each
image's ``target`` and ``prediction``, and the mean map is over every image explained (there is no "correctly
classified").
"""

from __future__ import annotations

import time
from collections.abc import Callable, Sequence
from pathlib import Path
from typing import Any

import lightning as L
import pandas as pd
import torch
from lightning.pytorch.callbacks import Callback
from matplotlib.figure import Figure
from torch.utils.tensorboard import SummaryWriter

from adni_lightning.atomic import atomic_path, output_dir, write_text
from adni_lightning.data.batch import Batch
from adni_lightning.data.datamodule import ADNIDataModule
from adni_lightning.data.labels import FREESURFER_LUT, KNOWN_LABELS, channel_lookup, label_id
from adni_lightning.errors import ProjectError
from adni_lightning.interpret.attribution import captum_attr, integrated_gradients, predicted_score
from adni_lightning.interpret.figures import ranking_figure, triplanar_figure
from adni_lightning.interpret.maps import ClassMaps, save_network_grid, save_on_source_grid
from adni_lightning.interpret.occlusion import Predictor, occlude_channels, present_structures, structure_occlusion
from adni_lightning.interpret.ranking import IMPORTANCE_COLUMNS, rank_structures
from adni_lightning.vocabulary import ClassName, CompactLabel

#: The file that marks a folder as interpret's output, so a later run may replace its files (and no one else's).
MARKER = ".adni_lightning_interpret"
NO_OCCLUSION = "structure occlusion needs label maps (data.preprocessing.input_kind: labelmap): voxel attribution only"
#: Said once when the inputs are occupancy fractions: occlusion then removes whole channels, not single ids.
BY_CHANNEL = (
    "data.preprocessing.label_encoding occupancy caches channels, not FreeSurfer ids: structure occlusion removes "
    "one channel at a time"
)
#: The option the folder is named by in messages.
OUT_OPTION = "--out"
#: A score task's one output, in place of the classes of ``structure_importance.csv``, the rankings and the maps.
SCORE_OUTPUT = ClassName("score")
_MARKER_TEXT = "written by python -m adni_lightning interpret: its next run may replace the files here\n"


class InterpretError(ProjectError, ValueError):
    """The checkpoint, config and split cannot be interpreted together; the message says why, in one line."""


def own_folder(out: Path) -> Path:
    """Make ``out`` the command's folder: refuse one that holds files ``interpret`` did not write, else mark it."""
    output_dir(out, OUT_OPTION)
    if not (out / MARKER).is_file():
        foreign = sorted(p.name for p in out.iterdir())
        if foreign:
            shown = ", ".join(foreign[:3]) + (f" and {len(foreign) - 3} more" if len(foreign) > 3 else "")
            raise InterpretError(
                f"{OUT_OPTION} {out} holds files that interpret did not write ({shown}): pass a new or empty folder"
            )
        write_text(out / MARKER, _MARKER_TEXT, OUT_OPTION)
    return out


def _predictor(
    model: torch.nn.Module, to_input: Callable[[torch.Tensor], torch.Tensor], tabular: torch.Tensor, score: bool
) -> Predictor:
    """Compact volumes of one image's copies → probabilities (with ``score``: the ``(B, 1)`` predicted score, in its
    units), with that image's age and sex.
    """

    def predict(volumes: torch.Tensor) -> torch.Tensor:
        covariates = tabular.expand(len(volumes), -1)
        if score:
            return predicted_score(model, to_input(volumes), covariates)
        return model(to_input(volumes), covariates).float().softmax(dim=1)

    return predict


def output_names(dm: ADNIDataModule) -> list[ClassName]:
    """What the model's outputs are explained as: the classes, or a score task's one :data:`SCORE_OUTPUT`."""
    return [SCORE_OUTPUT] if dm.task.regression else list(dm.classes)


def _image_row(row: dict[str, Any]) -> dict[str, Any]:
    """The image's columns of its ``structure_importance.csv`` rows: ``predicted`` is the predicted class, or a score
    task's predicted score.
    """
    image = {k: row[k] for k in ("image_id", "subject", "group")}
    image["predicted"] = row["prediction"] if "prediction" in row else row["predicted"]
    return image


def _write_csv(frame: pd.DataFrame, path: Path) -> None:
    write_text(path, frame.to_csv(index=False, float_format="%.6g"), OUT_OPTION)


def _save_figure(figure: Figure, path: Path) -> None:
    with atomic_path(path, OUT_OPTION) as tmp:
        figure.savefig(tmp, format="png")


class Interpreter(Callback):
    """Explains every image a ``predict`` run scores (up to ``max_images``) and writes the results into ``out``.

    Args:
        out: the output folder: new, empty or an earlier interpret's (marked by :data:`MARKER`).
        ig_steps: Integrated Gradients steps per image; 0 skips voxel attribution.
        max_images: explain only the first N images the run scores (the run should score no more batches than hold
            them: ``trainer.limit_predict_batches``); ``None``: all.
        chunk: volumes per forward pass (occluded copies, IG steps).
        top: structures per class in the bar charts.
        bootstrap: bootstrap resamples (over subjects) for the ranking's 95% intervals.
        split_option: how messages name the option that chose the predicted split.
    """

    def __init__(
        self,
        out: Path,
        ig_steps: int = 32,
        max_images: int | None = None,
        chunk: int = 16,
        top: int = 10,
        bootstrap: int = 2000,
        split_option: str = "data.predict_split",
    ) -> None:
        if ig_steps:
            captum_attr()  # fail before any work when Captum is missing
        self.out = Path(out)
        self.ig_steps = ig_steps
        self.max_images = max_images
        self.chunk = chunk
        self.top = top
        self.bootstrap = bootstrap
        self.split_option = split_option
        self.images: list[dict[str, Any]] = []
        self.importance: list[dict[str, Any]] = []
        self.maps: ClassMaps | None = None
        self._entries: dict[str, Path] = {}
        self._table: torch.Tensor | None = None

    @staticmethod
    def _datamodule(trainer: L.Trainer) -> ADNIDataModule:
        datamodule = getattr(trainer, "datamodule", None)  # set by the run, not declared on Trainer
        if not isinstance(datamodule, ADNIDataModule):
            raise TypeError(f"Interpreter explains an ADNIDataModule's images, not {type(datamodule).__name__}'s")
        return datamodule

    def setup(self, trainer: L.Trainer, pl_module: L.LightningModule, stage: str) -> None:
        """Once the predict split is set up: refuse an empty split or a foreign folder, and claim the folder."""
        if stage != "predict":
            return
        dm = self._datamodule(trainer)
        if trainer.world_size > 1:
            raise InterpretError(
                f"interpret explains its images in one process, this run has {trainer.world_size}: "
                "pass --trainer.devices 1"
            )
        dataset = dm.datasets["predict"]
        if len(dataset) == 0:
            split = dm.predict_split
            raise InterpretError(
                f"{self.split_option} {split}: the run's split {dm.split_path} has no {split} images "
                f"(set data.split.{split}_fraction > 0 when training)"
            )
        own_folder(self.out)
        if self.ig_steps:
            (self.out / "attributions").mkdir(exist_ok=True)
        if not dm.preprocessing.labelmap:
            print(f"interpret: {NO_OCCLUSION}")
        elif dm.preprocessing.occupancy:
            print(f"interpret: {BY_CHANNEL}")
        self._entries = dict(zip(dataset.rows["image_id"], dataset.entries))
        self.images, self.importance = [], []
        self.maps = ClassMaps(len(output_names(dm)), dm.preprocessing.labelmap)

    def on_predict_start(self, trainer: L.Trainer, pl_module: L.LightningModule) -> None:
        if self.ig_steps and torch.is_inference_mode_enabled():
            raise InterpretError(
                "Integrated Gradients needs gradients, which predict turns off under trainer.inference_mode true: "
                "pass --trainer.inference_mode false (or --ig_steps 0)"
            )
        table = channel_lookup(self._datamodule(trainer).preprocessing.channel_map)
        self._table = torch.from_numpy(table).to(pl_module.device)

    def on_predict_batch_end(
        self,
        trainer: L.Trainer,
        pl_module: L.LightningModule,
        outputs: Any,
        batch: Batch,
        batch_idx: int,
        dataloader_idx: int = 0,
    ) -> None:
        """Explain the batch's images (until ``max_images``), from its compact volumes and the run's probabilities (or
        predicted scores).
        """
        dm = self._datamodule(trainer)
        classes, labelmap, score = output_names(dm), dm.preprocessing.labelmap, dm.task.regression
        volumes, tabular = batch["volume"], batch["tabular"]
        for i, image_id in enumerate(batch["image_id"]):
            if self.max_images is not None and len(self.images) >= self.max_images:
                return
            row: dict[str, Any] = {
                "image_id": image_id,
                "subject": batch["subject"][i],
                "group": batch["group"][i],
                "split": batch["split"][i],
            }
            if score:
                predicted = 0
                row.update(target=float(outputs["target"][i]), prediction=float(outputs["prediction"][i]))
            else:
                probabilities: torch.Tensor = outputs["probabilities"]
                predicted = int(probabilities[i].argmax())
                row["predicted"] = classes[predicted]
                row.update({f"p_{c}": float(p) for c, p in zip(classes, probabilities[i])})
            if labelmap:
                started = time.perf_counter()
                if dm.preprocessing.occupancy:
                    predict = _predictor(pl_module, torch.nn.Identity(), tabular[i : i + 1], score)
                    self.importance += self._channel_rows(row, batch["image"][i], predict, dm, classes)
                else:
                    predict = _predictor(pl_module, dm.network_input, tabular[i : i + 1], score)
                    self.importance += self._occlusion_rows(row, volumes[i], predict, classes)
                row["occlusion_s"] = time.perf_counter() - started
            if self.ig_steps:
                row.update(self._attribute(pl_module, dm, batch, i, predicted, image_id))
            self.images.append(row)

    def _occlusion_rows(
        self, row: dict[str, Any], volume: torch.Tensor, predict: Predictor, classes: Sequence[ClassName]
    ) -> list[dict[str, Any]]:
        """``structure_importance.csv`` rows of one image: each visible structure present × each class (``predicted``:
        the predicted class, or a score task's predicted score).
        """
        assert self._table is not None
        labels = present_structures(volume, self._table)
        deltas = structure_occlusion(predict, volume, labels, self.chunk).cpu()
        voxels = torch.bincount(volume.flatten().long(), minlength=len(KNOWN_LABELS)).cpu()
        image = _image_row(row)
        rows = []
        for index, delta in zip(labels.tolist(), deltas):
            label = label_id(CompactLabel(index))
            structure = {"label_id": int(label), "structure": FREESURFER_LUT[label][0], "voxels": int(voxels[index])}
            rows += [{**image, "class": klass, **structure, "delta_p": float(d)} for klass, d in zip(classes, delta)]
        return rows

    def _channel_rows(
        self,
        row: dict[str, Any],
        image: torch.Tensor,
        predict: Predictor,
        dm: ADNIDataModule,
        classes: Sequence[ClassName],
    ) -> list[dict[str, Any]]:
        """``structure_importance.csv`` rows of one occupancy image: each channel present × each class; its
        ``label_id`` the channel's ids joined by ``+``, its ``voxels`` the channel's volume in network voxels (the
        sum of its fractions).
        """
        filled = image.flatten(1).sum(dim=1)
        channels = torch.nonzero(filled > 0).flatten()
        deltas = structure_occlusion(predict, image, channels, self.chunk, occlude_channels).cpu()
        names, ids = list(dm.preprocessing.channel_map), list(dm.preprocessing.channel_map.values())
        image_row = _image_row(row)
        rows = []
        for c, delta in zip(channels.tolist(), deltas):
            structure = {
                "label_id": "+".join(str(i) for i in ids[c]),
                "structure": names[c],
                "voxels": float(filled[c]),
            }
            rows += [
                {**image_row, "class": klass, **structure, "delta_p": float(d)} for klass, d in zip(classes, delta)
            ]
        return rows

    def _attribute(
        self, model: L.LightningModule, dm: ADNIDataModule, batch: Batch, i: int, predicted: int, image_id: str
    ) -> dict[str, Any]:
        """IG of image ``i``'s predicted class (a score task's predicted score), saved on its source grid; its
        ``images.csv`` columns. The class's mean map takes it when the class is right (a score's takes every image).
        """
        assert self.maps is not None
        score = dm.task.regression
        started = time.perf_counter()
        with torch.enable_grad():
            attribution, convergence = integrated_gradients(
                model,
                batch["image"][i : i + 1],
                batch["tabular"][i : i + 1],
                predicted,
                self.ig_steps,
                self.chunk,
                score,
            )
        seconds = time.perf_counter() - started
        target = self.out / "attributions" / f"{image_id}_ig.nii.gz"
        save_on_source_grid(attribution.cpu().numpy(), dm.cache.geometry(self._entries[image_id]), target)
        if score or predicted == int(batch["label"][i]):
            self.maps.add(predicted, attribution, batch["volume"][i, 0])
        return {
            "ig_s": seconds,
            "ig_class": output_names(dm)[predicted],
            "ig_sum": float(attribution.sum()),
            "ig_convergence_delta": convergence,
            "attribution_file": str(target.relative_to(self.out)),
        }

    def on_predict_end(self, trainer: L.Trainer, pl_module: L.LightningModule) -> None:
        """Write the tables, rankings, maps and figures, and say where."""
        assert self.maps is not None
        dm = self._datamodule(trainer)
        images = pd.DataFrame(self.images)
        _write_csv(images, self.out / "images.csv")
        with SummaryWriter(str(self.out / "tensorboard")) as writer:
            if self.importance:
                importance = pd.DataFrame(self.importance, columns=list(IMPORTANCE_COLUMNS))
                self._write_ranking(importance, output_names(dm), writer, self._score_name(dm))
            drawn = self._write_maps(output_names(dm), dm.preprocessing.labelmap, writer, self._score_name(dm))
        timings = ", ".join(
            f"{name} {images[column].mean():.2f} s/image"
            for name, column in (("occlusion", "occlusion_s"), ("IG", "ig_s"))
            if column in images
        )
        maps = (
            f"mean maps for {', '.join(drawn) or 'no class (none correctly classified)'}" if self.ig_steps else "no IG"
        )
        if dm.task.regression:
            maps = f"a mean map of the predicted {dm.task.column}" if self.ig_steps else "no IG"
        print(
            f"interpret: {len(images)} {dm.predict_split} image(s) explained into {self.out} "
            f"({timings or 'nothing timed'}); {maps}"
        )

    @staticmethod
    def _score_name(dm: ADNIDataModule) -> str | None:
        """A score task's score (``MMSE``), the quantity its figures name; ``None`` for a classification."""
        return str(dm.task.column) if dm.task.regression else None

    def _write_maps(
        self, classes: Sequence[ClassName], labelmap: bool, writer: SummaryWriter, score: str | None = None
    ) -> list[ClassName]:
        """Per-class mean maps as NIfTI (network grid) and triplanar PNGs; returns the classes drawn. A score task's
        one map (``score``: its name) is over every image explained.
        """
        assert self.maps is not None
        drawn = []
        for k, klass in enumerate(classes):
            mean, reference = self.maps.mean(k), self.maps.reference(k)
            if mean is None or reference is None:
                continue
            save_network_grid(mean, self.out / f"mean_attribution_{klass}.nii.gz")
            save_network_grid(reference, self.out / f"reference_{klass}.nii.gz")
            title = f"mean IG of p({klass}), {self.maps.counts[k]} correctly classified {klass} image(s)"
            if score is not None:
                title = f"mean IG of the predicted {score}, {self.maps.counts[k]} image(s)"
            figure = triplanar_figure(mean, reference, labelmap, title, score)
            _save_figure(figure, self.out / f"mean_attribution_{klass}.png")
            writer.add_figure(f"interpret/mean_attribution/{klass}", figure)
            drawn.append(klass)
        return drawn

    def _write_ranking(
        self, importance: pd.DataFrame, classes: Sequence[ClassName], writer: SummaryWriter, score: str | None = None
    ) -> None:
        _write_csv(importance, self.out / "structure_importance.csv")
        ranking = rank_structures(importance, classes, self.bootstrap)
        _write_csv(ranking, self.out / "structure_ranking.csv")
        figures = (
            ("structure", False, "structure_ranking"),
            ("bilateral", False, "structure_ranking_bilateral"),
            ("bilateral", True, "structure_ranking_bilateral_per_voxel"),
        )
        for level, per_voxel, name in figures:
            figure = ranking_figure(ranking, classes, level, self.top, per_voxel, score)
            _save_figure(figure, self.out / f"{name}.png")
            writer.add_figure(f"interpret/{name}", figure)
        change = "Δp" if score is None else f"Δ {score}"
        lines = [f"| class | rank | structure | mean {change} | 95% CI |", "|---|---|---|---|---|"]
        for row in ranking[(ranking["level"] == "bilateral") & (ranking["rank"] <= self.top)].to_dict("records"):
            lines.append(
                f"| {row['class']} | {row['rank']} | {row['structure']} | {row['mean_delta_p']:+.4f} | "
                f"[{row['ci_low']:+.4f}, {row['ci_high']:+.4f}] |"
            )
        writer.add_text("interpret/top_structures_bilateral", "\n".join(lines))
