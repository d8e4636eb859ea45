"""The cosine schedule follows trainer.max_epochs, also when a run is resumed with a longer one."""

from __future__ import annotations

import math

import pytest
import torch
from tensorboard.backend.event_processing.event_accumulator import EventAccumulator
from torch.optim.lr_scheduler import CosineAnnealingLR

from adni_lightning.main import main
from adni_lightning.schedules import CosineToMaxEpochs
from tests.helpers import tiny_args


def _optimizer() -> torch.optim.Optimizer:
    return torch.optim.AdamW([torch.nn.Parameter(torch.zeros(2))], lr=1e-3)


def test_a_fresh_run_steps_exactly_as_cosine_annealing_over_max_epochs():
    ours = CosineToMaxEpochs(_optimizer())
    ours.follow(7)
    reference = CosineAnnealingLR(_optimizer(), T_max=7)
    for _ in range(7):
        assert ours.get_last_lr() == reference.get_last_lr()  # bit for bit: the default's figures do not move
        ours.optimizer.step()
        reference.optimizer.step()
        ours.step()
        reference.step()


def test_restoring_with_a_longer_run_moves_onto_the_stretched_curve():
    finished = CosineToMaxEpochs(_optimizer())
    finished.follow(4)
    for _ in range(4):
        finished.optimizer.step()
        finished.step()
    assert finished.get_last_lr()[0] == pytest.approx(0.0, abs=1e-12)
    longer = CosineToMaxEpochs(_optimizer())
    longer.follow(8)
    longer.optimizer.load_state_dict(finished.optimizer.state_dict())
    longer.load_state_dict(finished.state_dict())
    assert longer.T_max == 8
    expected = 1e-3 * (1 + math.cos(math.pi * 4 / 8)) / 2
    assert longer.get_last_lr()[0] == pytest.approx(expected)
    assert longer.optimizer.param_groups[0]["lr"] == pytest.approx(expected)


def test_max_epochs_that_give_no_length_are_refused():
    with pytest.raises(ValueError, match="trainer.max_epochs, which is -1"):
        CosineToMaxEpochs(_optimizer()).follow(-1)


def test_a_run_resumed_with_a_longer_max_epochs_never_trains_at_a_learning_rate_of_zero(cohort, tmp_path):
    run = tmp_path / "run"
    main(tiny_args("fit", run, cohort, "--trainer.max_epochs", "2"))
    resumed = main(tiny_args("fit", run, cohort, "--trainer.max_epochs", "4", "--ckpt_path", "last"))
    lr = resumed.model.hparams.optimizer["init_args"]["lr"]
    rates = [e.value for e in EventAccumulator(str(run / "tensorboard")).Reload().Scalars("lr")]
    assert rates == pytest.approx(
        [lr * (1 + math.cos(math.pi * e / n)) / 2 for e, n in ((0, 2), (1, 2), (2, 4), (3, 4))]
    )
    assert min(rates) > 0
