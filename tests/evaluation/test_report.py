"""The cross-validation report: its files, and that its text carries the numbers of the metric functions."""

from __future__ import annotations

import json
from pathlib import Path

import numpy as np
import pandas as pd
import pytest
from matplotlib.image import imread

from adni_lightning.evaluation import (
    bootstrap_ci,
    first_visits,
    fold_table,
    frame_metrics,
    paired_difference,
    subject_level,
    write_cv_report,
)
from adni_lightning.evaluation.calibration import (
    apply_temperatures,
    brier_score,
    calibration_metrics,
    cross_fitted_temperatures,
    expected_calibration_error,
    fit_temperature,
    load_temperature,
    reliability_table,
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
        scaled_model="cnn",
    )


def test_files(report: dict[str, Path], frame: pd.DataFrame) -> None:
    assert {p.name for p in report.values()} == {
        "cv_metrics.csv",
        "oof_predictions.csv",
        "cv_report.md",
        "cv_report.png",
        "cv_calibration.csv",
        "cv_reliability.csv",
        "cv_reliability.png",
        "calibration.json",
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


def _arrays(part: pd.DataFrame) -> tuple[np.ndarray, np.ndarray]:
    truth = part["group"].map({c: i for i, c in enumerate(CLASSES)}).to_numpy()
    return truth, part[["p_CN", "p_MCI", "p_AD"]].to_numpy()


def test_calibration_figures_are_calibration_pys_on_the_pooled_oof_frame(
    report: dict[str, Path], frame: pd.DataFrame
) -> None:
    table = pd.read_csv(report["calibration"])
    assert set(table["note"]) == {"over the finished folds only: folds 2, 4 are not finished"}
    text = report["report"].read_text(encoding="utf-8")
    cnn = frame[frame["model"] == "cnn"]
    y, proba = _arrays(cnn)
    temperatures = cross_fitted_temperatures(y, proba, cnn["fold"].to_numpy())
    scaled = apply_temperatures(proba, cnn["fold"].to_numpy(), temperatures)
    expected = {
        ("cnn", "none"): calibration_metrics(y, proba),
        ("baseline", "none"): calibration_metrics(*_arrays(frame[frame["model"] == "baseline"])),
        ("cnn", "temperature (cross-fitted)"): calibration_metrics(y, scaled),
    }
    assert expected["cnn", "none"]["ece"] == expected_calibration_error(y, proba)
    assert expected["cnn", "none"]["brier"] == brier_score(y, proba)
    for (model, scaling), values in expected.items():
        rows = table[(table["model"] == model) & (table["scaling"] == scaling)].set_index("metric")
        assert rows["estimate"].to_dict() == pytest.approx(values, rel=1e-12)
        assert (rows["ci_low"] <= rows["ci_high"]).all() and (rows["n_valid"] == N).all()
        assert f"| `{model}` | {scaling} | {interval(rows.reset_index(), 'ece')} |" in text
    change = table[table["scaling"] == "temperature (cross-fitted) − none"].set_index("metric")["estimate"]
    after, before = expected["cnn", "temperature (cross-fitted)"], expected["cnn", "none"]
    assert change["nll"] == pytest.approx(after["nll"] - before["nll"])
    per_fold = ", ".join(f"fold {k}: {t:.3f}" for k, t in temperatures.items())
    assert f"so no fold chooses its own ({per_fold})" in text

    saved = json.loads(report["temperature"].read_text())
    assert load_temperature(report["temperature"], CLASSES) == saved["temperature"] == fit_temperature(y, proba)
    assert saved["cross_fitted"] == {str(k): t for k, t in temperatures.items()}
    assert saved["fitted_on"] == "cv out-of-fold predictions of cnn, folds 0, 1, 3" and saved["n_images"] == len(cnn)
    assert (
        f"For new cohorts: T = {saved['temperature']:.3f}, fitted on all out-of-fold predictions of `cnn` (the "
        "finished folds only: folds 2, 4 are not finished), is saved in `calibration.json`"
    ) in text

    reliability = pd.read_csv(report["reliability"])
    ours = reliability[(reliability["model"] == "cnn") & (reliability["scaling"] == "none")]
    pd.testing.assert_frame_equal(
        ours.drop(columns=["model", "scaling"]).reset_index(drop=True), reliability_table(y, proba, CLASSES)
    )
    image = imread(report["reliability_figure"])
    assert image.shape[1] > 2.5 * image.shape[0] and image[..., :3].std() > 0.1  # three panels, not blank


def test_temperature_scaling_leaves_every_argmax_metric_unchanged(frame: pd.DataFrame) -> None:
    cnn = frame[frame["model"] == "cnn"]
    scaled = cnn.copy()
    columns = ["p_CN", "p_MCI", "p_AD"]
    scaled[columns] = apply_temperatures(cnn[columns].to_numpy(), cnn["fold"].to_numpy(), {0: 0.5, 1: 2.0, 3: 3.0})
    assert not np.allclose(scaled[columns], cnn[columns])
    ours, theirs = frame_metrics(scaled, CLASSES), frame_metrics(cnn, CLASSES)
    assert ours.pop("auroc") != theirs.pop("auroc")  # p(class) of two images can swap: AUROC is not argmax-based
    assert ours == pytest.approx(theirs, rel=0, abs=0, nan_ok=True)


def test_calibration_without_a_scaled_model_or_with_one_fold(frame: pd.DataFrame, tmp_path: Path) -> None:
    paths = write_cv_report(tmp_path / "plain", frame, CLASSES, n_resamples=N)
    assert "temperature" not in paths and not (tmp_path / "plain" / "calibration.json").exists()
    table = pd.read_csv(paths["calibration"], keep_default_na=False)
    assert set(table["scaling"]) == {"none"} and set(table["model"]) == {"cnn", "baseline"}
    assert set(table["note"]) == {""}
    one_fold = frame[frame["fold"] == 0]
    paths = write_cv_report(tmp_path / "one", one_fold, CLASSES, n_resamples=N, scaled_model="cnn")
    text = paths["report"].read_text(encoding="utf-8")
    assert "Temperature scaling of `cnn` needs two finished folds to be cross-fitted: not shown." in text
    assert set(pd.read_csv(paths["calibration"])["scaling"]) == {"none"}
    y, proba = _arrays(one_fold[one_fold["model"] == "cnn"])
    assert json.loads(paths["temperature"].read_text())["temperature"] == fit_temperature(y, proba)
