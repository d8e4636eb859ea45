from pathlib import Path

import nibabel as nib
import numpy as np
import pytest

from adni_lightning.data import labels
from adni_lightning.synth.cohort import FILE_SUFFIX


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
    assert colours[table[28]].tolist() == [145, 42, 42] and colours[table[60]].tolist() == [165, 42, 42]
    assert colours[table[1033]].tolist() == [70, 70, 70] and colours[table[253]].tolist() == [0, 0, 160]
    assert colours[table[0]].tolist() == [0, 0, 0]


def _homes(label: int) -> list[str]:
    """Every default channel holding ``label``, and ``LEFT_OUT`` if it is left out."""
    homes = [name for name, ids in labels.DEFAULT_CHANNELS.items() if label in ids]
    return homes + (["LEFT_OUT"] if label in labels.LEFT_OUT else [])


@pytest.mark.parametrize("name", list(labels.LABEL_MAPS))
def test_every_id_a_map_may_hold_is_known_and_has_exactly_one_home(name: str) -> None:
    ids = labels.LABEL_MAPS[name]
    assert 0 in ids and len(set(ids)) == len(ids)
    assert set(ids) <= set(labels.KNOWN_LABELS.tolist())
    assert {label: homes for label in ids if len(homes := _homes(label)) != 1} == {}


def test_the_maps_hold_what_their_programs_write() -> None:
    deep, aseg = set(labels.FASTSURFER_DEEP), set(labels.RECON_ALL_ASEG)
    assert len(deep) == 96 and {3, 42, 251, 1000, 1001, 1004, 2032} & deep == set()
    assert set(labels.FASTSURFER_DEEP_WITH_CC) - deep == {251, 252, 253, 254, 255}
    assert aseg - set(labels.FASTSURFER_ASEG) == {30, 62, 72, 78, 79, 80, 81, 82, 85}
    assert set(labels.RECON_ALL_APARC_ASEG) - aseg == {1000, 2000} | {1000 + p for p in range(1, 36) if p != 4} | {
        2000 + p for p in range(1, 36) if p != 4
    }
    assert {3, 42} & set(labels.RECON_ALL_APARC_ASEG) == set()
    assert set(labels.RECON_ALL_DKT_ASEG) & {1001, 1004, 1032, 1033, 2001, 2004, 2032, 2033} == set()


def test_channels_and_left_out_share_no_id_and_name_only_known_ones() -> None:
    known = set(labels.KNOWN_LABELS.tolist())
    placed = [label for ids in labels.DEFAULT_CHANNELS.values() for label in ids] + list(labels.LEFT_OUT)
    assert sorted(placed) == sorted(set(placed))  # no id in two channels, nor in a channel and LEFT_OUT
    assert set(placed) == known  # every known label has a home or a reason
    assert all(reason for reason in labels.LEFT_OUT.values())


def test_recon_all_labels_fastsurfer_lacks_go_where_fastsurfer_puts_them() -> None:
    homes = {
        label: _homes(label) for label in (*range(251, 256), *range(77, 83), 30, 62, 72, 31, 63, 1000, 2000, 3, 42)
    }
    assert homes == {
        **{cc: ["white_matter"] for cc in range(251, 256)},  # corpus callosum
        **{hypo: ["white_matter"] for hypo in range(77, 83)},
        30: ["white_matter"],
        62: ["white_matter"],
        72: ["csf"],
        31: ["csf"],
        63: ["csf"],
        1000: ["cortex"],
        2000: ["cortex"],
        3: ["cortex"],
        42: ["cortex"],
    }
    assert sorted(labels.LEFT_OUT) == [0, 85]


def test_left_right_pairs_share_a_channel_so_a_flip_keeps_the_channels() -> None:
    assert {(left, right) for left, right in labels.LEFT_RIGHT_PAIRS if _homes(left) != _homes(right)} == set()
    lut = labels.channel_lookup(labels.DEFAULT_CHANNELS)
    np.testing.assert_array_equal(lut[labels.hemisphere_swap()], lut)


def test_default_channel_rows_sum_to_one_for_homed_ids_and_zero_for_left_out_ones() -> None:
    lut, table = labels.channel_lookup(labels.DEFAULT_CHANNELS), labels.compact_lookup()
    expected = [0.0 if label in labels.LEFT_OUT else 1.0 for label in labels.KNOWN_LABELS.tolist()]
    assert lut.sum(axis=1).tolist() == expected
    names = list(labels.DEFAULT_CHANNELS)
    assert lut[table[253]].tolist() == [float(name == "white_matter") for name in names]
    assert lut[table[85]].tolist() == [0.0] * len(names)


#: The default channels before recon-all's labels got a home: the channel of every id the generator draws must stay.
CHANNELS_OF_THE_EMBEDDED_RUN = {
    "hippocampus": labels.label_ids(17, 53),
    "amygdala": labels.label_ids(18, 54),
    "lateral_ventricle": labels.label_ids(4, 43),
    "inf_lat_vent": labels.label_ids(5, 44),
    "cortex": labels.label_ids(3, 42, *range(1000, 1036), *range(2000, 2036)),
    "white_matter": labels.label_ids(2, 41, 77, 78, 79, 7, 46),
    "deep_grey": labels.label_ids(10, 49, 11, 50, 12, 51, 13, 52, 26, 58, 28, 60),
    "csf": labels.label_ids(14, 15, 24, 31, 63, 72),
    "hindbrain": labels.label_ids(8, 47, 16),
}


def test_every_id_the_generator_draws_keeps_its_channel(cohort_template: Path) -> None:
    drawn: set[int] = set()
    for path in cohort_template.rglob(f"*{FILE_SUFFIX}"):
        drawn |= set(np.unique(np.asarray(nib.load(path).dataobj)).tolist())
    assert drawn == set(labels.FASTSURFER_DEEP)  # all 96, so none escapes the pin
    compact = labels.compact_lookup()[sorted(drawn)]
    pinned = labels.channel_lookup(CHANNELS_OF_THE_EMBEDDED_RUN)
    assert list(labels.DEFAULT_CHANNELS) == list(CHANNELS_OF_THE_EMBEDDED_RUN)
    np.testing.assert_array_equal(labels.channel_lookup(labels.DEFAULT_CHANNELS)[compact], pinned[compact])
