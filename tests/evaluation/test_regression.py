"""Regression (score) evaluation: metrics against sklearn, weighted = repeated rows, the subject bootstrap, paired
differences, the subject level, the fold table and the regression report."""

from __future__ import annotations

import numpy as np
import pandas as pd
import pytest
from matplotlib.image import imread
from scipy.stats import pearsonr
from sklearn.metrics import mean_absolute_error, r2_score, root_mean_squared_error

from adni_lightning.evaluation import (
    bootstrap_ci,
    bootstrap_samples,
    fold_table,
    frame_metrics,
    paired_difference,
    subject_level,
    write_cv_report,
)
from adni_lightning.evaluation.metrics import (
    REGRESSION,
    is_regression,
    paired_parts,
    regression_metrics,
    weighted_regression_metrics,
)

N = 200  # resamples


def sklearn_metrics(y: np.ndarray, p: np.ndarray) -> dict[str, float]:
    return {
        "mae": mean_absolute_error(y, p),
        "rmse": root_mean_squared_error(y, p),
        "r2": r2_score(y, p),
        "r": pearsonr(y, p).statistic,
    }


def score_frame(n_subjects: int = 40, seed: int = 0, noise: dict[str, float] | None = None) -> pd.DataFrame:
    """Synthetic OOF predictions of an age-like score: 1–3 visits per subject, a subject-level offset per model
    (so a subject's images are correlated), ``cnn`` closer to the truth than ``baseline``.
    """
    noise = noise or {"cnn": 2.0, "baseline": 5.0}
    rng = np.random.default_rng(seed)
    rows = []
    for s in range(n_subjects):
        age = rng.normal(74, 7)
        visits = ["sc", "m06", "m12"][: int(rng.integers(1, 4))]
        offsets = {model: rng.normal(0, sd) for model, sd in noise.items()}
        for i, visit in enumerate(visits):
            target = age + 0.5 * i
            for model, sd in noise.items():
                rows.append(
                    {
                        "image_id": f"S{s:03d}_{visit}",
                        "subject": f"S{s:03d}",
                        "group": "CN",
                        "visit": visit,
                        "first_visit": i == 0,
                        "fold": s % 4,
                        "model": model,
                        "target": target,
                        "prediction": target + offsets[model] + rng.normal(0, sd / 3),
                    }
                )
    return pd.DataFrame(rows)


def test_metrics_equal_sklearn_and_scipy() -> None:
    rng = np.random.default_rng(1)
    for n in (2, 3, 17, 500):
        y = rng.normal(70, 8, n)
        p = 0.6 * y + rng.normal(28, 4, n)
        expected = sklearn_metrics(y, p)
        for got in (
            regression_metrics(y, p),
            {k: v[0] for k, v in weighted_regression_metrics(y, p, [np.ones(n)]).items()},
        ):
            assert got.keys() == expected.keys()
            for name in REGRESSION:
                assert got[name] == pytest.approx(expected[name], rel=1e-12, abs=1e-12), (n, name)


def test_a_weight_counts_an_image_that_many_times() -> None:
    rng = np.random.default_rng(2)
    y, p = rng.normal(25, 3, 30), rng.normal(25, 3, 30)
    weights = rng.integers(0, 4, size=(6, 30))
    vectorised = weighted_regression_metrics(y, p, weights)
    for row, w in enumerate(weights):
        repeated = sklearn_metrics(np.repeat(y, w), np.repeat(p, w))
        weighted = regression_metrics(y, p, sample_weight=w)
        for name in REGRESSION:
            assert weighted[name] == pytest.approx(repeated[name], rel=1e-12)
            assert vectorised[name][row] == pytest.approx(repeated[name], rel=1e-12)


def test_undefined_metrics_are_nan_without_warnings(recwarn: pytest.WarningsRecorder) -> None:
    assert regression_metrics([28.0, 28.0], [27.0, 29.0]) == pytest.approx(
        {"mae": 1.0, "rmse": 1.0, "r2": np.nan, "r": np.nan}, nan_ok=True
    )
    assert np.isnan(regression_metrics([27.0, 29.0], [28.0, 28.0])["r"])
    assert regression_metrics([27.0, 29.0], [28.0, 28.0])["r2"] == pytest.approx(0.0)
    one = regression_metrics([30.0], [27.0])
    assert (one["mae"], one["rmse"], np.isnan(one["r2"]), np.isnan(one["r"])) == (3.0, 3.0, True, True)
    drawn_once = weighted_regression_metrics(np.array([1.0, 2.0, 3.0]), np.array([1.5, 2.0, 2.0]), [[0, 2, 0]])
    assert np.isnan(drawn_once["r2"][0]) and np.isnan(drawn_once["r"][0]) and drawn_once["mae"][0] == 0.0
    assert not recwarn.list
    with pytest.raises(ValueError, match="must be finite"):
        regression_metrics([1.0, np.nan], [1.0, 2.0])


