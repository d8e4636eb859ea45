"""A score model is explained with the change of its predicted score, in the score's units (exact on a linear model)."""

from __future__ import annotations

import pytest
import torch
from torch import nn

from adni_lightning.interpret.attribution import integrated_gradients
from adni_lightning.interpret.callback import _predictor
from adni_lightning.interpret.occlusion import structure_occlusion


class LinearScore(nn.Module):
    """A score model linear in its input: each voxel's value times its weight, summed; 2 points per output unit from a
    mean of 10 (``in_units``), as a regression trained on a standardised score converts back.
    """

    def __init__(self, weights: torch.Tensor) -> None:
        super().__init__()
        self.weights = weights

    def forward(self, image: torch.Tensor, tabular: torch.Tensor) -> torch.Tensor:
        return (image * self.weights).sum(dim=(1, 2, 3, 4))[:, None] + tabular[:, :1]

    def in_units(self, outputs: torch.Tensor) -> torch.Tensor:
        return outputs.reshape(len(outputs)) * 2 + 10


def test_occlusion_gives_the_change_of_the_predicted_score():
    volume = torch.zeros(1, 4, 4, 4, dtype=torch.uint8)
    volume[0, :1, :1, :] = 3  # 4 voxels of compact label 3
    volume[0, 2:, 2:, :2] = 5  # 8 voxels of compact label 5
    model = LinearScore(torch.ones(1, 1, 4, 4, 4))
    predict = _predictor(model, lambda v: v.float(), torch.tensor([[0.5]]), score=True)
    assert predict(volume[None]).tolist() == [[10 + 2 * (3 * 4 + 5 * 8 + 0.5)]]
    deltas = structure_occlusion(predict, volume, torch.tensor([3, 5]))
    assert deltas.tolist() == [[-2 * 3 * 4], [-2 * 5 * 8]]  # one output: the score, in its units


def test_integrated_gradients_attribute_the_predicted_score():
    pytest.importorskip("captum")
    torch.manual_seed(0)
    image, weights = torch.rand(1, 2, 3, 3, 3), torch.randn(1, 2, 3, 3, 3)
    model = LinearScore(weights)
    attribution, delta = integrated_gradients(model, image, torch.tensor([[0.5]]), 0, steps=4, score=True)
    # linear: exact, and the map adds up to the score's change from the all-background baseline, in its units
    assert torch.allclose(attribution, (2 * weights * image)[0].sum(dim=0), atol=1e-5)
    assert float(attribution.sum()) == pytest.approx(2 * float((weights * image).sum()), abs=1e-4)
    assert abs(delta) < 1e-4
