"""A key that moved into a group, or one given flat, is answered with its grouped name in one line."""

from __future__ import annotations

import pytest

from adni_lightning.main import main

PROG = "python -m adni_lightning fit"


@pytest.mark.parametrize(
    ("option", "suggestion"),
    [
        ("--data.image_size", "--data.preprocessing.image_size"),  # a key of the data class_path group
        ("--data.batch_size", "--data.loader.batch_size"),
        ("--model.lr", "--model.optimizer.init_args.lr"),  # a key of the optimizer the model's default names
        ("--lr", "--model.optimizer.init_args.lr"),  # no group at all
        ("--data.seed", "--data.split.seed or --data.cohort.seed"),  # both owners, shorter first
        ("--model.image_encoder.init_args.depth", "--model.image_encoder.init_args.widths"),  # a class_path group
    ],
)
def test_a_moved_or_flat_key_names_its_grouped_option(option, suggestion, tmp_path, monkeypatch, capsys):
    monkeypatch.chdir(tmp_path)
    with pytest.raises(SystemExit) as exit_:
        main(["fit", option, "3"])
    assert exit_.value.code == 2
    assert capsys.readouterr().err.splitlines() == [
        f"{PROG}: error: unknown option {option}; did you mean {suggestion}? (see --help)"
    ]
    assert not any(tmp_path.iterdir())  # nothing generated, nothing written


def test_an_option_of_a_class_path_group_outside_the_default_config(tmp_path, monkeypatch, capsys):
    """The class named on the command line, not the default, decides what the group holds."""
    monkeypatch.chdir(tmp_path)
    with pytest.raises(SystemExit) as exit_:
        main(["fit", "--model.optimizer", "torch.optim.SGD", "--model.optimizer.init_args.nesterov_", "true"])
    assert exit_.value.code == 2
    assert capsys.readouterr().err.splitlines() == [
        f"{PROG}: error: unknown option --model.optimizer.init_args.nesterov_; "
        "did you mean --model.optimizer.init_args.nesterov? (see --help)"
    ]
