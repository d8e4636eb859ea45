"""The networks can be built from YAML the way LightningCLI does (jsonargparse ``class_path``/``init_args``)."""

from __future__ import annotations

import inspect
from collections.abc import Callable

import pytest
import torch
from torch import nn

from adni_lightning.models import FusionNet, ResNet3d, SeedCNN

jsonargparse = pytest.importorskip("jsonargparse")


def build_encoder(yaml: str) -> Callable[[int], nn.Module]:
    """Parse ``yaml`` as an image-encoder factory: ``in_channels`` is left for the caller to pass."""
    parser = jsonargparse.ArgumentParser()
    parser.add_argument("--encoder", type=Callable[[int], nn.Module])
    cfg = parser.parse_string(yaml)
    instantiate = getattr(parser, "instantiate", None) or parser.instantiate_classes
    return instantiate(cfg).encoder


def test_resnet_from_yaml() -> None:
    factory = build_encoder(
        "encoder:\n  class_path: adni_lightning.models.ResNet3d\n"
        "  init_args:\n    widths: [8, 16]\n    blocks: [1, 2]\n    feature_dim: 32\n"
    )
    encoder = factory(9)
    assert isinstance(encoder, ResNet3d)
    assert encoder.stem[0].in_channels == 9
    assert [len(stage) for stage in encoder.stages] == [1, 2]
    assert encoder.out_features == 32


def test_seed_cnn_from_yaml_into_fusion() -> None:
    factory = build_encoder("encoder:\n  class_path: adni_lightning.models.SeedCNN\n  init_args:\n    pooled_size: 2\n")
    model = FusionNet(factory(2), num_tabular_features=3, num_classes=3)
    assert isinstance(model.image_encoder, SeedCNN)
    assert model.image_encoder.fc1.in_features == 24 * 2**3
    assert model.eval()(torch.randn(1, 2, 24, 24, 24), torch.randn(1, 3)).shape == (1, 3)


@pytest.mark.parametrize("cls", [SeedCNN, ResNet3d, FusionNet])
def test_constructors_fully_annotated(cls: type) -> None:
    for name, param in inspect.signature(cls.__init__).parameters.items():
        if name != "self":
            assert param.annotation is not inspect.Parameter.empty, f"{cls.__name__}.{name}"
