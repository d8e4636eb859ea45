"""Metrics, subject aggregation, subject bootstrap, paired differences and the fold table."""

from __future__ import annotations

import warnings

import numpy as np
import pandas as pd
import pytest
from sklearn.metrics import (
    balanced_accuracy_score,
    f1_score,
    matthews_corrcoef,
    roc_auc_score,
)

from adni_lightning.evaluation import (
    bootstrap_ci,
    bootstrap_samples,
    classification_metrics,
    confusion_metrics,
    first_visits,
    fold_table,
    frame_metrics,
    metric_names,
    paired_difference,
    subject_level,
)

CLASSES = ("CN", "MCI", "AD")
PROBS = [f"p_{c}" for c in CLASSES]


def predictions_frame(
    n_subjects: int = 30,
    models: tuple[str, ...] = ("cnn", "baseline"),
    seed: int = 0,
    n_folds: int = 5,
) -> pd.DataFrame:
    """Synthetic OOF predictions: 1–3 visits per subject; a model leans, per subject, to one class for all visits
    (right more often for ``cnn``), so that a subject's images are correlated as real visits are."""
    rng = np.random.default_rng(seed)
    rows = []
    for s in range(n_subjects):
        group = int(rng.integers(0, 3))
        visits = ["sc", "m06", "m12"][: int(rng.integers(1, 4))]
        for model in models:
            right = rng.random() < (0.8 if model == "cnn" else 0.5)
            leaning = group if right else int(rng.integers(0, 3))
            for i, visit in enumerate(visits):
                alpha = np.ones(3)
                alpha[leaning] += 3.0
                rows.append(
                    {
                        "image_id": f"S{s:03d}_{visit}",
                        "subject": f"S{s:03d}",
                        "group": CLASSES[group],
                        "visit": visit,
                        "first_visit": i == 0,
                        "fold": s % n_folds,
                        "model": model,
                        **dict(zip(PROBS, rng.dirichlet(alpha))),
                    }
                )
    return pd.DataFrame(rows)


def one_hotish(pred: list[int]) -> np.ndarray:
    """Probability 0.6 on the predicted class, 0.2 on the others."""
    proba = np.full((len(pred), 3), 0.2)
    proba[np.arange(len(pred)), pred] = 0.6
    return proba


def naive_bootstrap(frame: pd.DataFrame, n_resamples: int, seed: int) -> pd.DataFrame:
    """The definition, written plainly: draw sorted subjects with replacement, concatenate all their images."""
    subjects = np.array(sorted(frame["subject"].unique()))
    rows_of = [np.flatnonzero(frame["subject"].to_numpy() == s) for s in subjects]
    y = frame["group"].map(CLASSES.index).to_numpy()
    proba = frame[PROBS].to_numpy()
    draws = np.random.default_rng(seed).integers(0, len(subjects), size=(n_resamples, len(subjects)))
    resamples = (np.concatenate([rows_of[d] for d in draw]) for draw in draws)
    return pd.DataFrame([classification_metrics(y[idx], proba[idx], CLASSES) for idx in resamples])


def test_hand_computed_example() -> None:
    y = [0, 0, 0, 1, 1, 2, 2, 2, 2]
    pred = [0, 0, 1, 1, 2, 2, 2, 2, 1]  # confusion rows CN [2 1 0], MCI [0 1 1], AD [0 1 3]
    m = classification_metrics(np.array(y), one_hotish(pred), CLASSES)
    expected = {
        "sens_CN": 2 / 3,
        "sens_MCI": 1 / 2,
        "sens_AD": 3 / 4,
        "spec_CN": 6 / 6,
        "spec_MCI": 5 / 7,
        "spec_AD": 4 / 5,
        "ppv_CN": 2 / 2,
        "ppv_MCI": 1 / 3,
        "ppv_AD": 3 / 4,
        "npv_CN": 6 / 7,
        "npv_MCI": 5 / 6,
        "npv_AD": 4 / 5,
        "acc": 6 / 9,
        "bacc": (2 / 3 + 1 / 2 + 3 / 4) / 3,
        "f1": (4 / 5 + 2 / 5 + 3 / 4) / 3,
        "mcc": 26 / 52,  # (6·9 − 3·2 − 2·3 − 4·4) / sqrt((81 − 29)(81 − 29))
        # One-vs-rest Mann–Whitney counts (ties ½): CN 15/18, MCI 8.5/14, AD 15.5/20.
        "auroc": (15 / 18 + 8.5 / 14 + 15.5 / 20) / 3,
    }
    assert list(m) == metric_names(CLASSES)
    assert m == pytest.approx(expected)


