"""What a checkpoint promises about its inputs, compared with the configuration before anything is loaded or written.

A model's outputs mean something only for inputs made as its training inputs were: the same classes in the same
order, the same input kind, channels and preprocessing (hence the same cache entries), the same tabular features
scaled with the training split's statistics and, when it is scored on its own run's split, the same subjects on each
side. :func:`data_contract` gathers these; the DataModule stores them in every checkpoint (key ``data``, version
:data:`CONTRACT_VERSION`) and :func:`check_contract` compares them with the configuration, naming each differing
field by the option that sets it, with both values. Checkpoints written before the contract hold only the classes,
the tabular statistics and a fingerprint of the split: those are compared, and a console line says the rest is not.

A contract also carries a summary of the training side (:func:`cohort_summary`: images per class, age, sex, ICV-
normalised regional volumes), so a checkpoint scored on another cohort can show how that cohort differs. It is
informational: no check compares it, and a checkpoint without it still loads.
"""

from __future__ import annotations

import logging
from collections.abc import Mapping, Sequence
from pathlib import Path
from typing import TYPE_CHECKING, TypedDict

import numpy as np
import pandas as pd

from adni_lightning.data.clinical import GROUP_TASK
from adni_lightning.data.split import split_digest
from adni_lightning.data.volumes import LABELLED, structure_columns
from adni_lightning.errors import ProjectError
from adni_lightning.vocabulary import ClassName

if TYPE_CHECKING:
    from adni_lightning.data.preprocess import Preprocessing
    from adni_lightning.data.tabular import TabularEncoder

log = logging.getLogger(__name__)

#: 1: classes, preprocessing (with its cache key), tabular statistics, the split's assignment and fingerprint.
#: 2: adds the training side's :func:`cohort_summary` (``training_cohort``, compared by no check).
#: 3: adds the task (``data.task``'s :meth:`~adni_lightning.data.clinical.TaskSpec.contract`); a checkpoint without it
#: was trained for the default task, the CSV's Group.
CONTRACT_VERSION = 3
#: The contract's key of the training side's :func:`cohort_summary`.
SUMMARY_KEY = "training_cohort"

#: Contract field (dotted path) → the option that sets it, in the order differences are reported.
FIELDS = {
    "task": "data.task",
    "classes": "data.manifest.classes",
    "preprocessing.input_kind": "data.preprocessing.input_kind",
    "preprocessing.image_size": "data.preprocessing.image_size",
    "preprocessing.crop": "data.preprocessing.crop",
    "preprocessing.margin_mm": "data.preprocessing.margin_mm",
    "preprocessing.normalise": "data.preprocessing.normalise",
    "preprocessing.channels": "data.preprocessing.channels",
    "preprocessing.label_encoding": "data.preprocessing.label_encoding",
    "tabular.volumes": "data.tabular.volumes",
}

_ABSENT = object()


class StructureStats(TypedDict):
    """A structure's volume over the labelled volume (the ICV proxy), across a cohort's images."""

    mean: float
    sd: float


class CohortSummary(TypedDict):
    """:func:`cohort_summary`: who is in a cohort, in plain values (a checkpoint keeps the training side's)."""

    images: dict[ClassName, int]
    subjects: int
    age_mean: float
    age_sd: float
    sex: dict[str, int]
    volumes: dict[str, StructureStats]


class ContractError(ProjectError, ValueError):
    """A checkpoint does not fit the configuration; the message names each differing field with both values."""


def cohort_summary(rows: pd.DataFrame, classes: Sequence[ClassName], volumes: pd.DataFrame | None) -> CohortSummary:
    """Who is in a cohort, in plain values: images per class, subjects, age mean/sd (over images), sex (subjects),
    and per structure the mean/sd of its volume divided by the labelled volume (the ICV proxy).

    ``rows`` are manifest rows (``label``, ``subject``, ``age``, ``sex``); ``volumes`` their
    :func:`~adni_lightning.data.volumes.regional_volumes`, or ``None`` (intensity images have no structures).
    """
    ages = rows["age"].astype(float)
    sexes = rows.drop_duplicates("subject")["sex"].value_counts()
    summary: CohortSummary = {
        "images": {c: int((rows["label"] == c).sum()) for c in classes},
        "subjects": int(rows["subject"].nunique()),
        "age_mean": float(ages.mean()),
        "age_sd": float(ages.std()) if len(ages) > 1 else 0.0,
        "sex": {s: int(sexes.get(s, 0)) for s in ("F", "M")},
        "volumes": {},
    }
    if volumes is not None and len(volumes):
        ratios = volumes[structure_columns(volumes)].div(volumes[LABELLED], axis=0)
        sd = ratios.std() if len(ratios) > 1 else pd.Series(0.0, index=ratios.columns)
        summary["volumes"] = {
            name: {"mean": float(ratios[name].mean()), "sd": float(np.nan_to_num(sd[name]))} for name in ratios.columns
        }
    return summary


