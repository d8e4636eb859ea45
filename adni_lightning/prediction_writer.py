"""Writes ``predict`` results as one CSV: image_id, subject, group, split, p_<class>…, predicted."""

from __future__ import annotations

from pathlib import Path
from typing import Any

import lightning as L
import pandas as pd
import torch
from lightning.pytorch.callbacks import BasePredictionWriter


class PredictionWriter(BasePredictionWriter):
    """Collects ``predict_step`` outputs and writes ``output_path`` once the epoch ends.

    With several processes each rank writes its own ``<stem>.rank<N>.csv``: the distributed sampler pads
    the last batch, so merging is left to the reader (drop duplicate ``image_id`` rows).
    """

    def __init__(self, output_path: str | None = None) -> None:
        super().__init__(write_interval="batch")
        self.output_path = output_path
        self._rows: list[dict[str, Any]] = []

    def resolved_path(self, trainer: L.Trainer) -> Path:
        path = Path(self.output_path) if self.output_path else Path(trainer.default_root_dir) / "predictions.csv"
        if trainer.world_size > 1:
            path = path.with_name(f"{path.stem}.rank{trainer.global_rank}{path.suffix}")
        return path

    def on_predict_epoch_start(self, trainer: L.Trainer, pl_module: L.LightningModule) -> None:
        self._rows = []

    def write_on_batch_end(
        self, trainer: L.Trainer, pl_module: L.LightningModule, prediction: dict[str, Any],
        batch_indices: Any, batch: Any, batch_idx: int, dataloader_idx: int,
    ) -> None:
        names = pl_module.class_names
        probabilities: torch.Tensor = prediction["probabilities"]
        for i, image_id in enumerate(prediction["image_id"]):
            row = {key: prediction[key][i] for key in ("subject", "group", "split")}
            row = {"image_id": image_id, **row}
            row.update({f"p_{name}": float(p) for name, p in zip(names, probabilities[i])})
            row["predicted"] = names[int(probabilities[i].argmax())]
            self._rows.append(row)

    def on_predict_epoch_end(self, trainer: L.Trainer, pl_module: L.LightningModule) -> None:
        path = self.resolved_path(trainer)
        path.parent.mkdir(parents=True, exist_ok=True)
        pd.DataFrame(self._rows).to_csv(path, index=False, float_format="%.6f")
