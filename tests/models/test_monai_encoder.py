"""MonaiEncoder: MONAI networks as image encoders, built by name, from YAML, and without MONAI installed."""

from __future__ import annotations

import subprocess
import sys
from pathlib import Path

import pytest
import torch
import yaml
from jsonargparse import ActionConfigFile
from lightning.pytorch.cli import LightningArgumentParser
from torch import nn

from adni_lightning.errors import OptionError
from adni_lightning.models import FusionNet, MonaiEncoder
from adni_lightning.models.monai_encoder import _parameter_names
from adni_lightning.module import ADNIClassifier

nets = pytest.importorskip("monai.networks.nets")

CONFIGS = Path(__file__).parents[2] / "adni_lightning" / "configs"
TINY_DENSENET = {"init_features": 4, "growth_rate": 4, "block_config": (1, 1)}
TINY_RESNET = {"block": "basic", "layers": (1, 1, 1, 1), "block_inplanes": (4, 8, 8, 8)}


def volume(batch: int = 2, channels: int = 9, size: int = 16) -> torch.Tensor:
    return torch.randn(batch, channels, size, size, size, generator=torch.Generator().manual_seed(0))


def test_densenet_gives_feature_dim_features() -> None:
    encoder = MonaiEncoder(9, "DenseNet121", feature_dim=16, kwargs=TINY_DENSENET)
    assert isinstance(encoder.network, nets.DenseNet121)
    assert encoder.network.features.conv0.in_channels == 9
    assert encoder.network.class_layers.out.out_features == 16
    out = encoder(volume())
    assert encoder.out_features == 16
    assert out.shape == (2, 16) and (out >= 0).all() and (out > 0).any()


def test_resnet_takes_n_input_channels_and_num_classes() -> None:
    encoder = MonaiEncoder(9, "ResNet", feature_dim=12, kwargs=TINY_RESNET)
    assert encoder.network.conv1.in_channels == 9
    assert encoder.network.fc.out_features == 12
    assert encoder(volume()).shape == (2, 12)


def test_kwargs_are_followed_into_base_and_returned_classes() -> None:
    # SEResNet50(**kwargs) → SENet(spatial_dims, in_channels, ...); resnet10(**kwargs) → ResNet(...).
    assert {"layers", "spatial_dims", "in_channels", "num_classes"} <= _parameter_names(nets.SEResNet50)
    assert {"pretrained", "n_input_channels", "num_classes"} <= _parameter_names(nets.resnet10)
    assert MonaiEncoder(9, "resnet10", feature_dim=8).network.conv1.in_channels == 9


def test_tuple_and_spatial_outputs_are_reduced() -> None:
    # SegResNetVAE returns (segmentation (B, out_channels, D, H, W), vae_loss).
    kwargs = {"input_image_size": (16,) * 3, "init_filters": 8, "blocks_down": (1, 1), "blocks_up": (1,), "vae_nz": 8}
    encoder = MonaiEncoder(9, "SegResNetVAE", feature_dim=6, kwargs=kwargs).eval()
    x = volume()
    with torch.no_grad():
        raw, _ = encoder.network(x)
        out = encoder(x)
    assert raw.shape == (2, 6, 16, 16, 16)
    torch.testing.assert_close(out, torch.relu(raw.mean(dim=(2, 3, 4))))


def test_network_ignoring_output_size_is_an_error() -> None:
    encoder = MonaiEncoder(9, "ResNet", feature_dim=12, kwargs={**TINY_RESNET, "feed_forward": False})
    with pytest.raises(OptionError, match=r"gave \(8,\) features, not \(12,\)"):
        encoder(volume())


def test_gradients_reach_monai_weights_in_fusion() -> None:
    model = FusionNet(MonaiEncoder(9, "DenseNet121", 16, TINY_DENSENET), num_tabular_features=3, num_classes=3)
    logits = model(volume(batch=4), torch.randn(4, 3))
    assert logits.shape == (4, 3)
    assert model.classifier.in_features == 16 + 64
    nn.functional.cross_entropy(logits, torch.tensor([0, 1, 2, 0])).backward()
    for name, param in model.image_encoder.named_parameters():
        assert param.grad is not None and torch.isfinite(param.grad).all(), name
    assert model.image_encoder.network.features.conv0.weight.grad.abs().sum() > 0


def test_wrong_name_suggests_close_matches() -> None:
    with pytest.raises(ValueError, match="no network 'DenseNet12'; did you mean DenseNet121"):
        MonaiEncoder(1, "DenseNet12")
    with pytest.raises(ValueError, match=r"no network 'Qqqq'$"):
        MonaiEncoder(1, "Qqqq")


def test_unusable_network_and_clashing_kwargs_are_errors() -> None:
    with pytest.raises(ValueError, match="Classifier takes none of"):
        MonaiEncoder(1, "Classifier")  # in_shape/classes instead of in_channels/out_channels
    with pytest.raises(ValueError, match=r"may not set \['out_channels'\]"):
        MonaiEncoder(1, "DenseNet121", kwargs={"out_channels": 3})


def test_missing_monai_names_the_extra(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setitem(sys.modules, "monai.networks.nets", None)
    with pytest.raises(ImportError, match=r"pip install adni_lightning\[monai\]"):
        MonaiEncoder(1)


def test_models_import_without_monai() -> None:
    code = "import sys; sys.modules['monai'] = None; import adni_lightning.models as m; print(m.MonaiEncoder.__name__)"
    result = subprocess.run([sys.executable, "-c", code], check=False, capture_output=True, text=True, timeout=120)
    assert result.returncode == 0, result.stderr
    assert result.stdout.strip() == "MonaiEncoder"


def test_yaml_fragment_stacked_on_synthetic_config(tmp_path: Path) -> None:
    # The model section of synthetic.yaml (a ResNet3d), then the fragment, as `--config A --config B` does.
    base = tmp_path / "base.yaml"
    base.write_text(yaml.safe_dump({"model": yaml.safe_load((CONFIGS / "synthetic.yaml").read_text())["model"]}))
    parser = LightningArgumentParser()
    parser.add_argument("--config", action=ActionConfigFile)
    parser.add_class_arguments(ADNIClassifier, "model")
    cfg = parser.parse_args(
        ["--config", str(base), "--config", str(CONFIGS / "monai_densenet.yaml"), "--model.in_channels", "9"]
    )
    assert cfg.model.image_encoder.class_path == "adni_lightning.models.MonaiEncoder"
    assert "widths" not in cfg.model.image_encoder.init_args  # ResNet3d's arguments are dropped
    instantiate = getattr(parser, "instantiate", None) or parser.instantiate_classes
    model = instantiate(cfg).model
    encoder = model.net.image_encoder
    assert isinstance(encoder, MonaiEncoder) and isinstance(encoder.network, nets.DenseNet121)
    assert encoder.network.features.conv0.in_channels == 9
    assert encoder.network.features.conv0.out_channels == 16
    assert sum(isinstance(m, nets.densenet._DenseBlock) for m in encoder.modules()) == 3
    assert model.net.classifier.in_features == encoder.out_features + 64 == 128 + 64
    assert model.eval()(volume(size=24), torch.randn(2, 3)).shape == (2, 3)
