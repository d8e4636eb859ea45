"""``interpret --out``: the command writes only into a folder of its own, never over a user's files."""

from __future__ import annotations

import pandas as pd
import pytest

from adni_lightning.atomic import WriteError
from adni_lightning.commands.interpret import MARKER, InterpretError
from adni_lightning.main import main
from tests.interpret.test_command import interpret_args

pytest.importorskip("captum")

QUICK = ("--max_images", "2", "--ig_steps", "0", "--bootstrap", "10")


def test_a_folder_of_the_users_files_is_refused_and_left_alone(run, tmp_path):
    out = tmp_path / "figures"
    out.mkdir()
    (out / "images.csv").write_text("my own table\n")
    (out / "notes.md").write_text("mine\n")
    with pytest.raises(InterpretError) as refused:
        main(interpret_args(run, *QUICK, "--out", str(out)))
    assert str(refused.value) == (
        f"--out {out} holds files that interpret did not write (images.csv, notes.md): pass a new or empty folder"
    )
    assert sorted(p.name for p in out.iterdir()) == ["images.csv", "notes.md"]
    assert (out / "images.csv").read_text() == "my own table\n"


def test_its_own_folder_is_marked_and_may_be_written_again(run, tmp_path):
    out = tmp_path / "new" / "interpret"
    main(interpret_args(run, *QUICK, "--out", str(out)))
    assert (out / MARKER).is_file()
    first = pd.read_csv(out / "images.csv")
    main(interpret_args(run, *QUICK, "--out", str(out)))  # its own earlier output: replaced
    again = pd.read_csv(out / "images.csv")
    pd.testing.assert_frame_equal(again.drop(columns="occlusion_s"), first.drop(columns="occlusion_s"))
    assert not [p.name for p in out.rglob("*.tmp")]


def test_an_out_that_is_a_file_is_one_line(run, tmp_path):
    taken = tmp_path / "images.csv"
    taken.write_text("my own table\n")
    with pytest.raises(WriteError) as refused:
        main(interpret_args(run, *QUICK, "--out", str(taken)))
    assert str(refused.value) == f"--out {taken} is a file, not a folder: pass a folder (it is created if missing)"
    assert taken.read_text() == "my own table\n"