def test_missing_class_gives_nan_auroc_without_warnings() -> None:
    y = np.array([0, 0, 1, 1, 1])  # no AD
    pred = [0, 2, 1, 1, 0]  # yet AD is predicted once
    with warnings.catch_warnings():
        warnings.simplefilter("error")
        m = classification_metrics(y, one_hotish(pred), CLASSES)
        single = classification_metrics(np.zeros(3, int), one_hotish([0, 0, 0]), CLASSES)
    assert np.isnan(m["auroc"]) and np.isnan(m["sens_AD"])
    assert m["bacc"] == pytest.approx((1 / 2 + 2 / 3) / 2)  # mean recall over the classes present
    assert m["ppv_AD"] == 0.0 and m["spec_AD"] == pytest.approx(4 / 5)
    assert m["f1"] == pytest.approx(f1_score(y, pred, average="macro"))  # AD's F1 is 0: predicted, never true
    assert single["acc"] == 1.0 and single["mcc"] == 0.0 and np.isnan(single["auroc"]) and np.isnan(single["ppv_MCI"])


def test_two_classes() -> None:
    rng = np.random.default_rng(1)
    y = rng.integers(0, 2, 40)
    p_ad = np.clip(0.5 * y + rng.random(40) * 0.6, 0, 1)
    m = classification_metrics(y, np.column_stack([1 - p_ad, p_ad]), ("CN", "AD"))
    assert m["auroc"] == pytest.approx(roc_auc_score(y, p_ad))
    assert m["sens_AD"] == pytest.approx(((p_ad > 0.5) & (y == 1)).sum() / (y == 1).sum())


def test_vectorised_confusion_metrics_equal_sklearn() -> None:
    rng = np.random.default_rng(2)
    y, pred = rng.integers(0, 3, 60), rng.integers(0, 3, 60)
    subsets = [np.arange(60), *(rng.choice(60, size=rng.integers(1, 8), replace=False) for _ in range(60))]
    cms = np.stack([np.bincount(y[s] * 3 + pred[s], minlength=9).reshape(3, 3) for s in subsets])
    stacked = confusion_metrics(cms, CLASSES)
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")  # sklearn's notes on the tiny degenerate subsets
        reference = [
            {
                "bacc": balanced_accuracy_score(y[s], pred[s]),
                "acc": np.mean(y[s] == pred[s]),
                "f1": f1_score(y[s], pred[s], labels=[0, 1, 2], average="macro", zero_division=np.nan),
                "mcc": matthews_corrcoef(y[s], pred[s]),
            }
            for s in subsets
        ]
    for name in ("bacc", "acc", "f1", "mcc"):
        np.testing.assert_allclose(stacked[name], [r[name] for r in reference], rtol=1e-12, atol=1e-12)
    full = classification_metrics(y, one_hotish(list(pred)), CLASSES)
    assert {k: float(v[0]) for k, v in stacked.items()} == pytest.approx({k: full[k] for k in stacked})


def test_frame_checks() -> None:
    frame = predictions_frame(6)
    with pytest.raises(ValueError, match="one model"):
        frame_metrics(frame, CLASSES)
    with pytest.raises(ValueError, match=r"\['EMCI'\] are not among"):
        frame_metrics(frame[frame["model"] == "cnn"].assign(group="EMCI"), CLASSES)
    with pytest.raises(ValueError, match="p_AD"):
        frame_metrics(frame[frame["model"] == "cnn"].drop(columns="p_AD"), CLASSES)


