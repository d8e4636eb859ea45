import numpy as np
import pytest
from sklearn.metrics import brier_score_loss

from adni_lightning.evaluation.calibration import (
    brier_score,
    calibration_metrics,
    expected_calibration_error,
    fit_temperature,
    reliability_table,
    scale_temperature,
)

Y = np.array([0, 1, 2, 1])
P = np.array([[0.7, 0.2, 0.1], [0.1, 0.8, 0.1], [0.2, 0.2, 0.6], [0.5, 0.4, 0.1]])


def test_ece_by_hand_with_two_equal_count_bins():
    # confidences sorted: 0.5 (wrong), 0.6 (right) | 0.7 (right), 0.8 (right)
    # bin 1: accuracy 0.5, confidence 0.55 -> gap 0.05; bin 2: accuracy 1, confidence 0.75 -> gap 0.25
    assert expected_calibration_error(Y, P, bins=2) == pytest.approx((2 * 0.05 + 2 * 0.25) / 4)
    # one bin: |3/4 - 0.65|
    assert expected_calibration_error(Y, P, bins=1) == pytest.approx(0.1)


def test_brier_is_sklearns_and_the_hand_computed_value():
    assert brier_score(Y, P) == pytest.approx(brier_score_loss(Y, P, labels=[0, 1, 2]))
    assert brier_score(Y, P) == pytest.approx((0.14 + 0.06 + 0.24 + 0.62) / 4)


def test_reliability_table_counts_and_frequencies():
    table = reliability_table(Y, P, ["CN", "MCI", "AD"], bins=2)
    ad = table[table["class"] == "AD"]
    assert ad["count"].tolist() == [2, 2]
    # p_AD sorted: 0.1 (y=0), 0.1 (y=1) | 0.1 (y=1), 0.6 (y=2)
    assert ad["mean_probability"].tolist() == pytest.approx([0.1, 0.35])
    assert ad["frequency"].tolist() == [0.0, 0.5]


def test_temperature_keeps_the_argmax_and_one_is_the_identity():
    assert np.allclose(scale_temperature(P, 1.0), P)
    hot = scale_temperature(P, 0.5)
    assert (hot.argmax(1) == P.argmax(1)).all() and np.allclose(hot.sum(1), 1)
    assert (hot.max(1) > P.max(1)).all()  # a temperature below 1 sharpens


def test_fitted_temperature_undoes_a_known_overconfidence():
    rng = np.random.default_rng(0)
    logits = rng.normal(size=(4000, 3)) * 2
    exp = np.exp(logits - logits.max(1, keepdims=True))
    calibrated = exp / exp.sum(1, keepdims=True)
    y = np.array([rng.choice(3, p=p) for p in calibrated])
    overconfident = scale_temperature(calibrated, 1 / 3)  # logits × 3
    t = fit_temperature(y, overconfident)
    assert t == pytest.approx(3.0, rel=0.1)
    before = calibration_metrics(y, overconfident)
    after = calibration_metrics(y, scale_temperature(overconfident, t))
    assert after["ece"] < before["ece"] / 2 and after["brier"] < before["brier"] and after["nll"] < before["nll"]


def test_a_saved_temperature_loads_for_its_classes_only(tmp_path):
    from adni_lightning.evaluation.calibration import CalibrationError, load_temperature, save_temperature

    path = tmp_path / "calibration.json"
    save_temperature(path, 1.7, ["CN", "MCI", "AD"], "cv out-of-fold predictions", 280)
    assert load_temperature(path, ["CN", "MCI", "AD"]) == 1.7
    with pytest.raises(CalibrationError) as err:
        load_temperature(path, ["CN", "AD"])
    assert str(err.value) == (
        f"--calibration {path}: fitted for classes ['CN', 'MCI', 'AD'], the model predicts ['CN', 'AD']"
    )
    (tmp_path / "bad.json").write_text("{}")
    with pytest.raises(CalibrationError, match="not a calibration file written by cv"):
        load_temperature(tmp_path / "bad.json", ["CN"])


