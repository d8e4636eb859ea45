"""Networks: image encoders (:class:`SeedCNN`, :class:`ResNet3d`) and their fusion with tabular covariates."""

from .fusion import FusionNet, TabularNet
from .init import init_weights
from .resnet3d import BasicBlock3d, ResNet3d
from .seed_cnn import SeedCNN

__all__ = ["BasicBlock3d", "FusionNet", "ResNet3d", "SeedCNN", "TabularNet", "init_weights"]
