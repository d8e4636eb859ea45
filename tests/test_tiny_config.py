"""The tests' tiny run is tests/conf/tiny.yaml stacked on the packaged synthetic config, as a user stacks configs."""

from __future__ import annotations

import functools
import shlex
from collections.abc import Iterator

import pytest
import yaml

from adni_lightning.main import DEFAULT_CONFIG, main
from tests.helpers import TINY_CONFIG, tiny_args


def _leaves(mapping: dict, prefix: tuple[str, ...] = ()) -> Iterator[tuple[tuple[str, ...], object]]:
    """Every value of a nested mapping with its key path."""
    for key, value in mapping.items():
        if isinstance(value, dict):
            yield from _leaves(value, (*prefix, key))
        else:
            yield (*prefix, key), value


def test_a_value_given_after_the_tiny_config_wins_and_the_rest_of_both_configs_holds(tmp_path, capsys):
    with pytest.raises(SystemExit):
        main(tiny_args("fit", tmp_path / "run", tmp_path / "K1data", "--data.loader.batch_size", "2", "--print_config"))
    parsed = yaml.safe_load(capsys.readouterr().out)
    tiny = dict(_leaves(yaml.safe_load(TINY_CONFIG.read_text())))
    assert tiny[("data", "init_args", "loader", "batch_size")] == 4
    del tiny[("data", "init_args", "loader", "batch_size")]
    assert parsed["data"]["init_args"]["loader"]["batch_size"] == 2
    assert {keys: functools.reduce(dict.__getitem__, keys, parsed) for keys in tiny} == tiny
    packaged = yaml.safe_load(DEFAULT_CONFIG.read_text())  # what the tiny config does not name stays the packaged one
    assert parsed["data"]["class_path"] == packaged["data"]["class_path"]
    cohort = packaged["data"]["init_args"]["cohort"]
    assert {key: parsed["data"]["init_args"]["cohort"][key] for key in cohort} == cohort
    assert parsed["model"]["image_encoder"]["class_path"] == packaged["model"]["image_encoder"]["class_path"]
    assert parsed["trainer"]["max_epochs"] == packaged["trainer"]["max_epochs"]


def test_a_stacked_packaged_config_stays_in_the_printed_commands(cohort, tmp_path, capsys):
    stacked = ["--config", str(DEFAULT_CONFIG), "--config", str(TINY_CONFIG)]
    run = ["--trainer.default_root_dir", str(tmp_path / "run"), "--data.manifest.data_dir", str(cohort)]
    main(["fit", *stacked, *run, "--data.cache_dir", str(tmp_path / "cache"), "--trainer.max_epochs", "1"])
    printed = dict(line.split(":", 1) for line in capsys.readouterr().out.splitlines() if line.startswith("resume:"))
    assert shlex.split(printed["resume"])[4:8] == stacked  # the packaged config the user named stays in the commands
