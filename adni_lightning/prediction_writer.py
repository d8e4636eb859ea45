"""Writes ``predict`` results: ``predictions.csv`` (one row per image) and ``predictions_by_subject.csv``.

Per image: image_id, subject, group, split (the image's side in the run's split, ``-`` if none), p_<class>…,
``temperature`` (only with ``predict --calibration``), predicted. Per subject: the mean probability over the
subject's images and the class it predicts, since a subject's scans are not independent and may disagree.

A score task (a regression) writes ``target`` (the true score, empty when unknown) and ``prediction`` (in the score's
units) instead of the probabilities and the class, and ``group`` is the image CSV's Group; per subject, the mean
target and prediction over its images.
"""

from __future__ import annotations

from pathlib import Path
from typing import Any

import lightning as L
import pandas as pd
from lightning.pytorch.callbacks import BasePredictionWriter

from adni_lightning.atomic import write_text
from adni_lightning.evaluation.calibration import scale_temperature
from adni_lightning.module import ADNIClassifier
from adni_lightning.vocabulary import ClassName

#: The option that moves the prediction files (they are written into the run's root folder).
OPTION = "--trainer.default_root_dir"
#: A score task's predicted value, in the score's units (beside ``target``, the true score).
SCORE_COLUMN = "prediction"


def _class_names(pl_module: L.LightningModule) -> list[ClassName]:
    """The classes of the probabilities ``predict_step`` returns, in their order."""
    assert isinstance(pl_module, ADNIClassifier), f"PredictionWriter writes an ADNIClassifier's, not {type(pl_module)}"
    return pl_module.class_names


def write_predictions(frame: pd.DataFrame, path: Path) -> Path:
    """Write the per-image table to ``path`` and the per-subject table beside it, each atomically (a later ``cv``
    run takes a fold's ``predictions.csv`` as finished); return the latter's path.
    """
    subject_path = path.with_name(f"{path.stem}_by_subject{path.suffix}")
    if SCORE_COLUMN in frame.columns:
        write_text(path, frame.to_csv(index=False, float_format="%.6f"), OPTION)
        by_subject = frame.groupby(["subject", "group"], sort=True, as_index=False).agg(
            images=("image_id", "size"), target=("target", "mean"), prediction=(SCORE_COLUMN, "mean")
        )
        write_text(subject_path, by_subject.to_csv(index=False, float_format="%.6f"), OPTION)
        return subject_path
    probabilities = [c for c in frame.columns if c.startswith("p_")]
    frame = frame.assign(predicted=frame[probabilities].idxmax(axis=1).str[2:])
    write_text(path, frame.to_csv(index=False, float_format="%.6f"), OPTION)
    scaled = {"temperature": ("temperature", "first")} if "temperature" in frame.columns else {}
    by_subject = frame.groupby(["subject", "group"], sort=True, as_index=False).agg(
        images=("image_id", "size"), **{c: (c, "mean") for c in probabilities}, **scaled
    )
    by_subject["predicted"] = by_subject[probabilities].idxmax(axis=1).str[2:]
    write_text(subject_path, by_subject.to_csv(index=False, float_format="%.6f"), OPTION)
    return subject_path


class PredictionWriter(BasePredictionWriter):
    """Collects ``predict_step`` outputs and writes ``output_path`` once the epoch ends.

    With several processes each rank writes its own ``<stem>.rank<N>.csv``: the distributed sampler pads
    the last batch, so merging is left to the reader (drop duplicate ``image_id`` rows).
    """

    def __init__(self, output_path: str | None = None) -> None:
        super().__init__(write_interval="batch")
        self.output_path = output_path
        #: Set by ``predict --calibration``: the probabilities are written scaled by it, in a ``temperature`` column.
        self.temperature: float | None = None
        self._rows: list[dict[str, Any]] = []

    def resolved_path(self, trainer: L.Trainer) -> Path:
        path = Path(self.output_path) if self.output_path else Path(trainer.default_root_dir) / "predictions.csv"
        if trainer.world_size > 1:
            path = path.with_name(f"{path.stem}.rank{trainer.global_rank}{path.suffix}")
        return path

    def on_predict_epoch_start(self, trainer: L.Trainer, pl_module: L.LightningModule) -> None:
        self._rows = []

    def write_on_batch_end(
        self,
        trainer: L.Trainer,
        pl_module: L.LightningModule,
        prediction: dict[str, Any],
        batch_indices: Any,
        batch: Any,
        batch_idx: int,
        dataloader_idx: int,
    ) -> None:
        regression = SCORE_COLUMN in prediction
        names = _class_names(pl_module)
        for i, image_id in enumerate(prediction["image_id"]):
            row = {"image_id": image_id, **{key: prediction[key][i] for key in ("subject", "group", "split")}}
            if regression:
                row.update(target=float(prediction["target"][i]), prediction=float(prediction[SCORE_COLUMN][i]))
            else:
                row.update({f"p_{name}": float(p) for name, p in zip(names, prediction["probabilities"][i])})
            self._rows.append(row)

    def member_frame(self, pl_module: L.LightningModule) -> pd.DataFrame:
        """This prediction epoch's rows, scaled by :attr:`temperature` when one is set."""
        frame = pd.DataFrame(self._rows)
        if self.temperature is not None:
            columns = [f"p_{name}" for name in _class_names(pl_module)]
            frame[columns] = scale_temperature(frame[columns].to_numpy(float), self.temperature)
            frame["temperature"] = self.temperature
        return frame

    def on_predict_epoch_end(self, trainer: L.Trainer, pl_module: L.LightningModule) -> None:
        path = self.resolved_path(trainer)
        by_subject = write_predictions(self.member_frame(pl_module), path)
        print(f"predict: wrote {path} and {by_subject}")
