"""A small, configurable 3D ResNet encoder."""

from __future__ import annotations

import torch
from torch import nn

from adni_lightning.errors import OptionError

from .init import init_weights


def _conv3(in_channels: int, out_channels: int, stride: int = 1) -> nn.Conv3d:
    # No bias: every conv is followed by BatchNorm, whose shift makes it redundant.
    return nn.Conv3d(in_channels, out_channels, kernel_size=3, stride=stride, padding=1, bias=False)


class BasicBlock3d(nn.Module):
    """Two 3×3×3 conv/BN layers plus an identity shortcut (He et al. 2016, "basic" block).

    When the block changes width or resolution, the shortcut is a strided 1×1×1 conv + BN so it can be added.
    """

    def __init__(self, in_channels: int, out_channels: int, stride: int = 1) -> None:
        super().__init__()
        self.conv1 = _conv3(in_channels, out_channels, stride)
        self.bn1 = nn.BatchNorm3d(out_channels)
        self.conv2 = _conv3(out_channels, out_channels)
        self.bn2 = nn.BatchNorm3d(out_channels)
        self.shortcut: nn.Module = nn.Identity()
        if stride != 1 or in_channels != out_channels:
            self.shortcut = nn.Sequential(
                nn.Conv3d(in_channels, out_channels, kernel_size=1, stride=stride, bias=False),
                nn.BatchNorm3d(out_channels),
            )

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        out = torch.relu(self.bn1(self.conv1(x)))
        out = self.bn2(self.conv2(out))
        return torch.relu(out + self.shortcut(x))


class ResNet3d(nn.Module):
    """3D ResNet: conv stem, one stage of basic blocks per entry of ``widths``/``blocks``, global average
    pooling, ``Linear → feature_dim`` and ReLU.

    Every stage after the first halves the resolution in its first block, so with ``stem_stride=2`` and four
    stages a 64³ volume reaches the pooling at 4³. The stem has no max-pool (unlike 2D ImageNet ResNets):
    brain volumes here are small, and atrophy shows in thin structures that early pooling would blur.
    Global pooling makes the encoder independent of the input size. Defaults hold about 0.9 M parameters,
    small enough for CPU smoke runs and modest GPUs.
    """

    def __init__(
        self,
        in_channels: int,
        widths: tuple[int, ...] | list[int] = (16, 32, 64, 128),
        blocks: tuple[int, ...] | list[int] = (1, 1, 1, 1),
        feature_dim: int = 128,
        stem_stride: int = 2,
    ) -> None:
        super().__init__()
        if not widths or len(widths) != len(blocks):
            raise OptionError(
                f"model.image_encoder: widths and blocks need the same non-zero length, got {widths} and {blocks}"
            )
        if min(blocks) < 1:
            raise OptionError(f"model.image_encoder: every stage needs at least one block, got {blocks}")
        self.out_features = feature_dim
        self.stem = nn.Sequential(
            _conv3(in_channels, widths[0], stem_stride), nn.BatchNorm3d(widths[0]), nn.ReLU(inplace=True)
        )
        stages = []
        channels = widths[0]
        for i, (width, depth) in enumerate(zip(widths, blocks)):
            layers = [BasicBlock3d(channels, width, stride=1 if i == 0 else 2)]
            layers += [BasicBlock3d(width, width) for _ in range(depth - 1)]
            stages.append(nn.Sequential(*layers))
            channels = width
        self.stages = nn.ModuleList(stages)
        self.pool = nn.AdaptiveAvgPool3d(1)
        self.fc = nn.Linear(channels, feature_dim)
        init_weights(self)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        """``(B, C, D, H, W)`` → ``(B, feature_dim)``, non-negative (after ReLU)."""
        x = self.stem(x)
        for stage in self.stages:
            x = stage(x)
        x = torch.flatten(self.pool(x), 1)
        return torch.relu(self.fc(x))
