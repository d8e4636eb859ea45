"""The search space: every kind of range drawn by a real Optuna trial, and each mistake refused in one line."""

from __future__ import annotations

from pathlib import Path

import optuna
import pytest

from adni_lightning.cli import CONFIG_DIR
from adni_lightning.commands.tune import _check_space
from adni_lightning.run import Run
from adni_lightning.search_space import SearchSpaceError, load_space, suggest, values

SPACE = """
model.optimizer.init_args.lr: {low: 1.0e-4, high: 1.0e-2, log: true}
model.dropout: {low: 0.0, high: 0.5, step: 0.25}
trainer.max_epochs: {low: 2, high: 6, step: 2}
data.tabular.volumes: {choices: [[], [Left-Hippocampus, Right-Hippocampus]]}
model.image_encoder:
  choices:
    - {class_path: adni_lightning.models.ResNet3d, init_args: {widths: [4, 8], blocks: [1, 1]}}
    - {class_path: adni_lightning.models.ResNet3d, init_args: {widths: [8, 16], blocks: [1, 1]}}
"""


def _space(tmp_path: Path, text: str) -> Path:
    path = tmp_path / "space.yaml"
    path.write_text(text)
    return path


def test_every_kind_is_drawn_in_range_and_decoded_from_the_study(tmp_path):
    space = load_space(_space(tmp_path, SPACE))
    assert [d.kind for d in space] == ["float", "float", "int", "categorical", "categorical"]
    study = optuna.create_study(sampler=optuna.samplers.RandomSampler(seed=0))
    drawn = []
    for _ in range(12):
        trial = study.ask()
        drawn.append(suggest(trial, space))
        study.tell(trial, 0.0)
    for point, trial in zip(drawn, study.trials):
        assert 1e-4 <= point["model.optimizer.init_args.lr"] <= 1e-2
        assert point["model.dropout"] in (0.0, 0.25, 0.5)
        assert point["trainer.max_epochs"] in (2, 4, 6)
        assert point["data.tabular.volumes"] in ([], ["Left-Hippocampus", "Right-Hippocampus"])
        assert point["model.image_encoder"]["init_args"]["widths"] in ([4, 8], [8, 16])
        assert values(trial.params, space) == point  # the stored JSON text decodes to the same option value
    assert isinstance(study.trials[0].params["data.tabular.volumes"], str)  # readable in the dashboard
    assert len({str(p["data.tabular.volumes"]) for p in drawn}) == 2


@pytest.mark.parametrize(
    ("text", "message"),
    [
        ("model.dropout: {low: 0.5, high: 0.1}\n", "low 0.5 must be below high 0.1"),
        ("model.optimizer.init_args.lr: {low: 0, high: 1, log: true}\n", "log range needs low > 0"),
        ("model.dropout: {low: 0.0, high: 1.0, spread: 2}\n", r"unknown key\(s\) \['spread'\]"),
        ("model.dropout: {type: normal, low: 0.0, high: 1.0}\n", "type 'normal' is not one of"),
        ("model.dropout: {choices: []}\n", "choices must be a non-empty list"),
        ("model.dropout: {choices: [0.1, 0.1]}\n", "a choice is listed twice"),
        ("model.dropout: {low: a, high: 1.0}\n", "low must be a number"),
        ("dropout: {low: 0.0, high: 1.0}\n", "is not a model.\\*, data.\\* or trainer.\\* option"),
        ("data.split.seed: {low: 0, high: 9}\n", "not searchable"),
        ("model.dropout: 0.5\n", "expected a mapping"),
        ("[1, 2]\n", "maps dotted options"),
        ("model.dropout: {low: 0.0\n", "cannot read the search space"),
    ],
)
def test_a_bad_space_is_one_line_naming_the_file_and_option(tmp_path, text, message):
    path = _space(tmp_path, text)
    with pytest.raises(SearchSpaceError, match=message) as refused:
        load_space(path)
    assert str(path) in str(refused.value) and "\n" not in str(refused.value)


def test_a_missing_space_file_is_one_line(tmp_path):
    with pytest.raises(SearchSpaceError, match="nowhere.yaml: cannot read the search space"):
        load_space(tmp_path / "nowhere.yaml")


@pytest.mark.parametrize("space", sorted((CONFIG_DIR / "search").glob("*.yaml")), ids=lambda path: path.name)
def test_every_packaged_space_is_made_of_fit_options_at_both_ends(space):
    dims = load_space(space)
    assert dims
    _check_space(Run([CONFIG_DIR / "synthetic.yaml"]), dims)  # raises on a misspelt option or a refused value
