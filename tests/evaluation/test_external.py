"""The pieces of an external evaluation that need no model: sites, the most shifted structures, the class check."""

from __future__ import annotations

from pathlib import Path

import pandas as pd
import pytest

from adni_lightning.evaluation.external import EvaluationError, check_cohort_classes, shifted_structures, site_of


def test_the_site_is_the_number_before_S_of_an_adni_subject_id():
    assert site_of("002_S_0295") == "002"
    assert site_of("941_S_1202") == "941"
    assert site_of("sub-01") is None and site_of("002_X_0295") is None


def test_structures_are_ranked_by_the_absolute_standardised_mean_difference():
    training = {
        "volumes": {"a": {"mean": 1.0, "sd": 1.0}, "b": {"mean": 1.0, "sd": 0.0}, "c": {"mean": 5.0, "sd": 2.0}}
    }
    cohort = {
        "volumes": {
            "a": {"mean": 2.0, "sd": 1.0},  # +1.0
            "b": {"mean": 1.0, "sd": 0.0},  # no spread on either side: left out
            "c": {"mean": 2.0, "sd": 2.0},  # -1.5
            "d": {"mean": 9.0, "sd": 1.0},  # not in the training summary
        }
    }
    shifted = shifted_structures(training, cohort, top=5)
    assert list(shifted["structure"]) == ["c", "a"]
    assert list(shifted["smd"]) == [-1.5, 1.0]
    assert list(shifted_structures(training, cohort, top=1)["structure"]) == ["c"]
    assert shifted_structures({}, cohort, top=5).empty


def test_a_class_the_model_lacks_is_refused_with_its_image_count():
    check_cohort_classes(pd.Series(["CN", "AD"]), ["CN", "MCI", "AD"], Path("c.csv"), "m.ckpt")  # a subset is fine
    with pytest.raises(EvaluationError) as refused:
        check_cohort_classes(pd.Series(["CN", "SMC", "SMC", "EMCI"]), ["CN", "MCI", "AD"], Path("c.csv"), "m.ckpt")
    assert str(refused.value) == (
        "c.csv: the cohort's class(es) ['SMC', 'EMCI'] (3 images) are not among the classes ['CN', 'MCI', 'AD'] that "
        "m.ckpt predicts: map them with data.manifest.group_map (null leaves them out)"
    )