def test_a_frame_is_regression_by_its_columns() -> None:
    frame = score_frame(4)
    assert is_regression(frame)
    assert not is_regression(frame.assign(p_CN=0.5))
    assert not is_regression(frame.drop(columns="prediction"))
    cnn = frame[frame["model"] == "cnn"]
    assert frame_metrics(cnn, ()) == pytest.approx(
        sklearn_metrics(cnn["target"].to_numpy(), cnn["prediction"].to_numpy()), rel=1e-12
    )


def naive_bootstrap(frame: pd.DataFrame, n_resamples: int, seed: int) -> pd.DataFrame:
    """The definition, written plainly: draw sorted subjects with replacement, concatenate all their images."""
    subjects = np.array(sorted(frame["subject"].unique()))
    rows_of = [np.flatnonzero(frame["subject"].to_numpy() == s) for s in subjects]
    y, p = frame["target"].to_numpy(), frame["prediction"].to_numpy()
    draws = np.random.default_rng(seed).integers(0, len(subjects), size=(n_resamples, len(subjects)))
    resamples = (np.concatenate([rows_of[d] for d in draw]) for draw in draws)
    return pd.DataFrame([sklearn_metrics(y[idx], p[idx]) for idx in resamples])


def test_bootstrap_draws_subjects_with_all_their_images() -> None:
    frame = score_frame(25)
    cnn = frame[frame["model"] == "cnn"].reset_index(drop=True)
    samples = bootstrap_samples(cnn, (), n_resamples=300, seed=5)  # two blocks of resamples
    assert list(samples.columns) == list(REGRESSION) and len(samples) == 300
    pd.testing.assert_frame_equal(samples, naive_bootstrap(cnn, 300, 5), rtol=1e-10)
    assert list(bootstrap_samples(cnn, (), 3, metrics=["r"]).columns) == ["r"]
    with pytest.raises(ValueError, match=r"unknown metrics \['bacc'\]"):
        bootstrap_samples(cnn, (), 3, metrics=["bacc"])


def test_intervals_hold_the_estimate_and_a_better_model_has_a_negative_mae_difference() -> None:
    frame = score_frame(60)
    ci = bootstrap_ci(frame, (), n_resamples=N).set_index(["model", "metric"])
    assert set(ci.index) == {(m, name) for m in ("baseline", "cnn") for name in REGRESSION}
    assert (ci["ci_low"] <= ci["estimate"]).all() and (ci["estimate"] <= ci["ci_high"]).all()
    assert (ci["n_valid"] == N).all()
    difference = paired_difference(frame, "cnn", "baseline", (), REGRESSION, n_resamples=N).set_index("metric")
    for name in REGRESSION:
        expected = ci.loc[("cnn", name), "estimate"] - ci.loc[("baseline", name), "estimate"]
        assert difference.loc[name, "estimate"] == pytest.approx(expected)
    assert difference.loc["mae", "ci_high"] < 0 and difference.loc["rmse", "ci_high"] < 0  # cnn errs less
    assert difference.loc["r2", "ci_low"] > 0  # and explains more
    itself = paired_difference(frame, "cnn", "cnn", (), REGRESSION, n_resamples=20)
    assert (itself[["estimate", "ci_low", "ci_high"]] == 0).all().all()


def test_pairs_need_the_same_targets_to_float32_precision() -> None:
    frame = score_frame(5)
    as_float32 = frame["target"].astype(np.float32).map(lambda t: float(f"{t:.6f}"))
    rounded = frame.assign(target=frame["target"].where(frame["model"] == "baseline", as_float32))
    a, b = paired_parts(rounded, "cnn", "baseline")
    assert len(a) == len(b) == len(frame) // 2
    shifted = frame.assign(target=frame["target"] + (frame["model"] == "cnn") * 1.0)
    with pytest.raises(ValueError, match="'cnn' and 'baseline' disagree on the target of some images"):
        paired_parts(shifted, "cnn", "baseline")