def test_subject_level_averages_probabilities_and_keeps_first_visit_group() -> None:
    frame = pd.DataFrame(
        {
            "image_id": ["a2", "a1", "b1"],
            "subject": ["A", "A", "B"],
            "group": ["AD", "MCI", "CN"],
            "first_visit": [False, True, True],
            "fold": [1, 1, 0],
            "model": "cnn",
            "p_CN": [0.6, 0.2, 0.1],
            "p_MCI": [0.3, 0.4, 0.1],
            "p_AD": [0.1, 0.4, 0.8],
        }
    )
    out = subject_level(frame, CLASSES).set_index("subject")
    np.testing.assert_allclose(out.loc["A", PROBS].to_numpy(float), [0.4, 0.35, 0.25])
    assert out.loc["A", "group"] == "MCI" and out.loc["A", "n_images"] == 2 and out.loc["A", "fold"] == 1
    assert out.loc["B", "group"] == "CN" and out.loc["B", "p_AD"] == 0.8
    # Without first-visit flags the first row in frame order decides.
    assert subject_level(frame.drop(columns="first_visit"), CLASSES).set_index("subject").loc["A", "group"] == "AD"


def test_subject_level_is_a_predictions_frame() -> None:
    frame = predictions_frame(12)
    out = subject_level(frame, CLASSES)
    assert len(out) == 2 * 12 and out.groupby("model")["n_images"].sum().eq(frame.groupby("model").size()).all()
    cnn = frame[frame["model"] == "cnn"]
    expected = cnn.groupby("subject")[PROBS].mean()
    np.testing.assert_allclose(out[out["model"] == "cnn"].set_index("subject")[PROBS], expected)
    assert set(fold_table(out, CLASSES)["model"]) == {"cnn", "baseline"}


def test_first_visits() -> None:
    frame = predictions_frame(12)
    first = first_visits(frame)
    assert first["first_visit"].all() and len(first) == 2 * 12
    assert first.groupby("model")["subject"].nunique().eq(12).all()
    assert len(first_visits(frame.drop(columns="first_visit"))) == len(frame)
    unknown = frame.assign(first_visit=frame["first_visit"].astype(object).where(frame.index > 0, np.nan))
    assert len(first_visits(unknown)) == len(first) - 1  # a visit of unknown rank (NaN) is not a first visit


def clustered_frame() -> pd.DataFrame:
    """Subject ``BIG`` has 10 images, all wrongly called CN; 24 other subjects have one image each."""
    rng = np.random.default_rng(5)
    rows = [
        {"image_id": f"BIG_{i}", "subject": "BIG", "group": "AD", "p_CN": 0.7, "p_MCI": 0.2, "p_AD": 0.1}
        for i in range(10)
    ]
    for s in range(24):
        group = s % 3
        alpha = np.ones(3)
        alpha[group if s % 4 else (group + 1) % 3] += 4
        rows.append(
            {"image_id": f"S{s}", "subject": f"S{s}", "group": CLASSES[group], **dict(zip(PROBS, rng.dirichlet(alpha)))}
        )
    return pd.DataFrame(rows).assign(model="cnn", fold=0)


def test_bootstrap_draws_subjects_with_all_their_images() -> None:
    frame = clustered_frame()
    n = 100
    fast = bootstrap_samples(frame, CLASSES, n_resamples=n, seed=3)
    reference = naive_bootstrap(frame, n_resamples=n, seed=3)
    pd.testing.assert_frame_equal(fast, reference[fast.columns], rtol=1e-10)

    ci = bootstrap_ci(frame, CLASSES, n_resamples=n, seed=3).set_index("metric")
    assert ci.loc["bacc", "estimate"] == pytest.approx(frame_metrics(frame, CLASSES)["bacc"])
    assert ci.loc["bacc", ["ci_low", "ci_high"]].tolist() == pytest.approx(
        np.percentile(reference["bacc"], [2.5, 97.5]).tolist()
    )

    # Treating every image as its own subject ignores that BIG's ten errors stand or fall together.
    per_image = bootstrap_ci(frame.assign(subject=frame["image_id"]), CLASSES, n_resamples=n, seed=3)
    width = ci["ci_high"] - ci["ci_low"]
    image_width = per_image.set_index("metric").eval("ci_high - ci_low")
    assert width["sens_AD"] > 1.5 * image_width["sens_AD"]


