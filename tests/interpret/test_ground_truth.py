"""Ground truth: on a synthetic cohort, the structures that carry the disease signal rank first for AD.

The generator (:mod:`adni_lightning.synth.cohort`) shrinks hippocampus and amygdala, enlarges the lateral,
inferior lateral and third ventricles (``_EFFECTS``) and thins the cortex, medial and lateral temporal parcels
most (``_PARCELS`` weight 0.8–1; every other parcel 0.25–0.5). A small default ResNet trained for 15 epochs
at 32³ (about a minute on two cores) is explained on its validation split by structure occlusion.

What it shows about the method: ranked by *total* effect, the lateral ventricles come first or second, but big
structures that carry no signal of their own (cerebral white matter, cerebellar cortex: thousands of voxels)
crowd the top three, because removing them blanks much of the input and the model, close to additive in its
voxels (Integrated Gradients summed per structure ranks them the same way), reacts in proportion. Ranked per
voxel, the affected structures come first. The total ranking's failure is kept as a strict xfail, so a change
of model or method that fixes it is noticed.
"""

from __future__ import annotations

from pathlib import Path

import pandas as pd
import pytest

from adni_lightning.main import main
from adni_lightning.synth import generate_cohort

pytestmark = pytest.mark.slow

#: Bilateral names of the structures the generator changes with disease severity (cortex: weight >= 0.5).
AFFECTED = {
    "Hippocampus",
    "Amygdala",
    "Lateral-Ventricle",
    "Inf-Lat-Vent",
    "3rd-Ventricle",
    *(
        f"ctx-{name}"
        for name in (
            "entorhinal",
            "parahippocampal",
            "fusiform",
            "inferiortemporal",
            "middletemporal",
            "superiortemporal",
            "transversetemporal",
            "inferiorparietal",
            "isthmuscingulate",
            "posteriorcingulate",
            "precuneus",
            "superiorparietal",
            "supramarginal",
        )
    ),
}


@pytest.fixture(scope="module")
def explained(tmp_path_factory) -> Path:
    base = tmp_path_factory.mktemp("ground_truth")
    generate_cohort(base / "data", subjects=120, size=48, seed=0, workers=1)
    run = [
        "--trainer.default_root_dir",
        str(base / "run"),
        "--data.manifest.data_dir",
        str(base / "data"),
        "--data.preprocessing.image_size",
        "32",
        "--data.loader.num_workers",
        "0",
        # The image model alone: with the regional volumes in the numeric branch (the embedded default) the
        # image branch has less of the signal left to find, and this test is about finding it in the image.
        "--data.tabular.volumes",
        "[]",
    ]
    main(
        [
            "fit",
            *run,
            "--trainer.max_epochs",
            "15",
            "--trainer.enable_progress_bar",
            "false",
            "--trainer.enable_model_summary",
            "false",
        ]
    )
    main(
        [
            "interpret",
            *run,
            "--ckpt_path",
            str(base / "run" / "checkpoints" / "last.ckpt"),
            "--ig_steps",
            "0",
            "--bootstrap",
            "200",
        ]
    )
    return base / "run" / "interpret"


def _ad(explained: Path) -> pd.DataFrame:
    ranking = pd.read_csv(explained / "structure_ranking.csv")
    return ranking[(ranking["class"] == "AD") & (ranking["level"] == "bilateral")].set_index("structure")


def test_the_model_learned_the_disease(explained):
    images = pd.read_csv(explained / "images.csv")
    p_ad = images.groupby("group")["p_AD"].mean()
    assert p_ad["AD"] > p_ad["CN"] + 0.2


def test_affected_structures_rank_first_per_voxel_and_move_ad_the_right_way(explained):
    ad = _ad(explained)
    per_voxel = list(ad.sort_values("rank_per_voxel").index)
    assert per_voxel[0] in AFFECTED, per_voxel[:6]
    # The runner-up may be a parcel thinned at the weaker weights (0.25-0.5): with oneDNN's AVX-512 kernels the model
    # ranks ctx-lateralorbitofrontal second, with its AVX2 kernels (ONEDNN_MAX_CPU_ISA=AVX2) an AFFECTED structure.
    assert set(per_voxel[:2]) <= AFFECTED | {s for s in ad.index if s.startswith("ctx-")}, per_voxel[:6]
    assert len(set(per_voxel[:6]) & AFFECTED) >= 4, per_voxel[:6]
    assert "Lateral-Ventricle" in list(ad.sort_values("rank").index[:2])
    # Removal is the extreme of the disease's direction: no ventricle reads as healthy, no hippocampus as atrophy.
    assert ad.at["Lateral-Ventricle", "ci_high"] < 0 and ad.at["Hippocampus", "ci_low"] > 0


@pytest.mark.xfail(strict=True, reason="total effect is confounded by size: big unaffected structures rank high")
def test_affected_structures_rank_first_by_total_effect(explained):
    assert set(_ad(explained).sort_values("rank").index[:3]) <= AFFECTED
