"""The cross-validation report: its files, and that its text carries the numbers of the metric functions."""

from __future__ import annotations

from pathlib import Path

import numpy as np
import pandas as pd
import pytest
from matplotlib.image import imread

from adni_lightning.evaluation import (
    bootstrap_ci,
    first_visits,
    fold_table,
    paired_difference,
    subject_level,
    write_cv_report,
)
from tests.evaluation.test_metrics import CLASSES, predictions_frame

N = 40  # resamples: enough to exercise the code, few enough to keep the tests fast


def interval(table: pd.DataFrame, metric: str, **where: str) -> str:
    """How the report writes ``metric`` of the row matching ``where``."""
    row = table.loc[(table["metric"] == metric) & table[list(where)].eq(pd.Series(where)).all(axis=1)].iloc[0]
    text = f"{row['estimate']:.3f} [{row['ci_low']:.3f}, {row['ci_high']:.3f}]"
    return text if row["n_valid"] == N else f"{text} ({row['n_valid']}/{N} resamples)"


@pytest.fixture(scope="module")
def frame() -> pd.DataFrame:
    """Folds 2 and 4 not finished."""
    full = predictions_frame(30)
    return full[~full["fold"].isin([2, 4])].reset_index(drop=True)


@pytest.fixture(scope="module")
def report(frame: pd.DataFrame, tmp_path_factory: pytest.TempPathFactory) -> dict[str, Path]:
    return write_cv_report(
        tmp_path_factory.mktemp("report"),
        frame,
        CLASSES,
        reference_model="baseline",
        missing_folds=(2, 4),
        notes=["checkpoints: lowest validation loss per fold"],
        n_resamples=N,
    )


def test_files(report: dict[str, Path], frame: pd.DataFrame) -> None:
    assert {p.name for p in report.values()} == {
        "cv_metrics.csv",
        "oof_predictions.csv",
        "cv_report.md",
        "cv_report.png",
    }
    written = pd.read_csv(report["metrics"], keep_default_na=False)
    assert written["fold"].tolist() == ["0", "1", "2", "3", "4", "mean", "sd"] * 2  # missing folds 2, 4 marked
    summary_note = "over the finished folds only: folds 2, 4 are not finished"
    assert written["note"].tolist() == ["", "", "not finished", "", "not finished", summary_note, summary_note] * 2
    assert (written.loc[written["note"] == "not finished", ["n_images", "bacc"]] == "").all().all()
    finished = pd.read_csv(report["metrics"]).query("note != 'not finished'")
    expected = fold_table(frame, CLASSES)
    assert finished["fold"].astype(str).tolist() == expected["fold"].astype(str).tolist()
    np.testing.assert_allclose(finished[["bacc", "auroc", "sens_AD"]], expected[["bacc", "auroc", "sens_AD"]])
    pd.testing.assert_frame_equal(pd.read_csv(report["predictions"]), frame)
    image = imread(report["figure"])
    assert image.shape[1] > 1.5 * image.shape[0]  # two panels side by side
    assert image[..., :3].std() > 0.1  # not blank


def test_report_text_carries_the_numbers(report: dict[str, Path], frame: pd.DataFrame) -> None:
    text = report["report"].read_text(encoding="utf-8")
    assert "> **folds 2, 4 are not finished: these figures cover folds 0, 1, 3 only.**" in text
    assert f"{N}-resample percentile bootstrap intervals over subjects" in text
    assert "- checkpoints: lowest validation loss per fold" in text
    cnn = frame[frame["model"] == "cnn"]
    counts = cnn["group"].value_counts()
    assert (
        f"| `cnn` | 0, 1, 3 | {len(cnn)} | {cnn['subject'].nunique()} | {cnn['first_visit'].sum()} | "
        f"{counts['CN']} / {counts['MCI']} / {counts['AD']} |"
    ) in text

    folds = fold_table(frame, CLASSES).query("model == 'cnn'").set_index("fold")
    assert f"| {folds.at['mean', 'bacc']:.3f} ± {folds.at['sd', 'bacc']:.3f} | " in text
    for level in (frame, subject_level(frame, CLASSES), first_visits(frame)):
        assert interval(bootstrap_ci(level, CLASSES, N), "bacc", model="cnn") in text
    per_class_row = "| AD | " + " | ".join(
        interval(bootstrap_ci(frame, CLASSES, N), f"{kind}_AD", model="baseline") for kind in ("sens", "spec")
    )
    assert per_class_row in text

    assert "## Paired differences vs `baseline`" in text
    for level, name in ((frame, "image"), (subject_level(frame, CLASSES), "subject")):
        diff = paired_difference(level, "cnn", "baseline", CLASSES, n_resamples=N)
        assert (f"| `cnn` − `baseline` | {name} | {interval(diff, 'bacc')} | {interval(diff, 'auroc')} |") in text


def test_paired_section_uses_the_shared_images(frame: pd.DataFrame, tmp_path: Path) -> None:
    partial = frame[(frame["model"] == "baseline") | (frame["fold"] != 3)]  # cnn lacks fold 3
    paths = write_cv_report(tmp_path, partial, CLASSES, reference_model="baseline", n_resamples=N)
    text = paths["report"].read_text(encoding="utf-8")
    shared = partial[partial["fold"] != 3]
    assert f"compared on the {(shared['model'] == 'cnn').sum()} images both predicted" in text
    diff = paired_difference(shared, "cnn", "baseline", CLASSES, n_resamples=N)
    assert f"| `cnn` − `baseline` | image | {interval(diff, 'bacc')} |" in text
    assert "not finished" not in text


def test_reference_model(frame: pd.DataFrame, tmp_path: Path) -> None:
    with pytest.raises(ValueError, match="'cbb' is not among the models"):
        write_cv_report(tmp_path, frame, CLASSES, reference_model="cbb", n_resamples=N)
    cnn_only = frame[frame["model"] == "cnn"]
    paths = write_cv_report(tmp_path, cnn_only, CLASSES, reference_model="cnn", n_resamples=N)
    text = paths["report"].read_text(encoding="utf-8")
    assert "## Model `cnn`" in text and "baseline" not in text and "Paired" not in text
