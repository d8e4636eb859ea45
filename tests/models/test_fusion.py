"""FusionNet and TabularNet: shapes, gradient flow, use of the tabular input, dropout; WideAndDeepNet starts at its
linear model and moves away from it.
"""

from __future__ import annotations

import pytest
import torch
from torch import nn

from adni_lightning.errors import OptionError
from adni_lightning.models import FusionNet, ResNet3d, SeedCNN, TabularNet, WideAndDeepNet


def make_fusion(encoder: str, in_channels: int = 2, dropout: float = 0.3) -> FusionNet:
    image_encoder = SeedCNN(in_channels) if encoder == "seed" else ResNet3d(in_channels, widths=(8, 16), blocks=(1, 1))
    return FusionNet(image_encoder, num_tabular_features=3, num_classes=3, dropout=dropout)


def size_for(encoder: str) -> tuple[int, int, int]:
    return (24, 24, 24) if encoder == "seed" else (16, 16, 16)


def test_tabular_net() -> None:
    net = TabularNet(3)
    assert net.out_features == 64
    out = net(torch.randn(5, 3))
    assert out.shape == (5, 64) and (out >= 0).all()


@pytest.mark.parametrize("encoder", ["seed", "resnet"])
def test_logits_shape(encoder: str) -> None:
    model = FusionNet(
        SeedCNN(2) if encoder == "seed" else ResNet3d(2, widths=(8, 16), blocks=(1, 1)),
        num_tabular_features=3,
        num_classes=5,
    )
    logits = model(torch.randn(4, 2, *size_for(encoder)), torch.randn(4, 3))
    assert logits.shape == (4, 5)
    assert model.classifier.in_features == model.image_encoder.out_features + 64


@pytest.mark.parametrize("encoder", ["seed", "resnet"])
def test_gradients_reach_both_branches(encoder: str) -> None:
    model = make_fusion(encoder)
    logits = model(torch.randn(4, 2, *size_for(encoder)), torch.randn(4, 3))
    nn.functional.cross_entropy(logits, torch.tensor([0, 1, 2, 0])).backward()
    for name, param in model.named_parameters():
        assert param.grad is not None, name
        assert torch.isfinite(param.grad).all(), name
    first_conv = next(m for m in model.image_encoder.modules() if isinstance(m, nn.Conv3d))
    assert first_conv.weight.grad.abs().sum() > 0
    assert model.tabular_net.fc.weight.grad.abs().sum() > 0


@pytest.mark.parametrize("encoder", ["seed", "resnet"])
def test_tabular_input_changes_output(encoder: str) -> None:
    model = make_fusion(encoder).eval()
    image = torch.randn(2, 2, *size_for(encoder))
    with torch.no_grad():
        a = model(image, torch.tensor([[0.2, 1.0, 0.0], [0.9, 0.0, 1.0]]))
        b = model(image, torch.tensor([[0.9, 0.0, 1.0], [0.2, 1.0, 0.0]]))
        c = model(image, torch.tensor([[0.2, 1.0, 0.0], [0.9, 0.0, 1.0]]))
    assert not torch.allclose(a, b)
    assert torch.equal(a, c)


def test_dropout_only_in_training() -> None:
    torch.manual_seed(0)
    model = make_fusion("resnet", dropout=0.5)
    image, tabular = torch.randn(4, 2, 16, 16, 16), torch.randn(4, 3)
    model.eval()
    with torch.no_grad():
        assert torch.equal(model(image, tabular), model(image, tabular))
        model.train()  # BN uses batch statistics, identical for both calls: only dropout differs
        assert not torch.allclose(model(image, tabular), model(image, tabular))


def test_encoder_weights_are_kept() -> None:
    encoder = ResNet3d(1, widths=(4,), blocks=(1,))
    with torch.no_grad():
        encoder.fc.weight.fill_(0.5)
    FusionNet(encoder, num_tabular_features=2, num_classes=3)
    assert (encoder.fc.weight == 0.5).all()


def test_encoder_without_out_features_rejected() -> None:
    with pytest.raises(OptionError, match="out_features"):
        FusionNet(nn.Conv3d(1, 1, 3), num_tabular_features=2, num_classes=3)


def make_wide_deep(seed: int = 0) -> WideAndDeepNet:
    torch.manual_seed(seed)
    return WideAndDeepNet(ResNet3d(2, widths=(8, 16), blocks=(1, 1)), num_tabular_features=5, num_classes=3)


def test_wide_and_deep_starts_exactly_at_its_linear_model() -> None:
    model = make_wide_deep()
    image, tabular = torch.randn(4, 2, 16, 16, 16), torch.randn(4, 5)
    for mode in (model.eval, model.train):  # dropout or not: the deep branch adds exactly nothing
        mode()
        with torch.no_grad():
            assert torch.equal(model.deep(image, tabular), torch.zeros(4, 3))
            assert torch.equal(model(image, tabular), model.wide(tabular))
            assert not torch.equal(model(image, tabular), model(image, tabular.flip(0)))  # the linear model is live
    assert model.wide.weight.abs().sum() > 0


def test_one_step_moves_the_deep_branch_away_from_zero() -> None:
    model = make_wide_deep()
    image, tabular, label = torch.randn(4, 2, 16, 16, 16), torch.randn(4, 5), torch.tensor([0, 1, 2, 0])
    optimizer = torch.optim.SGD(model.parameters(), lr=0.1)
    nn.functional.cross_entropy(model(image, tabular), label).backward()
    assert model.deep.classifier.weight.grad.abs().sum() > 0 and model.wide.weight.grad.abs().sum() > 0
    optimizer.step()
    model.eval()
    with torch.no_grad():
        deep = model.deep(image, tabular)
    assert deep.abs().min() > 0
    assert not torch.allclose(deep[0], deep[1])  # it depends on the input, not only on a bias
