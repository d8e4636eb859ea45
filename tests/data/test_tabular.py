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


def test_a_batch_encodes_as_its_images_one_by_one_bit_for_bit():
    encoder = TabularEncoder(["Left-Hippocampus"]).fit([70.3, 81.7, 77.0], np.array([[0.0021], [0.0043], [0.0031]]))
    ages, sexes, volumes = np.array([66.1, 90.2, 75.5]), np.array(["F", "M", "F"]), np.array([[0.003], [0.001], [0.0]])
    batch = encoder.encode_batch(ages, sexes, volumes)
    assert batch.dtype == np.float32 and batch.shape == (3, 4)
    one_by_one = np.stack([encoder.encode(float(a), str(s), v) for a, s, v in zip(ages, sexes, volumes)])
    assert batch.tobytes() == one_by_one.tobytes()
    assert batch[:, 1].tolist() == [1.0, 0.0, 1.0]