def test_bootstrap_is_seeded() -> None:
    frame = predictions_frame(20)
    a = bootstrap_ci(frame, CLASSES, n_resamples=50, seed=7)
    pd.testing.assert_frame_equal(a, bootstrap_ci(frame, CLASSES, n_resamples=50, seed=7))
    assert not a["ci_low"].equals(bootstrap_ci(frame, CLASSES, n_resamples=50, seed=8)["ci_low"])
    assert list(a["model"].unique()) == ["baseline", "cnn"] and len(a) == 2 * len(metric_names(CLASSES))


def test_bootstrap_counts_valid_resamples() -> None:
    frame = predictions_frame(20, models=("cnn",))
    frame.loc[frame["subject"] != "S000", "group"] = frame["group"].where(frame["group"] != "AD", "CN")
    frame.loc[frame["subject"] == "S000", "group"] = "AD"  # AD rests on one subject: absent from ~1/e of resamples
    ci = bootstrap_ci(frame, CLASSES, n_resamples=120, seed=0).set_index("metric")
    valid = naive_bootstrap(frame, 120, 0)["auroc"].notna().sum()
    assert ci.loc["auroc", "n_valid"] == valid and 55 < valid < 100
    assert ci.loc["acc", "n_valid"] == 120 and ci.loc["sens_AD", "n_valid"] == valid


def test_bootstrap_rejects_unknown_metric() -> None:
    with pytest.raises(ValueError, match="unknown metrics"):
        bootstrap_samples(predictions_frame(4, models=("cnn",)), CLASSES, 10, metrics=["auc"])


def test_paired_difference_of_a_model_with_itself_is_zero() -> None:
    diff = paired_difference(predictions_frame(20), "cnn", "cnn", CLASSES, n_resamples=50).set_index("metric")
    assert diff.loc[["bacc", "auroc"], ["estimate", "ci_low", "ci_high"]].eq(0.0).all().all()
    assert diff["n_valid"].eq(50).all()


def test_paired_difference_draws_the_same_subjects_for_both() -> None:
    frame = predictions_frame(20)
    diff = paired_difference(frame, "cnn", "baseline", CLASSES, ("bacc", "auroc", "sens_AD"), n_resamples=60, seed=2)
    cnn, base = (frame[frame["model"] == m].reset_index(drop=True) for m in ("cnn", "baseline"))
    delta = naive_bootstrap(cnn, 60, 2) - naive_bootstrap(base, 60, 2)
    diff = diff.set_index("metric")
    for name in ("bacc", "auroc", "sens_AD"):
        assert diff.loc[name, "estimate"] == pytest.approx(
            frame_metrics(cnn, CLASSES)[name] - frame_metrics(base, CLASSES)[name]
        )
        assert diff.loc[name, ["ci_low", "ci_high"]].tolist() == pytest.approx(
            np.nanpercentile(delta[name], [2.5, 97.5]).tolist()
        )
    assert diff.loc["bacc", "ci_low"] > 0  # the synthetic cnn is the better model


def test_paired_difference_needs_the_same_images() -> None:
    frame = predictions_frame(10)
    short = frame.drop(frame.index[(frame["model"] == "baseline")][:3])
    n_cnn, n_base = (short["model"] == "cnn").sum(), (short["model"] == "baseline").sum()
    with pytest.raises(ValueError, match=rf"'cnn' has {n_cnn} rows .*'baseline' has {n_base} rows"):
        paired_difference(short, "cnn", "baseline", CLASSES, n_resamples=10)


def test_fold_table_mean_and_sd() -> None:
    frame = predictions_frame(30)
    table = fold_table(frame, CLASSES)
    assert table["fold"].tolist() == [0, 1, 2, 3, 4, "mean", "sd"] * 2
    cnn = table[table["model"] == "cnn"].set_index("fold")
    per_fold = cnn.loc[[0, 1, 2, 3, 4], "bacc"].to_numpy(float)
    assert per_fold[2] == pytest.approx(frame_metrics(frame.query("model == 'cnn' and fold == 2"), CLASSES)["bacc"])
    assert cnn.loc["mean", "bacc"] == pytest.approx(np.mean(per_fold))
    assert cnn.loc["sd", "bacc"] == pytest.approx(np.std(per_fold, ddof=1))
    assert cnn.loc[[0, 1, 2, 3, 4], "n_images"].sum() == (frame["model"] == "cnn").sum()
