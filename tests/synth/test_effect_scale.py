"""``effect_scale`` scales the disease signal in the images and nothing else: the same people, severities and ages,
volume changes per severity scaled exactly, no severity effect at 0.
"""

from __future__ import annotations

from pathlib import Path

import numpy as np
import pandas as pd
import pytest
import yaml

from adni_lightning import synth
from adni_lightning.cli import CONFIG_DIR
from adni_lightning.commands import synth as synth_command
from adni_lightning.errors import OptionError
from adni_lightning.main import main
from adni_lightning.synth.cohort import _EFFECTS, _SURFACE_PARCELS, ImageSpec, _parcel_thickness, _volume_factors

NO_JITTER = {name: (1.0, 1.0) for name in _EFFECTS}


def test_half_the_scale_halves_the_change_per_severity() -> None:
    full = _volume_factors(0.8, 75, NO_JITTER)
    half = _volume_factors(0.8, 75, NO_JITTER, effect_scale=0.5)
    assert full["hippocampus"] == pytest.approx((1 - 0.35 * 0.8,) * 2)  # 0.72
    assert half["hippocampus"] == pytest.approx((1 - 0.35 * 0.4,) * 2)  # 0.86: half the loss
    assert half["inf_lat_vent"] == pytest.approx((1 + 3.0 * 0.4,) * 2)  # 2.2 instead of 3.4
    older = _volume_factors(0.8, 95, NO_JITTER, effect_scale=0.5)  # age keeps its full effect: 2 decades, -5 % each
    assert older["hippocampus"] == pytest.approx(((1 - 0.35 * 0.4) * (1 - 0.05 * 2),) * 2)
    assert _volume_factors(0.8, 75, NO_JITTER, effect_scale=0.0)["hippocampus"] == (1.0, 1.0)


def test_the_default_scale_keeps_every_bit() -> None:
    jitter = {name: (0.93, 1.07) for name in NO_JITTER}
    assert _volume_factors(0.637, 81, jitter, effect_scale=1.0) == _volume_factors(0.637, 81, jitter)


def _severity_correlations(truth: pd.DataFrame) -> tuple[float, float]:
    """Correlation with severity of the hippocampus's and the temporal horn's share of the labelled volume."""
    hippocampus, horn = (
        float(np.corrcoef(truth[f"{name}_voxels"] / truth["brain_voxels"], truth["severity"])[0, 1])
        for name in ("hippocampus", "inf_lat_vent")
    )
    return hippocampus, horn


def test_no_disease_signal_at_scale_zero(tmp_path: Path) -> None:
    """Same people at the same seed; at scale 0 hippocampus and ventricles no longer follow severity."""
    options = {"subjects": 30, "size": 32, "second_visit_fraction": 0, "workers": 1, "seed": 5}
    synth.generate_cohort(tmp_path / "default", **options)
    synth.generate_cohort(tmp_path / "none", **options, effect_scale=0.0)
    default, none = (pd.read_csv(tmp_path / name / synth.TRUTH_NAME) for name in ("default", "none"))
    for column in ("image_id", "group", "sex", "age", "severity", "head_scale", "rotation_x_deg"):
        assert none[column].tolist() == default[column].tolist()
    hippocampus, ventricle = _severity_correlations(default)
    assert hippocampus < -0.5 and ventricle > 0.5
    hippocampus, ventricle = _severity_correlations(none)
    assert abs(hippocampus) < 0.35 and abs(ventricle) < 0.35
    assert (none["hippocampus_voxels"] >= default["hippocampus_voxels"]).mean() > 0.9  # no atrophy to take away


def test_cortex_thinning_follows_the_scale() -> None:
    spec = ImageSpec(
        image_id="I1",
        subject="002_S_0001",
        group="AD",
        sex="F",
        age=75,
        visit="sc",
        severity=1.0,
        head_scale=1.0,
        rotation_deg=(0.0, 0.0, 0.0),
        translation_mm=(0.0, 0.0, 0.0),
        volumes={},
        cortex_mm=2.0,
    )
    entorhinal = list(_SURFACE_PARCELS).index(6)  # thinning weight 1
    assert _parcel_thickness(spec)[entorhinal] == pytest.approx(2.0 * (1 - 0.3))
    for scale, thickness in ((0.5, 2.0 * (1 - 0.15)), (0.0, 2.0)):
        scaled = ImageSpec(**{**spec.__dict__, "effect_scale": scale})
        assert _parcel_thickness(scaled)[entorhinal] == pytest.approx(thickness)


@pytest.mark.parametrize("value", [-0.1, 2.5, float("nan")])
def test_a_scale_out_of_range_is_named(value: float) -> None:
    with pytest.raises(OptionError) as refused:
        synth.SyntheticCohort(effect_scale=value)
    assert str(refused.value) == (
        f"synthetic cohort option effect_scale={value!r}: it must be from 0 to 2 (0: no disease signal in the images)"
    )


def test_synth_takes_the_scale(tmp_path: Path) -> None:
    args = ["--subjects", "3", "--size", "32", "--workers", "1", "--second_visit_fraction", "0"]
    synth_command.main([*args, "--out", str(tmp_path / "full")])
    synth_command.main([*args, "--out", str(tmp_path / "none"), "--effect_scale", "0"])
    full, none = (pd.read_csv(tmp_path / name / synth.TRUTH_NAME) for name in ("full", "none"))
    assert none["severity"].tolist() == full["severity"].tolist()
    assert none["hippocampus_voxels"].sum() > full["hippocampus_voxels"].sum()
    assert none["inf_lat_vent_voxels"].sum() < full["inf_lat_vent_voxels"].sum()


def test_the_datamodule_takes_the_scale(capsys: pytest.CaptureFixture[str]) -> None:
    with pytest.raises(SystemExit):
        main(
            [
                "fit",
                "--config",
                str(CONFIG_DIR / "synthetic.yaml"),
                "--data.init_args.cohort.effect_scale",
                "0.5",
                "--print_config",
            ]
        )
    assert yaml.safe_load(capsys.readouterr().out)["data"]["init_args"]["cohort"]["effect_scale"] == 0.5
