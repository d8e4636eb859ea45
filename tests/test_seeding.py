import numpy as np

from adni_lightning.seeding import derived_seed, run_seed


def test_derived_seeds_are_distinct_per_counter_and_valid_for_numpy():
    seeds = {derived_seed(42, step) for step in range(1000)}
    assert len(seeds) == 1000
    assert derived_seed(42, 7) == derived_seed(42, 7) != derived_seed(43, 7)
    big = derived_seed(2**40, 5)
    assert 0 <= big < 2**32
    np.random.seed(big)  # numpy refuses seeds of 2**32 and more


def test_run_seed_reads_lightnings_global_seed(monkeypatch):
    monkeypatch.setenv("PL_GLOBAL_SEED", "123")
    assert run_seed() == 123
    monkeypatch.delenv("PL_GLOBAL_SEED")
    assert run_seed(default=9) == 9
