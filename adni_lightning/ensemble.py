"""``predict`` with several checkpoints (e.g. every fold's ``last.ckpt``): one predictor averages its members.

One predict run is built and checked for the first checkpoint; every other member is checked against the same
configuration (data contract, model shapes) and scored by the same trainer over the same data, with its own
weights and its own training split's age and volume statistics (restored from its checkpoint). ``predictions.csv``
holds each image's mean probability and the number of members; with ``--calibration`` each member is scaled before
the mean, as the temperature was fitted on single fold models' predictions.
"""

from __future__ import annotations

from collections.abc import Sequence
from pathlib import Path

import lightning as L
import pandas as pd

from adni_lightning.cli import model_checkpoints
from adni_lightning.prediction_writer import PredictionWriter, write_predictions
from adni_lightning.run import Run


class MemberMean(PredictionWriter):
    """Averages the members' predictions in memory (:attr:`mean`); with ``write`` the mean of every member scored so
    far is written after each, so the last member's epoch leaves the ensemble's file.
    """

    def __init__(self, output_path: str | None = None, write: bool = True) -> None:
        super().__init__(output_path)
        self.write = write
        self.members: list[pd.DataFrame] = []
        self.mean: pd.DataFrame | None = None

    def on_predict_epoch_end(self, trainer: L.Trainer, pl_module: L.LightningModule) -> None:
        self.members.append(self.member_frame(pl_module))
        merged = pd.concat(self.members, ignore_index=True)
        probabilities = [c for c in merged.columns if c.startswith("p_")]
        keys = [c for c in merged.columns if c not in probabilities]
        self.mean = merged.groupby(keys, sort=False, as_index=False)[probabilities].mean()
        self.mean["members"] = len(self.members)
        if self.write:
            write_predictions(self.mean, self.resolved_path(trainer))


def predict_ensemble(run: Run, checkpoints: Sequence[str | Path], write: bool = True) -> MemberMean:
    """Score ``checkpoints`` with the predict ``run`` built for the first of them; returns the writer holding the
    members' mean (written to the run's ``predictions.csv`` with ``write``).
    """
    writer = MemberMean(write=write)
    run.execute([writer])
    for checkpoint in checkpoints[1:]:
        run.cli.check_checkpoint_file(checkpoint)
        for callback in model_checkpoints(run.trainer):  # they restore the state saved beside the member
            callback.dirpath = str(Path(checkpoint).parent)
        run.trainer.predict(run.model, datamodule=run.datamodule, ckpt_path=checkpoint, return_predictions=False)
    if write:
        print(f"predict: averaged {len(checkpoints)} checkpoints into {writer.resolved_path(run.trainer)}")
    return writer
