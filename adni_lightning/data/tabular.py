"""The network's numeric input: ``[age_z, sex_F, sex_M]`` and, optionally, regional volumes, in float32.

The blog fed raw ages (~75) next to 0/1 sex flags. Age is standardised here with the mean and standard
deviation of the *training* split only; so is each regional volume chosen in ``data.tabular.volumes``
(divided by the label map's total labelled volume, the intracranial-volume proxy, then z-scored). The
statistics are part of the checkpoint, so validation, test and predict runs encode exactly as training did.
"""

from __future__ import annotations

from collections.abc import Iterable, Sequence
from dataclasses import dataclass
from typing import TypedDict

import numpy as np

BASE_FEATURES = ("age_z", "sex_F", "sex_M")


@dataclass(frozen=True)
class TabularSpec:
    """Covariates of the numeric branch beyond age and sex (the ``data.tabular`` config group).

    Args:
        volumes: FreeSurfer structure names (as in ``inspect``'s ``volumes.csv``, e.g. ``Left-Hippocampus``)
            whose ICV-normalised volumes join age and sex. Empty: age and sex only.
    """

    volumes: tuple[str, ...] = ()


class TabularState(TypedDict):
    """What a checkpoint stores of the encoder: the training split's statistics and the structures they describe."""

    age_mean: float | None
    age_std: float | None
    volumes: list[str]
    volume_mean: list[float] | None
    volume_std: list[float] | None


class TabularEncoder:
    """Encodes (age, sex[, volumes]) rows; :meth:`fit` on the training split before use.

    ``age=False`` leaves age out of the features (brain age: the age is the target, so it cannot be an input); its
    statistics are still fitted and kept, as they say the encoder was fitted.
    """

    def __init__(self, volumes: Sequence[str] = (), age: bool = True) -> None:
        self.volumes = tuple(volumes)
        self.age = age
        self.age_mean: float | None = None
        self.age_std: float | None = None
        self.volume_mean: list[float] | None = None
        self.volume_std: list[float] | None = None

    @property
    def features(self) -> tuple[str, ...]:
        base = BASE_FEATURES if self.age else BASE_FEATURES[1:]
        return base + tuple(f"{name}_icv_z" for name in self.volumes)

    @property
    def num_features(self) -> int:
        return len(self.features)

    def fit(self, ages: Iterable[float], volumes: np.ndarray | None = None) -> TabularEncoder:
        """Statistics of the training split: ages, and ``volumes`` (images × structures) when configured."""
        age_mean, age_std = _mean_std(np.asarray(list(ages), dtype=np.float64)[:, None])
        self.age_mean, self.age_std = age_mean[0], age_std[0]
        if self.volumes:
            if volumes is None or np.shape(volumes)[1:] != (len(self.volumes),):
                raise ValueError(f"fit needs the training split's volumes of {list(self.volumes)}")
            self.volume_mean, self.volume_std = _mean_std(np.asarray(volumes, dtype=np.float64))
        return self

    def encode(self, age: float, sex: str, volumes: Sequence[float] = ()) -> np.ndarray:
        """One image's ``(F,)`` float32 features."""
        return self.encode_batch(np.array([age]), np.array([sex]), np.asarray(volumes, dtype=np.float64)[None])[0]

    def encode_batch(self, ages: np.ndarray, sexes: np.ndarray, volumes: np.ndarray) -> np.ndarray:
        """``(N, F)`` float32 features of N images (``volumes``: N × the configured structures).

        One arithmetic for single items and whole batches, so every loader path yields the same bits.
        """
        if self.age_mean is None or self.age_std is None:
            raise RuntimeError(
                "age statistics are unknown: fit on a training split first, or predict with --ckpt_path "
                "(the checkpoint holds the training split's statistics)"
            )
        ages = np.asarray(ages, dtype=np.float64)
        if self.age:
            base = np.stack([(ages - self.age_mean) / self.age_std, sexes == "F", sexes == "M"], axis=1)
        else:
            base = np.stack([sexes == "F", sexes == "M"], axis=1).astype(np.float64)
        if not self.volumes:
            return base.astype(np.float32)
        assert self.volume_mean is not None and self.volume_std is not None  # set with the age statistics
        scaled = (np.asarray(volumes, dtype=np.float64) - self.volume_mean) / self.volume_std
        return np.concatenate([base, scaled], axis=1).astype(np.float32)

    def state_dict(self) -> TabularState:
        return {
            "age_mean": self.age_mean,
            "age_std": self.age_std,
            "volumes": list(self.volumes),
            "volume_mean": self.volume_mean,
            "volume_std": self.volume_std,
        }

    def load_state_dict(self, state: TabularState) -> None:
        trained = tuple(state.get("volumes") or ())
        if trained != self.volumes:
            raise ValueError(
                f"the checkpoint's tabular volumes {list(trained)} differ from the configured {list(self.volumes)}"
            )
        self.age_mean, self.age_std = state["age_mean"], state["age_std"]
        self.volume_mean, self.volume_std = state.get("volume_mean"), state.get("volume_std")


def _mean_std(values: np.ndarray) -> tuple[list[float], list[float]]:
    """Column means and standard deviations; a column without spread gets 1 (it cannot be scaled)."""
    if values.shape[0] == 0:
        raise ValueError("cannot fit statistics on an empty training split")
    std = values.std(axis=0) if values.shape[0] > 1 else np.ones(values.shape[1])
    return values.mean(axis=0).tolist(), np.where(std > 0, std, 1.0).tolist()
