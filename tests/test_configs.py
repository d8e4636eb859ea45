"""Every shipped config parses and builds its model and DataModule (no data or GPU needed)."""

from pathlib import Path

import pytest
import torch
import yaml

from adni_lightning.cli import CONFIG_DIR
from adni_lightning.commands.cv import CrossValidationError
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


@pytest.mark.slow  # a training and seven commands (~30 s): the default suite stays under 10 minutes
def test_a_config_saved_by_fit_print_config_is_accepted_by_every_command(cohort, tmp_path, capsys):
    """Users keep ``fit --print_config > run.yaml`` (with ckpt_path and weights_only): every command takes it."""
    from tests.helpers import tiny_args

    with pytest.raises(SystemExit):
        main(tiny_args("fit", tmp_path / "run", cohort, "--trainer.max_epochs", "1", "--print_config"))
    saved = tmp_path / "run.yaml"
    saved.write_text(capsys.readouterr().out)
    assert "ckpt_path: null" in saved.read_text() and "weights_only:" in saved.read_text()
    main(["fit", "--config", str(saved)])
    last = tmp_path / "run" / "checkpoints" / "last.ckpt"
    for command in (
        ["validate", "--ckpt_path", str(last)],
        ["predict", "--ckpt_path", str(last), "--trainer.default_root_dir", str(tmp_path / "predicted")],
        ["inspect", "--out", str(tmp_path / "inspected")],
        ["baseline", "--folds", "2", "--root", str(tmp_path / "cv")],
        ["evaluate", "--ckpt_path", str(last), "--root", str(tmp_path / "evaluated"), "--bootstrap", "10"],
        ["interpret", "--ckpt_path", str(last), "--out", str(tmp_path / "explained"), "--ig_steps", "0"],
    ):
        main([command[0], "--config", str(saved), *command[1:]])
    assert (tmp_path / "predicted" / "predictions.csv").is_file() and (tmp_path / "inspected" / "cohort.md").is_file()
    assert (tmp_path / "cv" / "baseline" / "oof_predictions.csv").is_file()
    assert (tmp_path / "evaluated" / "evaluate_report.md").is_file()
    assert (tmp_path / "explained" / "images.csv").is_file()
    with pytest.raises(CrossValidationError, match="no fold of a cross-validation has run"):
        main(["cv", "--config", str(saved), "--folds", "2", "--report_only", "true", "--root", str(tmp_path / "none")])


@pytest.mark.parametrize("task", ["ad_vs_cn", "smci_vs_pmci"])
@pytest.mark.parametrize("base", ["synthetic", "adni"])
def test_task_configs_stack_on_the_data_configs(base, task, capsys):
    configs = ["--config", str(CONFIG_DIR / f"{base}.yaml"), "--config", str(CONFIG_DIR / "tasks" / f"{task}.yaml")]
    with pytest.raises(SystemExit) as exit_:
        main(["fit", *configs, "--print_config"])
    assert exit_.value.code in (0, None)
    printed = yaml.safe_load(capsys.readouterr().out)["data"]["init_args"]
    assert printed["clinical"]["file"] == "ADNIMERGE.csv"
    expected = {"ad_vs_cn": ("column", ["CN", "AD"]), "smci_vs_pmci": ("progression", ["sMCI", "pMCI"])}[task]
    assert (printed["task"]["label"], printed["manifest"]["classes"]) == expected
