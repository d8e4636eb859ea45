"""A checkpoint read and checked before Lightning loads it: a damaged file or another model is one line, not 46.

Lightning reads ``--ckpt_path`` only once the data are prepared and the model is built, and a model of other
shapes then fails with one ``size mismatch`` line per parameter. The CLI reads the file first
(:func:`read_checkpoint`: every zip entry's CRC, then a ``weights_only`` load), compares its data contract
(:mod:`adni_lightning.data.contract`) and its model (:func:`check_model`) with the configuration, and refuses a
mismatch naming the option and both values. The configuration describes the model: the checkpoint's
hyper-parameters are compared with it, not merged into it (as Lightning has done since 2.5.5), so an option the
command line asks for is never silently replaced. Only ``predict`` takes something from the checkpoint: its
preprocessing (:func:`adopt_preprocessing`), so a new cohort is read as the training cohort was.
"""

from __future__ import annotations

import zipfile
from collections.abc import Mapping
from pathlib import Path
from typing import Any

import torch
from jsonargparse import Namespace
from lightning.pytorch import LightningModule

from adni_lightning.data.contract import ContractError, describe
from adni_lightning.data.preprocess import Preprocessing
from adni_lightning.errors import ProjectError

#: Hyper-parameters that fix the network's shapes and the meaning of its outputs.
MODEL_KEYS = (
    "image_encoder",
    "tabular_dim",
    "in_channels",
    "num_classes",
    "class_names",
    "num_tabular_features",
    "input_kind",
)

#: ``--ckpt_path`` values that Lightning resolves itself (``last`` is resolved by the CLI to the run's last.ckpt).
LIGHTNING_CKPT_NAMES = ("best", "hpc")


class CheckpointError(ProjectError, ValueError):
    """A checkpoint file cannot be read: missing, truncated or corrupt; the message names the file."""


def read_checkpoint(path: str | Path) -> dict[str, Any]:
    """The checkpoint at ``path``, on the CPU, after checking every entry of its zip archive against its CRC.

    A truncated file is not a zip archive any more; flipped bytes inside a tensor load without complaint from
    ``torch.load`` and are caught only by the CRC.
    """
    path = Path(path)
    if not path.is_file():
        raise CheckpointError(f"--ckpt_path {path}: no such file")
    size = path.stat().st_size
    try:
        with zipfile.ZipFile(path) as archive:
            bad = archive.testzip()
    except (zipfile.BadZipFile, OSError) as err:
        raise CheckpointError(f"{path} is truncated or not a checkpoint ({size} bytes; {err})") from err
    if bad is not None:
        raise CheckpointError(f"{path} is corrupt: its entry {bad} fails its CRC check")
    try:
        checkpoint = torch.load(path, map_location="cpu", weights_only=True)
    except Exception as err:  # whatever fails to unpickle, the file cannot be used: say why
        reason = str(err).strip().splitlines()[0] if str(err).strip() else type(err).__name__
        raise CheckpointError(f"{path} cannot be loaded as a checkpoint: {reason}") from err
    if not isinstance(checkpoint, dict) or "state_dict" not in checkpoint:
        raise CheckpointError(f"{path} is not a Lightning checkpoint (no state_dict)")
    return checkpoint


def _flatten(values: Mapping[str, Any], prefix: str = "") -> dict[str, Any]:
    flat: dict[str, Any] = {}
    for key, value in values.items():
        if isinstance(value, Namespace):
            value = value.as_dict()
        if isinstance(value, Mapping):
            flat.update(_flatten(value, f"{prefix}{key}."))
        else:
            flat[f"{prefix}{key}"] = list(value) if isinstance(value, tuple) else value
    return flat


def check_model(checkpoint: Mapping[str, Any], model: LightningModule, source: str) -> None:
    """Raise :class:`ContractError` when the checkpoint's network does not fit the model the config builds.

    Compares the hyper-parameters that fix its shapes (:data:`MODEL_KEYS`; ones only one side has are skipped),
    then every parameter's name and shape, which also covers networks whose options say nothing of their shapes.
    """
    trained = _flatten({k: v for k, v in (checkpoint.get("hyper_parameters") or {}).items() if k in MODEL_KEYS})
    current = _flatten({k: v for k, v in model.hparams.items() if k in MODEL_KEYS})
    differences = [
        describe(f"model.{k}", trained[k], current[k]) for k in trained if k in current and trained[k] != current[k]
    ]
    if not differences:
        differences = _shape_differences(checkpoint["state_dict"], model.state_dict())
    if differences:
        raise ContractError(f"{source} does not fit this configuration: {'; '.join(differences)}")


def _shape(tensors: Mapping[str, torch.Tensor], name: str) -> object:
    return tuple(tensors[name].shape) if name in tensors else "absent"


def _shape_differences(trained: Mapping[str, torch.Tensor], current: Mapping[str, torch.Tensor]) -> list[str]:
    """The first parameter that differs in name or shape (and how many more do), or nothing."""
    names = list(dict.fromkeys([*trained, *current]))
    differing = [n for n in names if _shape(trained, n) != _shape(current, n)]
    if not differing:
        return []
    name = differing[0]
    more = f" (and {len(differing) - 1} more)" if len(differing) > 1 else ""
    return [f"parameter {name}: checkpoint {_shape(trained, name)}, model {_shape(current, name)}{more}"]


def adopt_preprocessing(data: Namespace, state: Mapping[str, Any] | None) -> list[str]:
    """Set the ``data`` config's preprocessing to the checkpoint's where it differs; return a line per change.

    ``data`` is the parsed ``data`` group (its ``init_args`` in subclass mode). Nothing changes for a checkpoint
    without a contract (it says nothing of its preprocessing).
    """
    trained = (state or {}).get("preprocessing")
    if trained is None:
        return []
    group = data.init_args.preprocessing if "init_args" in data else data.preprocessing
    current = Preprocessing(**group.as_dict()).contract()
    lines = []
    for name, value in trained.items():
        if (name == "channels" and value is None) or value == current.get(name):
            continue
        value, was = _option_value(value), _option_value(current.get(name))
        lines.append(
            f"data.preprocessing.{name} {_short(value)} taken from the checkpoint (the config says {_short(was)})"
        )
        group[name] = value
    return lines


def _option_value(value: object) -> object:
    """A contract value as the option is written: an isotropic (D, H, W) size as one int."""
    if isinstance(value, list) and len(value) == 3 and all(isinstance(v, int) for v in value) and len(set(value)) == 1:
        return value[0]
    return value


def _short(value: object) -> object:
    """A channel map by its channel names; anything else as it is."""
    return list(value) if isinstance(value, Mapping) else value
