"""Age and sex as the network's numeric input: ``[age_z, sex_F, sex_M]`` in float32.

The blog fed raw ages (~75) next to 0/1 sex flags. Age is standardised here with the mean and standard
deviation of the *training* split only; the statistics are part of the checkpoint (through the DataModule's
state), so validation, test and predict runs standardise exactly as training did.
"""

from __future__ import annotations

from collections.abc import Iterable

import numpy as np

FEATURES = ("age_z", "sex_F", "sex_M")


class TabularEncoder:
    """Encodes (age, sex) rows; :meth:`fit` on training ages before use."""

    def __init__(self) -> None:
        self.age_mean: float | None = None
        self.age_std: float | None = None

    @property
    def num_features(self) -> int:
        return len(FEATURES)

    def fit(self, ages: Iterable[float]) -> TabularEncoder:
        values = np.asarray(list(ages), dtype=np.float64)
        if values.size == 0:
            raise ValueError("cannot fit age statistics on an empty training split")
        self.age_mean = float(values.mean())
        self.age_std = float(values.std()) if values.size > 1 and values.std() > 0 else 1.0
        return self

    def encode(self, age: float, sex: str) -> np.ndarray:
        if self.age_mean is None or self.age_std is None:
            raise RuntimeError(
                "age statistics are unknown: fit on a training split first, or predict with --ckpt_path "
                "(the checkpoint holds the training split's statistics)"
            )
        return np.array([(age - self.age_mean) / self.age_std, sex == "F", sex == "M"], dtype=np.float32)

    def state_dict(self) -> dict[str, float | None]:
        return {"age_mean": self.age_mean, "age_std": self.age_std}

    def load_state_dict(self, state: dict[str, float | None]) -> None:
        self.age_mean, self.age_std = state["age_mean"], state["age_std"]