def data_contract(
    classes: Sequence[ClassName],
    preprocessing: Preprocessing,
    encoder: TabularEncoder,
    split: pd.DataFrame | None,
    summary: CohortSummary | None = None,
    task: str = GROUP_TASK,
) -> dict[str, object]:
    """The contract of a configuration (plain values only, so a checkpoint loads with ``weights_only``); ``summary``
    is the training side's :func:`cohort_summary`, when known; ``task`` the task's one-line contract.
    """
    return {
        "version": CONTRACT_VERSION,
        "task": task,
        "classes": list(classes),
        "preprocessing": preprocessing.contract(),
        "cache_key": preprocessing.key(),
        "tabular": encoder.state_dict(),
        "split_digest": split_digest(split) if split is not None else None,
        "split": dict(zip(split["image_id"], split["split"])) if split is not None else None,
        SUMMARY_KEY: dict(summary) if summary is not None else None,
    }


def _get(contract: Mapping[str, object], field: str) -> object:
    value: object = contract
    for key in field.split("."):
        if not isinstance(value, Mapping) or key not in value:
            return _ABSENT
        value = value[key]
    return list(value) if isinstance(value, tuple) else value


def describe(option: str, trained: object, current: object) -> str:
    """``option: checkpoint X, config Y``; mappings by their keys, or by the entries that differ if the keys match."""
    if isinstance(trained, Mapping) and isinstance(current, Mapping):
        if list(trained) != list(current):
            trained, current = list(trained), list(current)
        else:
            keys = [k for k in trained if trained[k] != current[k]]
            trained, current = {k: trained[k] for k in keys}, {k: current[k] for k in keys}
    return f"{option}: checkpoint {trained}, config {current}"


def contract_differences(trained: Mapping[str, object], current: Mapping[str, object]) -> list[str]:
    """One :func:`describe` per field both contracts hold with different values (the split is compared apart)."""
    differences = []
    for field, option in FIELDS.items():
        a, b = _get(trained, field), _get(current, field)
        if field == "task" and a is _ABSENT:
            a = GROUP_TASK  # written before the task was part of the contract: trained for the CSV's Group
        if field in ("preprocessing.channels", "preprocessing.label_encoding") and None in (a, b):
            continue  # intensity inputs have no channels: input_kind says so
        if field == "preprocessing.label_encoding" and a is _ABSENT and _get(trained, "preprocessing") is not _ABSENT:
            a = "nearest"  # written before the option existed: nearest neighbour was the only encoding
        if a is not _ABSENT and b is not _ABSENT and a != b:
            differences.append(describe(option, a, b))
    preprocessing_named = any(d.startswith("data.preprocessing.") for d in differences)
    key_a, key_b = _get(trained, "cache_key"), _get(current, "cache_key")
    if not preprocessing_named and _ABSENT not in (key_a, key_b) and key_a != key_b:
        differences.append(describe("data.preprocessing (cache key)", key_a, key_b))
    return differences


def split_difference(trained: Mapping[str, object], current: Mapping[str, object], split_file: Path) -> str | None:
    """How the split of ``current`` differs from the one the checkpoint was trained on, or ``None``.

    Images the checkpoint's split holds but this one does not (rows skipped since) are no difference: scoring a
    subset of the same sides leaks nothing. An image on another side, or one training never saw, is.
    """
    sides, now = trained.get("split"), current.get("split")
    if not isinstance(now, Mapping):  # None: not scored on the run's split
        return None
    if not isinstance(sides, Mapping):  # None: a checkpoint older than the contract
        digest = trained.get("split_digest")
        if digest is None or digest == current.get("split_digest"):
            return None
        return (
            f"data.split: {split_file} is not the split the checkpoint was trained on "
            f"(fingerprint {digest}, now {current.get('split_digest')})"
        )
    moved = [(i, sides[i], side) for i, side in now.items() if i in sides and sides[i] != side]
    if moved:
        image, before, after = moved[0]
        if before == "train":
            why = "it would be scored on images it was trained on"
        elif after == "train":
            why = "held-out images would be trained on"
        else:
            why = "its held-out sides would be mixed"
        return (
            f"data.split: {len(moved)} image(s) of {split_file} are on another side than when the checkpoint was "
            f"trained, e.g. {image}: checkpoint {before}, config {after} ({why})"
        )
    added = [(i, side) for i, side in now.items() if i not in sides]
    if added:
        image, side = added[0]
        return (
            f"data.split: {len(added)} image(s) of {split_file} were not in the checkpoint's split, e.g. {image} "
            f"(now {side}): the split was drawn again or for other data"
        )
    return None


def check_contract(
    trained: Mapping[str, object] | None,
    current: Mapping[str, object],
    source: str,
    split_file: Path | None = None,
    quiet: bool = False,
) -> None:
    """Raise :class:`ContractError` naming every field in which ``trained`` (a checkpoint's) differs from ``current``.

    ``current`` holds a split when the command scores or trains on the run's split; ``split_file`` names it. A
    checkpoint older than the contract is checked on what it holds, with a console line saying so (unless ``quiet``:
    the second check of the same checkpoint).
    """
    if trained is None:
        raise ContractError(f"{source} holds no data contract (no 'data' entry): it was not written by adni_lightning")
    if "version" not in trained and not quiet:
        log.warning(
            "%s predates the data contract: its classes, tabular features and split are checked, its preprocessing "
            "is not",
            source,
        )
    differences = contract_differences(trained, current)
    split = split_difference(trained, current, split_file or Path("split.csv"))
    if split:
        differences.append(split)
    if differences:
        raise ContractError(f"{source} does not fit this configuration: {'; '.join(differences)}")
