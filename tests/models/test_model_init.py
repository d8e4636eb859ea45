"""Initialisation: BN at identity, Kaiming-normal (fan_out) convs, Xavier linears with zero bias."""

from __future__ import annotations

import math

import pytest
import torch
from torch import nn

from adni_lightning.models import FusionNet, ResNet3d, SeedCNN, init_weights


def networks() -> list[nn.Module]:
    torch.manual_seed(0)
    return [SeedCNN(9), ResNet3d(9), FusionNet(ResNet3d(9), num_tabular_features=3, num_classes=3)]


@pytest.mark.parametrize("model", networks(), ids=["seed", "resnet", "fusion"])
def test_batchnorm_identity(model: nn.Module) -> None:
    bns = [m for m in model.modules() if isinstance(m, nn.BatchNorm3d)]
    assert bns
    for bn in bns:
        assert torch.equal(bn.weight, torch.ones_like(bn.weight))
        assert torch.equal(bn.bias, torch.zeros_like(bn.bias))


@pytest.mark.parametrize("model", networks(), ids=["seed", "resnet", "fusion"])
def test_conv_kaiming_fan_out(model: nn.Module) -> None:
    convs = [m for m in model.modules() if isinstance(m, nn.Conv3d)]
    checked = 0
    for conv in convs:
        if conv.bias is not None:
            assert torch.equal(conv.bias, torch.zeros_like(conv.bias))
        if conv.weight.numel() < 5000:  # too few samples for a tight std estimate
            continue
        fan_out = conv.out_channels * math.prod(conv.kernel_size)
        expected = math.sqrt(2.0 / fan_out)
        assert conv.weight.mean().abs() < 0.1 * expected
        assert conv.weight.std().item() == pytest.approx(expected, rel=0.1)
        checked += 1
    assert checked >= 2


@pytest.mark.parametrize("model", networks(), ids=["seed", "resnet", "fusion"])
def test_linear_xavier_zero_bias(model: nn.Module) -> None:
    for linear in (m for m in model.modules() if isinstance(m, nn.Linear)):
        bound = math.sqrt(6.0 / (linear.in_features + linear.out_features))
        assert torch.equal(linear.bias, torch.zeros_like(linear.bias))
        assert linear.weight.abs().max() <= bound
        if linear.weight.numel() >= 1000:
            assert linear.weight.std().item() == pytest.approx(bound / math.sqrt(3), rel=0.1)


def test_init_weights_overrides_pytorch_defaults_reproducibly() -> None:
    def build(seed: int) -> nn.Module:
        torch.manual_seed(seed)
        module = nn.Sequential(nn.Conv3d(4, 32, 3), nn.BatchNorm3d(32), nn.Linear(10, 10))
        with torch.no_grad():
            module[1].weight.fill_(3.0)
        init_weights(module)
        return module

    a, b = build(1), build(1)
    assert all(torch.equal(p, q) for p, q in zip(a.parameters(), b.parameters()))
    assert torch.equal(a[1].weight, torch.ones(32))
    assert torch.equal(a[0].bias, torch.zeros(32))
