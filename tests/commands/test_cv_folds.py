"""A fold of a full ``cv`` is the fold run alone: the same split file, the same weights, bit for bit.

Each fold reads the one ``split.csv`` by its index, so a fold run alone (``--fold K``, e.g. a SLURM array task) and
the same fold inside a full cross-validation, after the other folds ran in the same process, train on the same
sides from the same starting point.
"""

from __future__ import annotations

import hashlib
from pathlib import Path

import pandas as pd
import pytest
import torch

from adni_lightning.main import main
from tests.helpers import TINY_CONFIGS


def _cv(root: Path, cohort: Path, *extra: str) -> None:
    main(
        [
            "cv",
            "--folds",
            "3",
            "--root",
            str(root),
            "--no_baseline",
            "true",
            "--bootstrap",
            "50",
            "--trainer.default_root_dir",
            str(root.parent / "run"),
            "--data.manifest.data_dir",
            str(cohort),
            "--data.cache_dir",
            str(root.parent / "cache"),
            "--trainer.max_epochs",
            "1",
            "--data.split.test_fraction",
            "0.2",
            *TINY_CONFIGS,
            *extra,
        ]
    )


def _digest(checkpoint: Path) -> str:
    weights = torch.load(checkpoint, weights_only=False)["state_dict"]
    digest = hashlib.sha1()
    for name in sorted(weights):
        digest.update(name.encode() + weights[name].numpy().tobytes())
    return digest.hexdigest()


@pytest.mark.slow
def test_each_fold_of_a_full_cv_is_the_fold_run_alone(cohort, tmp_path):
    alone = tmp_path / "alone" / "cv"
    _cv(alone, cohort, "--fold", "2")  # first in this process: nothing ran before it
    full = tmp_path / "full" / "cv"
    _cv(full, cohort)  # fold 2 last, after two folds and their predictions in this process
    assert (alone / "split.csv").read_bytes() == (full / "split.csv").read_bytes()
    assert not list(full.glob("fold_*/split.csv"))  # a fold reads the one file by its index
    ours, theirs = (
        torch.load(r / "fold_2/checkpoints/last.ckpt", weights_only=False)["state_dict"] for r in (full, alone)
    )
    assert ours.keys() == theirs.keys() and all(torch.equal(ours[k], theirs[k]) for k in ours)
    for name in ("oof_predictions.csv", "test_predictions.csv"):
        pd.testing.assert_frame_equal(pd.read_csv(full / "fold_2" / name), pd.read_csv(alone / "fold_2" / name))
    folds = {_digest(full / f"fold_{k}/checkpoints/last.ckpt") for k in range(3)}
    assert len(folds) == 3  # the folds did train on different sides
