"""``predict`` with several checkpoints (e.g. every fold's ``last.ckpt``): one predictor averages its members.

One predict run is built and checked for the first checkpoint; every other member is checked against the same
configuration (data contract, model shapes) and scored by the same trainer over the same data, with its own
weights and its own training split's age and volume statistics (restored from its checkpoint). ``predictions.csv``
holds each image's mean probability (a score task's: its mean predicted score) and the number of members; with
``--calibration`` each member is scaled before the mean, as the temperature was fitted on single fold models'
predictions.
"""

from __future__ import annotations

from collections.abc import Sequence
from pathlib import Path

import lightning as L
import pandas as pd

from adni_lightning.cli import model_checkpoints
from adni_lightning.prediction_writer import SCORE_COLUMN, PredictionWriter, write_predictions
from adni_lightning.run import Run


class MemberMean(PredictionWriter):
    """Collects each member's predictions (one prediction epoch each); :meth:`mean` averages them."""

    def __init__(self) -> None:
        super().__init__()
        self.members: list[pd.DataFrame] = []

    def on_predict_epoch_end(self, trainer: L.Trainer, pl_module: L.LightningModule) -> None:
        self.members.append(self.member_frame(pl_module))

    def mean(self) -> pd.DataFrame:
        """Each image's mean probabilities (or predicted score) over the members, and how many members there were."""
        merged = pd.concat(self.members, ignore_index=True)
        averaged = [c for c in merged.columns if c.startswith("p_") or c == SCORE_COLUMN]
        keys = [c for c in merged.columns if c not in averaged]
        # dropna=False: an image whose true score is unknown (an empty target) keeps its row
        mean = merged.groupby(keys, sort=False, as_index=False, dropna=False)[averaged].mean()
        return mean.assign(members=len(self.members))


def predict_ensemble(run: Run, checkpoints: Sequence[str | Path], write: bool = True) -> pd.DataFrame:
    """Score ``checkpoints`` with the predict ``run`` built for the first of them and return the members' mean; with
    ``write`` it is also the run's ``predictions.csv``. Every member is checked before anything is scored or written.
    """
    for checkpoint in checkpoints[1:]:
        run.cli.check_checkpoint_file(checkpoint)
    writer = MemberMean()
    run.execute([writer])  # checks and scores the first member
    for checkpoint in checkpoints[1:]:
        for callback in model_checkpoints(run.trainer):  # they restore the state saved beside the member
            callback.dirpath = str(Path(checkpoint).parent)
        run.trainer.predict(run.model, datamodule=run.datamodule, ckpt_path=checkpoint, return_predictions=False)
    mean = writer.mean()
    if write:
        path = writer.resolved_path(run.trainer)
        by_subject = write_predictions(mean, path)
        print(f"predict: averaged {len(checkpoints)} checkpoints into {path} and {by_subject}")
    return mean
