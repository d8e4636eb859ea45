"""Networks: image encoders (:class:`SeedCNN`, :class:`ResNet3d`, any MONAI net through :class:`MonaiEncoder`) and
their fusion with tabular covariates (:class:`FusionNet`, :class:`WideAndDeepNet`).
"""

from .fusion import FusionNet, TabularNet, WideAndDeepNet
from .init import init_weights
from .monai_encoder import MonaiEncoder
from .resnet3d import BasicBlock3d, ResNet3d
from .seed_cnn import SeedCNN

__all__ = [
    "BasicBlock3d",
    "FusionNet",
    "MonaiEncoder",
    "ResNet3d",
    "SeedCNN",
    "TabularNet",
    "WideAndDeepNet",
    "init_weights",
]
