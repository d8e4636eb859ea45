"""Every shipped config parses and builds its model and DataModule (no data or GPU needed)."""

from pathlib import Path

import pytest
import torch

from adni_lightning.cli import CONFIG_DIR
from adni_lightning.data.manifest import ManifestSpec
from adni_lightning.main import main
from adni_lightning.models import SeedCNN


@pytest.mark.parametrize("name", ["synthetic", "adni", "seed"])
def test_config_parses_and_prints(name, capsys):
    with pytest.raises(SystemExit) as exit_:
        main(["fit", "--config", str(CONFIG_DIR / f"{name}.yaml"), "--print_config"])
    assert exit_.value.code in (0, None)
    assert "data:" in capsys.readouterr().out


def test_seed_config_is_the_blog_setup():
    import yaml

    config = yaml.safe_load((CONFIG_DIR / "seed.yaml").read_text())
    data = config["data"]["init_args"]
    assert data["preprocessing"]["image_size"] == 224 and data["loader"]["batch_size"] == 4
    assert data["preprocessing"]["input_kind"] == "intensity" and data["preprocessing"]["crop"] is False
    assert config["model"]["optimizer"] == {"class_path": "torch.optim.Adam", "init_args": {"lr": 0.001}}
    assert config["trainer"]["max_epochs"] == 10
    encoder = SeedCNN(1, pooled_size=config["model"]["image_encoder"]["init_args"]["pooled_size"])
    assert encoder.fc1.in_features == 24 * 26 * 26 * 26  # the blog's Linear(24*26*26*26, 128)
    with torch.device("meta"):
        assert SeedCNN(1, pooled_size=26)(torch.empty(4, 1, 224, 224, 224)).shape == (4, 128)


def test_adni_config_maps_adni_go2_groups_explicitly():
    import yaml

    data = yaml.safe_load((CONFIG_DIR / "adni.yaml").read_text())["data"]
    assert data["class_path"] == "adni_lightning.data.ADNIDataModule"  # real data: never generates a cohort
    manifest = data["init_args"]["manifest"]
    assert manifest["group_map"] == {"EMCI": "MCI", "LMCI": "MCI", "SMC": None}
    assert ManifestSpec(**manifest).csv_file == Path("K1data/ADNI_1p5T_Filtered.csv")