def test_subject_level_averages_prediction_and_target() -> None:
    frame = pd.DataFrame(
        {
            "image_id": ["a1", "a2", "b1"],
            "subject": ["A", "A", "B"],
            "group": ["MCI", "AD", "CN"],
            "first_visit": [False, True, True],
            "fold": [0, 0, 1],
            "model": "cnn",
            "target": [20.0, 24.0, 29.0],
            "prediction": [22.0, 23.0, 27.0],
        }
    )
    subjects = subject_level(frame, ())
    assert subjects.to_dict("records") == [
        {
            "image_id": "A",
            "subject": "A",
            "group": "AD",
            "first_visit": True,
            "fold": 0,
            "model": "cnn",
            "n_images": 2,
            "target": 22.0,
            "prediction": 22.5,
        },
        {
            "image_id": "B",
            "subject": "B",
            "group": "CN",
            "first_visit": True,
            "fold": 1,
            "model": "cnn",
            "n_images": 1,
            "target": 29.0,
            "prediction": 27.0,
        },
    ]
    assert is_regression(subjects)


def test_fold_table() -> None:
    frame = score_frame(20)
    table = fold_table(frame, ())
    cnn = table[table["model"] == "cnn"].set_index("fold")
    assert list(cnn.index) == [0, 1, 2, 3, "mean", "sd"]
    per_fold = [frame_metrics(part, ())["mae"] for _, part in frame[frame["model"] == "cnn"].groupby("fold")]
    assert cnn.loc[[0, 1, 2, 3], "mae"].tolist() == pytest.approx(per_fold)
    assert cnn.loc["mean", "mae"] == pytest.approx(np.mean(per_fold))
    assert cnn.loc["sd", "mae"] == pytest.approx(np.std(per_fold, ddof=1))
    assert cnn.loc[0, "n_subjects"] == 5


@pytest.fixture(scope="module")
def regression_report(tmp_path_factory: pytest.TempPathFactory) -> tuple[pd.DataFrame, dict]:
    frame = score_frame(40)
    frame = frame[frame["fold"] != 3].reset_index(drop=True)
    paths = write_cv_report(
        tmp_path_factory.mktemp("regression"),
        frame,
        (),
        reference_model="baseline",
        missing_folds=(3,),
        notes=["a note"],
        n_resamples=N,
        scaled_model="cnn",
        target="Age",
    )
    return frame, paths


def test_regression_report_files(regression_report: tuple[pd.DataFrame, dict]) -> None:
    frame, paths = regression_report
    assert sorted(paths) == ["metrics", "predictions", "report", "scatter"]
    out = paths["report"].parent
    assert sorted(p.name for p in out.iterdir()) == [
        "cv_metrics.csv",
        "cv_report.md",
        "cv_scatter.png",
        "oof_predictions.csv",
    ]
    metrics = pd.read_csv(paths["metrics"])
    assert list(metrics.columns) == ["model", "fold", "n_images", "n_subjects", *REGRESSION, "note"]
    assert metrics["fold"].astype(str).tolist() == ["0", "1", "2", "3", "mean", "sd"] * 2
    expected = fold_table(frame, ())
    finished = metrics[metrics["note"].isna() | (metrics["note"] == "")]
    assert finished["mae"].tolist() == pytest.approx(
        expected[expected["fold"].astype(str).str.isdigit()]["mae"].tolist()
    )
    assert metrics.loc[metrics["fold"].astype(str) == "3", "note"].eq("not finished").all()
    image = imread(paths["scatter"])
    assert image.shape[0] > 300 and image.shape[1] > 600  # two panels


def test_regression_report_text_carries_the_numbers(regression_report: tuple[pd.DataFrame, dict]) -> None:
    frame, paths = regression_report
    text = paths["report"].read_text()
    assert "> **fold 3 is not finished: these figures cover folds 0, 1, 2 only.**" in text
    ci = bootstrap_ci(frame, (), n_resamples=N).set_index(["model", "metric"])
    for model in ("cnn", "baseline"):
        assert f"## Model `{model}`" in text
        row = ci.loc[(model, "mae")]
        assert f"{row['estimate']:.3f} [{row['ci_low']:.3f}, {row['ci_high']:.3f}]" in text
    difference = paired_difference(frame, "cnn", "baseline", (), ["mae"], n_resamples=N).iloc[0]
    cell = f"{difference['estimate']:.3f} [{difference['ci_low']:.3f}, {difference['ci_high']:.3f}]"
    assert f"| `cnn` − `baseline` | image | {cell} |" in text
    assert difference["estimate"] < 0 and text.count("| `cnn` − `baseline` |") == 3
    assert "Δ MAE and Δ RMSE below 0: the model errs less than the reference (better)" in text
    assert "| Age: mean ± sd (range) |" in text
    assert "- No calibration section and no temperature: they concern class probabilities" in text
    assert "Calibration" not in text and "temperature.json" not in text
    assert "- a note" in text
