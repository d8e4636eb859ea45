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
