"""Ranking: left+right sums, means over images, intervals over subjects, ranks by absolute effect."""

from __future__ import annotations

import pandas as pd
import pytest

from adni_lightning.interpret.ranking import bilateral_name, rank_structures


@pytest.mark.parametrize(
    "name, expected",
    [
        ("Left-Hippocampus", "Hippocampus"),
        ("Right-Inf-Lat-Vent", "Inf-Lat-Vent"),
        ("ctx-lh-entorhinal", "ctx-entorhinal"),
        ("ctx-rh-insula", "ctx-insula"),
        ("3rd-Ventricle", "3rd-Ventricle"),
        ("Left-WM-hypointensities", "WM-hypointensities"),
    ],
)
def test_bilateral_name(name, expected):
    assert bilateral_name(name) == expected


def _rows(image: str, subject: str, values: dict[tuple[int, str], float]) -> list[dict]:
    return [
        {
            "image_id": image,
            "subject": subject,
            "group": "AD",
            "predicted": "AD",
            "class": "AD",
            "label_id": label,
            "structure": structure,
            "delta_p": delta,
            "voxels": 10,
        }
        for (label, structure), delta in values.items()
    ]


def test_ranking_means_sums_and_ranks():
    hippocampus_l, hippocampus_r, third = (17, "Left-Hippocampus"), (53, "Right-Hippocampus"), (14, "3rd-Ventricle")
    importance = pd.DataFrame(
        _rows("I1", "s1", {hippocampus_l: -0.2, hippocampus_r: -0.1, third: 0.05})
        + _rows("I2", "s1", {hippocampus_l: -0.4, third: 0.25})  # a second visit without a right hippocampus
        + _rows("I3", "s2", {hippocampus_l: -0.3, hippocampus_r: -0.2, third: 0.3})
    )
    ranking = rank_structures(importance, ["CN", "AD"], n_resamples=500).set_index(["level", "structure"])
    assert set(ranking["class"]) == {"AD"}  # no rows for a class without rows
    assert ranking.loc[("structure", "Left-Hippocampus"), "mean_delta_p"] == pytest.approx(-0.3)
    assert ranking.loc[("structure", "Right-Hippocampus"), "images"] == 2
    bilateral = ranking.loc["bilateral"]
    assert bilateral.loc["Hippocampus", "mean_delta_p"] == pytest.approx((-0.3 - 0.4 - 0.5) / 3)
    assert bilateral.loc["Hippocampus", "label_ids"] == "17+53" and bilateral.loc["3rd-Ventricle", "label_ids"] == "14"
    assert list(bilateral.sort_values("rank").index) == ["Hippocampus", "3rd-Ventricle"]  # |−0.4| > |0.2|
    # Two subjects: a resample holds s1 twice, s2 twice, or both: the interval spans those three means.
    third_ventricle = ranking.loc[("structure", "3rd-Ventricle")]
    assert third_ventricle["ci_low"] == pytest.approx(0.15) and third_ventricle["ci_high"] == pytest.approx(0.3)
    assert third_ventricle["subjects"] == 2
