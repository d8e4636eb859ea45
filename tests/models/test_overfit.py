"""Sanity check: each fused network can memorise a handful of random volumes."""

from __future__ import annotations

from collections.abc import Callable

import pytest
import torch
from torch import nn

from adni_lightning.models import FusionNet, ResNet3d, SeedCNN


@pytest.mark.parametrize(
    "make_encoder, size",
    [
        (lambda: SeedCNN(1), 24),
        (lambda: ResNet3d(1, widths=(8, 16), blocks=(1, 1), feature_dim=32), 16),
    ],
    ids=["seed", "resnet"],
)
def test_overfits_eight_samples(make_encoder: Callable[[], nn.Module], size: int) -> None:
    torch.manual_seed(0)
    images = torch.randn(8, 1, size, size, size)
    # The same covariates for every sample: the labels can only be learnt through the image encoder.
    tabular = torch.tensor([[0.5, 1.0, 0.0]]).expand(8, 3)
    labels = torch.tensor([0, 1, 2, 0, 1, 2, 0, 1])
    model = FusionNet(make_encoder(), num_tabular_features=3, num_classes=3, tabular_dim=16).train()
    optimiser = torch.optim.Adam(model.parameters(), lr=3e-3)
    losses: list[float] = []
    for _ in range(150):
        optimiser.zero_grad()
        loss = nn.functional.cross_entropy(model(images, tabular), labels)
        loss.backward()
        optimiser.step()
        losses.append(loss.item())
        if losses[-1] < 0.05:
            break
    assert losses[-1] < 0.05, f"loss after {len(losses)} steps: {losses[-1]:.3f} (start {losses[0]:.3f})"
