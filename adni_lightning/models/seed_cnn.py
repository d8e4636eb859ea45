"""The blog's 3D CNN, kept layer for layer but freed from its fixed input size."""

from __future__ import annotations

import torch
from torch import nn

from .init import init_weights


class SeedCNN(nn.Module):
    """The seed project's image encoder: four 3×3×3 conv/BN/ReLU layers (12, 12, 24, 24 channels, no padding)
    and three 2×2×2 max-pools, then a linear layer to ``feature_dim``.

    Layer names, order, channel counts and biases are the blog's, so its weights load into the conv/BN layers.
    The one change: the blog's ``fc1`` was ``Linear(24*26*26*26, 128)``, valid only for 224³ inputs (224 → 26
    after the convs and pools), and any other crop or resampling crashed. An ``AdaptiveAvgPool3d(pooled_size)``
    before ``fc1`` fixes the flattened size at ``24 * pooled_size**3`` for every input, so the parameter count
    no longer depends on the volume size. Inputs need at least 24 voxels per axis (24 → 1 after the last pool).

    As in the blog, ``fc1`` has no activation: the fusion head sees its raw output.
    """

    def __init__(self, in_channels: int, feature_dim: int = 128, pooled_size: int = 4) -> None:
        super().__init__()
        self.out_features = feature_dim
        self.conv1 = nn.Conv3d(in_channels, 12, kernel_size=3)
        self.bn1 = nn.BatchNorm3d(12)
        self.conv2 = nn.Conv3d(12, 12, kernel_size=3)
        self.bn2 = nn.BatchNorm3d(12)
        self.pool1 = nn.MaxPool3d(2, 2)
        self.conv4 = nn.Conv3d(12, 24, kernel_size=3)
        self.bn4 = nn.BatchNorm3d(24)
        self.pool2 = nn.MaxPool3d(2, 2)
        self.conv5 = nn.Conv3d(24, 24, kernel_size=3)
        self.bn5 = nn.BatchNorm3d(24)
        self.pool3 = nn.MaxPool3d(2, 2)
        self.avgpool = nn.AdaptiveAvgPool3d(pooled_size)
        self.fc1 = nn.Linear(24 * pooled_size**3, feature_dim)
        init_weights(self)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        """``(B, C, D, H, W)`` → ``(B, feature_dim)``."""
        x = torch.relu(self.bn1(self.conv1(x)))
        x = torch.relu(self.bn2(self.conv2(x)))
        x = self.pool1(x)
        x = torch.relu(self.bn4(self.conv4(x)))
        x = self.pool2(x)
        x = torch.relu(self.bn5(self.conv5(x)))
        x = self.pool3(x)
        x = self.avgpool(x)
        return self.fc1(torch.flatten(x, 1))
