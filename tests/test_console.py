"""What a user sees on the console: the story of a run, and one line for a mistyped option."""

from __future__ import annotations

import os
import subprocess
import sys
from pathlib import Path

import pandas as pd
import pytest

from tests.helpers import tiny_args

REPO = Path(__file__).resolve().parents[1]


def _run(*args: str, cwd: Path) -> subprocess.CompletedProcess[str]:
    env = {**os.environ, "PYTHONPATH": str(REPO)}
    return subprocess.run(
        [sys.executable, "-m", "adni_lightning", *args], cwd=cwd, capture_output=True, text=True, env=env
    )


def test_fit_then_predict_tell_the_story(cohort, tmp_path):
    run = tmp_path / "run"
    fit = _run(*tiny_args("fit", run, cohort, "--trainer.max_epochs", "2"), cwd=tmp_path)
    assert fit.returncode == 0, fit.stderr
    console = fit.stdout + fit.stderr
    assert "subject-level split (images per class; subjects):" in console
    split = pd.read_csv(run / "split.csv")
    assert f"'train': {split.loc[split['split'] == 'train', 'subject'].nunique()}" in console
    best = next(run.glob("checkpoints/best-*.ckpt"))
    assert f"): {best}" in console and "best checkpoint (val/bacc" in console
    assert "resume:   python -m adni_lightning fit" in console
    predict = _run(*tiny_args("predict", run, cohort, "--ckpt_path", str(best)), cwd=tmp_path)
    assert predict.returncode == 0, predict.stderr
    assert f"predict: wrote {run / 'predictions.csv'} and {run / 'predictions_by_subject.csv'}" in predict.stdout


@pytest.mark.parametrize(
    ("option", "suggestion"),
    [
        ("--trainer.max_epoch", "--trainer.max_epochs"),  # a prefix: argparse would have taken it
        ("--trainer.max_epocs", "--trainer.max_epochs"),
        ("--data.loader.batch_sise", "--data.loader.batch_size"),
        ("--model.image_encoder.init_args.widht", "--model.image_encoder.init_args.widths"),
    ],
)
def test_an_unknown_option_is_one_line_naming_the_closest(option, suggestion, tmp_path):
    done = _run("fit", option, "3", cwd=tmp_path)
    assert done.returncode == 2
    assert done.stderr.splitlines() == [
        f"python -m adni_lightning fit: error: unknown option {option}; did you mean {suggestion}? (see --help)"
    ]
    assert not any(tmp_path.iterdir())  # nothing generated, nothing written
