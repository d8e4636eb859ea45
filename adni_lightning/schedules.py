"""Learning-rate schedules whose length is the run's ``trainer.max_epochs``, so it is set in one place."""

from __future__ import annotations

import math
from typing import Any

from torch.optim import Optimizer
from torch.optim.lr_scheduler import CosineAnnealingLR

from adni_lightning.errors import OptionError


class CosineToMaxEpochs(CosineAnnealingLR):
    """Cosine annealing from the optimizer's learning rate to ``eta_min`` over the whole run.

    The module sets :attr:`T_max` to ``trainer.max_epochs`` (:meth:`follow`), so a config never repeats the
    run length. Resumed with a longer ``max_epochs``, the curve is stretched over the new length: the learning
    rate continues from where the longer schedule stands at the resumed epoch, never from the old schedule's
    0. A fresh run steps exactly as ``CosineAnnealingLR(T_max=max_epochs)``.
    """

    def __init__(self, optimizer: Optimizer, eta_min: float = 0.0) -> None:
        # T_max is a placeholder until follow(): the first step only records the base learning rates.
        super().__init__(optimizer, T_max=1, eta_min=eta_min)

    def follow(self, max_epochs: int | None) -> None:
        """Anneal over ``max_epochs`` epochs (the trainer's)."""
        if max_epochs is None or max_epochs < 1:
            raise OptionError(
                f"{type(self).__name__} anneals over trainer.max_epochs, which is {max_epochs}: set a positive "
                "trainer.max_epochs or choose another model.lr_scheduler"
            )
        self.T_max = max_epochs

    def load_state_dict(self, state_dict: dict[str, Any]) -> None:
        """Restore the position in the schedule, but keep this run's length; if it changed, move every
        parameter group's learning rate onto the new curve (the recursive update would otherwise carry on
        from the old curve's value, 0 at its end).
        """
        length = self.T_max
        super().load_state_dict(state_dict)
        if self.T_max == length:
            return
        self.T_max = length
        epoch = min(self.last_epoch, length)
        for group, base_lr in zip(self.optimizer.param_groups, self.base_lrs, strict=True):
            group["lr"] = self.eta_min + (base_lr - self.eta_min) * (1 + math.cos(math.pi * epoch / length)) / 2
        self._last_lr = [group["lr"] for group in self.optimizer.param_groups]
