import numpy as np
import pytest

from adni_lightning.data.tabular import TabularEncoder


def test_age_is_standardised_with_training_statistics_and_sex_is_one_hot():
    encoder = TabularEncoder().fit([70.0, 80.0])
    assert encoder.encode(75.0, "F").tolist() == [0.0, 1.0, 0.0]
    np.testing.assert_allclose(encoder.encode(85.0, "M"), [2.0, 0.0, 1.0])
    assert encoder.encode(85.0, "M").dtype == np.float32


def test_state_round_trip_and_use_before_fit():
    with pytest.raises(RuntimeError, match="age statistics are unknown"):
        TabularEncoder().encode(70.0, "M")
    fitted = TabularEncoder().fit([60.0, 70.0, 95.0])
    restored = TabularEncoder()
    restored.load_state_dict(fitted.state_dict())
    np.testing.assert_array_equal(restored.encode(72.0, "F"), fitted.encode(72.0, "F"))
    assert TabularEncoder().fit([70.0]).age_std == 1.0  # a single age cannot give a spread


def test_volumes_are_standardised_with_training_statistics_and_checked_on_restore():
    encoder = TabularEncoder(["Left-Hippocampus", "Right-Hippocampus"])
    assert encoder.num_features == 5
    encoder.fit([70.0, 80.0], np.array([[0.002, 0.004], [0.004, 0.004]]))
    np.testing.assert_allclose(encoder.encode(75.0, "F", [0.003, 0.005]), [0.0, 1.0, 0.0, 0.0, 0.001])
    with pytest.raises(ValueError, match="training split's volumes"):
        TabularEncoder(["Left-Hippocampus"]).fit([70.0, 80.0])
    with pytest.raises(ValueError, match=r"checkpoint's tabular volumes \[\] differ"):
        TabularEncoder(["Left-Hippocampus"]).load_state_dict(TabularEncoder().fit([70.0]).state_dict())
