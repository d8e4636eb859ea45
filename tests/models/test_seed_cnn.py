"""SeedCNN keeps the blog's layers and works for any input size."""

from __future__ import annotations

import pytest
import torch
from torch import nn

from adni_lightning.models import SeedCNN

# The blog's layers, in forward order: (name, type, in, out) for convs/BNs, kernel size for pools.
BLOG_LAYERS = [
    ("conv1", nn.Conv3d, None, 12),
    ("bn1", nn.BatchNorm3d, 12, 12),
    ("conv2", nn.Conv3d, 12, 12),
    ("bn2", nn.BatchNorm3d, 12, 12),
    ("pool1", nn.MaxPool3d, 2, 2),
    ("conv4", nn.Conv3d, 12, 24),
    ("bn4", nn.BatchNorm3d, 24, 24),
    ("pool2", nn.MaxPool3d, 2, 2),
    ("conv5", nn.Conv3d, 24, 24),
    ("bn5", nn.BatchNorm3d, 24, 24),
    ("pool3", nn.MaxPool3d, 2, 2),
]


def n_params(module: nn.Module) -> int:
    return sum(p.numel() for p in module.parameters())


@pytest.mark.parametrize("in_channels", [1, 9])
@pytest.mark.parametrize("size", [(24, 24, 24), (32, 32, 32), (48, 56, 40), (64, 64, 64)])
def test_output_shape(in_channels: int, size: tuple[int, int, int]) -> None:
    model = SeedCNN(in_channels).eval()
    with torch.no_grad():
        out = model(torch.randn(2, in_channels, *size))
    assert model.out_features == 128
    assert out.shape == (2, 128)
    assert torch.isfinite(out).all()


def test_feature_dim_and_pooled_size() -> None:
    model = SeedCNN(3, feature_dim=32, pooled_size=2).eval()
    assert model.out_features == 32
    assert model.fc1.in_features == 24 * 2**3
    with torch.no_grad():
        assert model(torch.randn(2, 3, 40, 40, 40)).shape == (2, 32)


def test_layers_match_the_blog() -> None:
    model = SeedCNN(1)
    children = dict(model.named_children())
    for name, kind, a, b in BLOG_LAYERS:
        layer = children[name]
        assert type(layer) is kind, name
        if kind is nn.Conv3d:
            assert (layer.in_channels, layer.out_channels) == (1 if a is None else a, b), name
            assert layer.kernel_size == (3, 3, 3) and layer.stride == (1, 1, 1) and layer.padding == (0, 0, 0)
            assert layer.bias is not None  # the blog used PyTorch's default bias=True
        elif kind is nn.BatchNorm3d:
            assert layer.num_features == b, name
        else:
            assert (layer.kernel_size, layer.stride) == (a, b), name
    assert sum(isinstance(m, nn.MaxPool3d) for m in model.modules()) == 3
    assert sum(isinstance(m, nn.Conv3d) for m in model.modules()) == 4
    assert isinstance(model.avgpool, nn.AdaptiveAvgPool3d)
    assert isinstance(model.fc1, nn.Linear)


def test_forward_order_and_relus() -> None:
    """Layers run in the blog's order, and each BN output goes through a ReLU before the next layer."""
    model = SeedCNN(1)
    calls: list[str] = []
    inputs: dict[str, torch.Tensor] = {}

    def record(name: str):
        def hook(_module: nn.Module, args: tuple[torch.Tensor, ...]) -> None:
            calls.append(name)
            inputs[name] = args[0]

        return hook

    for name, module in model.named_children():
        module.register_forward_pre_hook(record(name))
    model(torch.randn(2, 1, 32, 32, 32))
    assert calls == [name for name, *_ in BLOG_LAYERS] + ["avgpool", "fc1"]
    for after_relu in ("conv2", "pool1", "pool2", "pool3"):
        assert (inputs[after_relu] >= 0).all(), after_relu
        assert (inputs[after_relu] > 0).any(), after_relu


def test_parameter_count_independent_of_input_size() -> None:
    convs_and_bns = (1 * 12 * 27 + 12) + (12 * 12 * 27 + 12) + (12 * 24 * 27 + 24) + (24 * 24 * 27 + 24)
    convs_and_bns += 2 * (12 + 12 + 24 + 24)
    model = SeedCNN(1)
    assert n_params(model) == convs_and_bns + 24 * 4**3 * 128 + 128
    # The same module (same parameters) serves several sizes; nothing is sized from the input.
    with torch.no_grad():
        for size in (24, 40, 72):
            assert model.eval()(torch.randn(1, 1, size, size, size)).shape == (1, 128)
    assert n_params(model) == convs_and_bns + 24 * 4**3 * 128 + 128


def test_blog_geometry_at_224() -> None:
    """At 224³ the conv/pool stack ends at 24×26³, the blog's fc input; pooled_size=26 makes the pool a no-op.

    Run on the meta device: shapes only, no memory or compute.
    """
    with torch.device("meta"):
        model = SeedCNN(1, pooled_size=26).eval()
    x = torch.empty(1, 1, 224, 224, 224, device="meta")
    for name, *_ in BLOG_LAYERS:
        x = getattr(model, name)(x)
    assert x.shape == (1, 24, 26, 26, 26)
    assert model.avgpool(x).shape == x.shape
    assert model.fc1.weight.shape == (128, 24 * 26 * 26 * 26)


def test_too_small_input_fails() -> None:
    with pytest.raises(RuntimeError):
        SeedCNN(1).eval()(torch.randn(1, 1, 23, 23, 23))
