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
