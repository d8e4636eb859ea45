import numpy as np
import pytest

from adni_lightning.data import labels


def test_compact_lookup_round_trips_every_known_id():
    table = labels.compact_lookup()
    assert len(labels.KNOWN_LABELS) <= 255  # fits the uint8 cache
    np.testing.assert_array_equal(labels.KNOWN_LABELS[table[labels.KNOWN_LABELS]], labels.KNOWN_LABELS)
    assert table[1] == -1 and table[6] == -1  # not FreeSurfer aseg ids


def test_hemisphere_swap_exchanges_left_and_right_and_is_an_involution():
    table, swap = labels.compact_lookup(), labels.hemisphere_swap()
    for left, right in [(17, 53), (4, 43), (5, 44), (18, 54), (1006, 2006), (1035, 2035)]:
        assert swap[table[left]] == table[right]
        assert swap[table[right]] == table[left]
    for midline in (0, 14, 15, 16, 24, 77):
        assert swap[table[midline]] == table[midline]
    np.testing.assert_array_equal(swap[swap], np.arange(len(swap)))


def test_channel_lookup_one_hot_and_rejects_unknown_ids():
    lut = labels.channel_lookup({"hippocampus": [17, 53], "ventricles": [4, 43]})
    table = labels.compact_lookup()
    assert lut.shape == (len(labels.KNOWN_LABELS), 2)
    assert lut[table[17]].tolist() == [1, 0] and lut[table[43]].tolist() == [0, 1]
    assert lut[table[0]].tolist() == [0, 0]
    with pytest.raises(ValueError, match="channel 'bad': 9999"):
        labels.channel_lookup({"bad": [9999]})


def test_default_channels_cover_the_ad_markers_and_freesurfer_colours():
    assert {"hippocampus", "amygdala", "lateral_ventricle", "inf_lat_vent", "cortex"} <= set(labels.DEFAULT_CHANNELS)
    colours = labels.compact_colours()
    table = labels.compact_lookup()
    assert colours[table[17]].tolist() == [220, 216, 20]  # Left-Hippocampus in FreeSurferColorLUT
    assert colours[table[0]].tolist() == [0, 0, 0]
