"""ResNet3d: shapes, configurable width/depth, downsampling."""

from __future__ import annotations

import math

import pytest
import torch
from torch import nn

from adni_lightning.models import BasicBlock3d, ResNet3d


def n_params(module: nn.Module) -> int:
    return sum(p.numel() for p in module.parameters())


def expected_params(in_channels: int, widths: list[int], blocks: list[int], feature_dim: int = 128) -> int:
    """Closed-form count: bias-free convs, 2 parameters per BN channel, projection shortcuts on change."""

    def block(cin: int, cout: int, projected: bool) -> int:
        count = cin * cout * 27 + 2 * cout + cout * cout * 27 + 2 * cout
        return count + (cin * cout + 2 * cout if projected else 0)

    total = in_channels * widths[0] * 27 + 2 * widths[0]
    channels = widths[0]
    for i, (width, depth) in enumerate(zip(widths, blocks)):
        total += block(channels, width, projected=i > 0 or channels != width)
        total += (depth - 1) * block(width, width, projected=False)
        channels = width
    return total + channels * feature_dim + feature_dim


@pytest.mark.parametrize("in_channels", [1, 9])
@pytest.mark.parametrize("size", [(16, 16, 16), (32, 32, 32), (48, 56, 40), (64, 64, 64)])
def test_output_shape(in_channels: int, size: tuple[int, int, int]) -> None:
    model = ResNet3d(in_channels).eval()
    with torch.no_grad():
        out = model(torch.randn(2, in_channels, *size))
    assert model.out_features == 128
    assert out.shape == (2, 128)
    assert torch.isfinite(out).all() and (out >= 0).all()


@pytest.mark.parametrize(
    "widths, blocks",
    [((16, 32, 64, 128), (1, 1, 1, 1)), ([8, 16], [1, 2]), ((8, 16, 32), (2, 2, 2)), ((12,), (3,))],
)
def test_parameter_count_matches_config(widths: tuple[int, ...], blocks: tuple[int, ...]) -> None:
    model = ResNet3d(9, widths=widths, blocks=blocks, feature_dim=32)
    assert n_params(model) == expected_params(9, list(widths), list(blocks), feature_dim=32)
    assert len(model.stages) == len(widths)
    assert [len(stage) for stage in model.stages] == list(blocks)
    assert model.fc.in_features == widths[-1]


def test_width_and_depth_grow_the_model() -> None:
    base = n_params(ResNet3d(9, widths=(8, 16), blocks=(1, 1)))
    deeper = n_params(ResNet3d(9, widths=(8, 16), blocks=(1, 2)))
    wider = n_params(ResNet3d(9, widths=(16, 32), blocks=(1, 1)))
    assert deeper - base == n_params(BasicBlock3d(16, 16))  # exactly one more identity block
    assert wider > deeper > base
    # Parameter count is independent of the input volume size.
    assert n_params(ResNet3d(9)) == expected_params(9, [16, 32, 64, 128], [1, 1, 1, 1])


def feature_map_sizes(model: ResNet3d, size: tuple[int, int, int]) -> list[tuple[int, ...]]:
    sizes: list[tuple[int, ...]] = []
    hooks = [
        m.register_forward_hook(lambda _m, _i, out: sizes.append(tuple(out.shape[2:])))
        for m in [model.stem, *model.stages]
    ]
    with torch.no_grad():
        model.eval()(torch.randn(1, 1, *size))
    for hook in hooks:
        hook.remove()
    return sizes


@pytest.mark.parametrize("stem_stride", [1, 2])
def test_downsampling_strides(stem_stride: int) -> None:
    """The stem divides by stem_stride, the first stage keeps resolution, every later stage halves it."""
    size = (48, 56, 40)
    sizes = feature_map_sizes(ResNet3d(1, widths=(4, 4, 4, 4), stem_stride=stem_stride), size)
    expected = [tuple(math.ceil(s / stem_stride) for s in size)]
    expected.append(expected[0])
    for _ in range(3):
        expected.append(tuple(math.ceil(s / 2) for s in expected[-1]))
    assert sizes == expected
    assert sizes[-1] == ((3, 4, 3) if stem_stride == 2 else (6, 7, 5))


def test_residual_block_shortcuts() -> None:
    assert isinstance(BasicBlock3d(8, 8).shortcut, nn.Identity)
    projected = BasicBlock3d(8, 16, stride=2)
    assert isinstance(projected.shortcut, nn.Sequential)
    assert projected(torch.randn(1, 8, 9, 9, 9)).shape == (1, 16, 5, 5, 5)


@pytest.mark.parametrize("widths, blocks", [((8, 16), (1,)), ((), ()), ((8,), (0,))])
def test_invalid_config_rejected(widths: tuple[int, ...], blocks: tuple[int, ...]) -> None:
    with pytest.raises(ValueError):
        ResNet3d(1, widths=widths, blocks=blocks)