def _cohort(n_images: int = 120, seed: int = 1):
    """Overconfident predictions of ``n_images`` images of ``n_images // 2`` subjects in 4 folds, with tied
    confidences (duplicated rows) so the bootstrap's binning of ties is exercised.
    """
    rng = np.random.default_rng(seed)
    logits = rng.normal(size=(n_images, 3)) * 2
    exp = np.exp(logits - logits.max(1, keepdims=True))
    proba = exp / exp.sum(1, keepdims=True)
    y = np.array([rng.choice(3, p=p) for p in proba])
    proba = scale_temperature(proba, 0.4)
    proba[1::10] = proba[::10]
    subjects = np.array([f"S{i // 2:03d}" for i in range(n_images)])
    folds = np.array([i // 2 % 4 for i in range(n_images)])
    return y, proba, subjects, folds


def test_the_vectorised_bootstrap_equals_the_functions_on_each_resample():
    from adni_lightning.evaluation.calibration import bootstrap_calibration
    from adni_lightning.evaluation.metrics import resample_counts

    for n_images, bins in ((120, 15), (8, 15)):  # the second has fewer images than bins
        y, proba, subjects, _ = _cohort(n_images)
        samples = bootstrap_calibration(y, proba, subjects, n_resamples=300, seed=3, bins=bins)
        assert samples.shape == (300, 3)
        index, names = np.unique(subjects, return_inverse=True)[1], np.unique(subjects)
        draws = np.random.default_rng(3).integers(0, len(names), size=(300, len(names)))  # bootstrap_samples' draws
        for r in (0, 1, 150, 299):
            resample = np.repeat(np.arange(n_images), resample_counts(draws[r : r + 1], len(names))[0, index])
            expected = calibration_metrics(y[resample], proba[resample], bins)
            assert samples.iloc[r].to_dict() == pytest.approx(expected, rel=1e-12, abs=1e-12)


def test_cross_fitting_never_sees_the_fold_it_is_applied_to():
    from adni_lightning.evaluation.calibration import apply_temperatures, cross_fitted_temperatures

    y, proba, _, folds = _cohort(400)
    temperatures = cross_fitted_temperatures(y, proba, folds)
    assert list(temperatures) == [0, 1, 2, 3]
    assert temperatures[2] == fit_temperature(y[folds != 2], proba[folds != 2])
    permuted = y.copy()
    permuted[folds == 2] = np.roll(y[folds == 2], 1)  # fold 2's labels shuffled
    assert (permuted != y).any()
    again = cross_fitted_temperatures(permuted, proba, folds)
    assert again[2] == temperatures[2]  # bit-identical: fold 2 chose nothing of its own temperature
    assert all(again[k] != temperatures[k] for k in (0, 1, 3))  # while its labels do move the others'
    scaled = apply_temperatures(proba, folds, temperatures)
    for k, temperature in temperatures.items():
        np.testing.assert_array_equal(scaled[folds == k], scale_temperature(proba[folds == k], temperature))
    assert (scaled.argmax(1) == proba.argmax(1)).all()


def test_the_cross_fitted_temperatures_are_recorded_and_the_file_still_loads(tmp_path):
    import json

    from adni_lightning.evaluation.calibration import load_temperature, save_temperature

    path = tmp_path / "calibration.json"
    save_temperature(path, 1.5, ["CN", "AD"], "cv out-of-fold predictions", 10, {0: 1.25, 1: 2.0})
    assert json.loads(path.read_text())["cross_fitted"] == {"0": 1.25, "1": 2.0}
    assert load_temperature(path, ["CN", "AD"]) == 1.5


def test_brier_accepts_probabilities_rounded_as_in_predictions_csv():
    import warnings

    rounded = P + [2e-6, 3e-6, 0]  # each row sums to 1.000005, as 6-decimal rounding can leave it
    with warnings.catch_warnings():
        warnings.simplefilter("error")
        assert brier_score(Y, rounded) == pytest.approx(brier_score(Y, P), abs=1e-5)
    with pytest.warns(UserWarning, match="do not sum to one"):
        brier_score(Y, P * 1.1)


def test_a_temperature_at_the_end_of_the_search_is_flagged():
    from adni_lightning.evaluation.calibration import at_search_bound

    rng = np.random.default_rng(0)
    confident = scale_temperature(rng.dirichlet([1, 1, 1], size=300), 0.2)
    labels = rng.integers(0, 3, 300)  # unrelated to the predictions: the best temperature flattens them all
    t = fit_temperature(labels, confident)
    assert at_search_bound(t) and t == pytest.approx(np.exp(3.0), rel=1e-3)
    assert not at_search_bound(fit_temperature(Y, P)) and not at_search_bound(1.0)
