"""Feature-level fusion of an image encoder with the tabular covariates (age, sex, regional volumes), and its
wide-and-deep variant that starts as a linear model of the covariates.
"""

from __future__ import annotations

import torch
from torch import nn

from adni_lightning.errors import OptionError

from .init import init_weights


class TabularNet(nn.Module):
    """Embeds the tabular covariates with ``Linear + ReLU``, the seed's numeric branch (``Linear(3, 64)``)."""

    def __init__(self, in_features: int, out_features: int = 64) -> None:
        super().__init__()
        self.out_features = out_features
        self.fc = nn.Linear(in_features, out_features)
        init_weights(self)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        """``(B, in_features)`` → ``(B, out_features)``."""
        return torch.relu(self.fc(x))


class FusionNet(nn.Module):
    """Classifier on ``concat(image_encoder(image), TabularNet(tabular))``, with dropout before the last layer.

    The encoder is passed in built, so any ``nn.Module`` with an ``out_features`` attribute plugs in (and
    keeps whatever weights it has: only the layers created here are initialised). Fusing at feature level
    lets age and sex shift the decision without having to pass through the convolutional stack.
    """

    def __init__(
        self,
        image_encoder: nn.Module,
        num_tabular_features: int,
        num_classes: int,
        tabular_dim: int = 64,
        dropout: float = 0.3,
    ) -> None:
        super().__init__()
        image_dim = getattr(image_encoder, "out_features", None)
        if not isinstance(image_dim, int):
            raise OptionError(
                f"model.image_encoder: {type(image_encoder).__name__} needs an integer 'out_features' attribute"
            )
        self.image_encoder = image_encoder
        self.tabular_net = TabularNet(num_tabular_features, tabular_dim)
        self.dropout = nn.Dropout(dropout)
        self.classifier = nn.Linear(image_dim + tabular_dim, num_classes)
        init_weights(self.classifier)

    def forward(self, image: torch.Tensor, tabular: torch.Tensor) -> torch.Tensor:
        """``(B, C, D, H, W)``, ``(B, num_tabular_features)`` → logits ``(B, num_classes)``."""
        features = torch.cat([self.image_encoder(image), self.tabular_net(tabular)], dim=1)
        return self.classifier(self.dropout(features))


class WideAndDeepNet(nn.Module):
    """``wide(tabular) + deep(image, tabular)``: a linear model of the tabular features plus a :class:`FusionNet`
    whose last layer starts at zero (Cheng et al. 2016, "Wide & Deep Learning").

    On a small cohort the image branch's many features can swamp a few informative numeric ones (age, sex,
    regional volumes). Starting at zero, the deep branch adds nothing at initialisation, so training starts
    exactly at the linear model and moves away from it only where the image (or a non-linear use of the covariates)
    lowers the loss. The encoder and the tabular branch get their first gradient once the zeroed layer has moved,
    after the first step.
    """

    def __init__(
        self,
        image_encoder: nn.Module,
        num_tabular_features: int,
        num_classes: int,
        tabular_dim: int = 64,
        dropout: float = 0.3,
    ) -> None:
        super().__init__()
        self.deep = FusionNet(image_encoder, num_tabular_features, num_classes, tabular_dim, dropout)
        nn.init.zeros_(self.deep.classifier.weight)
        nn.init.zeros_(self.deep.classifier.bias)
        self.wide = nn.Linear(num_tabular_features, num_classes)
        init_weights(self.wide)

    def forward(self, image: torch.Tensor, tabular: torch.Tensor) -> torch.Tensor:
        """``(B, C, D, H, W)``, ``(B, num_tabular_features)`` → logits ``(B, num_classes)``."""
        return self.wide(tabular) + self.deep(image, tabular)
