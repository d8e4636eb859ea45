"""A checkpoint read and checked before Lightning loads it: a damaged file or another model is one line, not 46.

Lightning reads ``--ckpt_path`` only once the data are prepared and the model is built, and a model of other
shapes then fails with one ``size mismatch`` line per parameter. The CLI reads the file first
(:func:`read_checkpoint`: every zip entry's CRC, then a ``weights_only`` load), compares its data contract
(:mod:`adni_lightning.data.contract`) and its model (:func:`check_model`) with the configuration, and refuses a
mismatch naming the option and both values. The configuration describes the model: the checkpoint's
hyper-parameters are compared with it, not merged into it (as Lightning has done since 2.5.5), so an option the
command line asks for is never silently replaced. The commands that score a checkpoint (``validate``, ``test``,
``predict``, ``interpret``, ``evaluate``) take one thing from it, with a line each: its preprocessing
(:func:`checkpoint_preprocessing`), so images are read as the training cohort was.
"""

from __future__ import annotations

import zipfile
from collections.abc import Mapping
from pathlib import Path
from typing import Any

import torch
from jsonargparse import Namespace
from lightning.pytorch import LightningModule, Trainer
from lightning.pytorch.callbacks import Callback

from adni_lightning.data.contract import ContractError, describe
from adni_lightning.data.preprocess import Preprocessing
from adni_lightning.errors import ProjectError

#: Hyper-parameters that fix the network's shapes and the meaning of its outputs.
MODEL_KEYS = (
    "image_encoder",
    "fusion",
    "tabular_dim",
    "in_channels",
    "num_classes",
    "class_names",
    "num_tabular_features",
    "input_kind",
)

#: Options (dotted, ``init_args`` of the DataModule left out; a prefix covers a group) that may change when a run is
#: resumed: how long it runs, what it logs, where its files and data are, the hardware it runs on, and options that
#: change how, not what, the network computes. Every other option shapes training and must be the checkpoint's.
RESUMABLE_OPTIONS = (
    "config",
    "ckpt_path",
    "trainer.max_epochs",
    "trainer.min_epochs",
    "trainer.max_steps",
    "trainer.min_steps",
    "trainer.max_time",
    "trainer.default_root_dir",
    "trainer.logger",
    "trainer.callbacks",
    "trainer.enable_progress_bar",
    "trainer.enable_model_summary",
    "trainer.enable_checkpointing",
    "trainer.log_every_n_steps",
    "trainer.profiler",
    "trainer.num_sanity_val_steps",
    "trainer.check_val_every_n_epoch",
    "trainer.val_check_interval",
    "trainer.limit_val_batches",
    "trainer.limit_test_batches",
    "trainer.limit_predict_batches",
    "trainer.accelerator",
    "trainer.devices",
    "trainer.num_nodes",
    "trainer.strategy",
    "trainer.plugins",
    "trainer.deterministic",
    "trainer.benchmark",
    "trainer.detect_anomaly",
    "trainer.barebones",
    "trainer.inference_mode",
    "trainer.enable_autolog_hparams",
    "trainer.model_registry",
    "checkpoint.",
    "last_checkpoint.",
    "data.manifest.data_dir",
    "data.cache_dir",
    "data.split.file",
    "data.loader.num_workers",
    "data.loader.device_cache",
    "data.predict_split",
    "model.num_logged_volumes",
    "model.channels_last",
    "model.compile",
)

#: Checkpoint key of the options the run was trained with (Lightning's dump of the parsed config).
OPTIONS_KEY = "options"

#: ``--ckpt_path`` values that Lightning resolves itself (``last`` is resolved by the CLI to the run's last.ckpt).
LIGHTNING_CKPT_NAMES = ("best", "hpc")


class CheckpointError(ProjectError, ValueError):
    """A checkpoint file cannot be read (missing, truncated or corrupt), or a command that needs one got none."""


class ResumeError(ProjectError, RuntimeError):
    """``fit`` would overwrite an earlier run, resume nothing, resume a finished run, or resume with other options."""


class RunFinishedError(ResumeError):
    """``fit --ckpt_path`` on a checkpoint that already reached the run's length: there is nothing to train."""


class RunOptions(Callback):
    """Stores the run's options in every checkpoint (:data:`OPTIONS_KEY`): a resume is compared with them."""

    def __init__(self, options: Mapping[str, Any]) -> None:
        self.options = dict(options)

    def on_save_checkpoint(self, trainer: Trainer, pl_module: LightningModule, checkpoint: dict[str, Any]) -> None:
        checkpoint[OPTIONS_KEY] = self.options


def finished_epochs(checkpoint: Mapping[str, Any]) -> int:
    """How many epochs the run had finished when ``checkpoint`` was saved (Lightning's fit-loop progress)."""
    progress = checkpoint.get("loops", {}).get("fit_loop", {}).get("epoch_progress", {}).get("current", {})
    return int(progress.get("processed", checkpoint.get("epoch", -1) + 1))


def _option_name(key: str) -> str:
    """A flattened option as it is written on the command line (the DataModule's group without ``init_args``)."""
    return "data." + key.removeprefix("data.init_args.") if key.startswith("data.init_args.") else key


def check_options(checkpoint: Mapping[str, Any], options: Mapping[str, Any], source: str) -> None:
    """Raise :class:`ResumeError` when this ``fit`` asks for other training options than ``checkpoint`` was trained
    with: Lightning would restore the checkpoint's optimizer state and keep training as before, while the new
    ``config.yaml`` and checkpoints claimed otherwise. :data:`RESUMABLE_OPTIONS` may change. A checkpoint written
    before the options were stored is compared on its model's hyper-parameters.
    """
    if OPTIONS_KEY in checkpoint:
        trained, current = _flatten(checkpoint[OPTIONS_KEY]), _flatten(options)
    else:
        hparams = {k: v for k, v in (checkpoint.get("hyper_parameters") or {}).items() if not k.startswith("_")}
        trained, current = _flatten({"model": hparams}), _flatten({"model": options.get("model") or {}})
    names = {key: _option_name(key) for key in trained}
    differences = [
        describe(names[key], trained[key], current[key])
        for key in trained
        if key in current
        and trained[key] != current[key]
        and not any(
            names[key] == o or names[key].startswith(o if o.endswith(".") else f"{o}.") for o in RESUMABLE_OPTIONS
        )
    ]
    if differences:
        raise ResumeError(
            f"{source} was trained with other options than this run asks for: {'; '.join(differences)}; only the "
            "run's length, logging, paths and hardware may change on resume (docs/CHECKS.md): give the checkpoint's "
            "values, or train a new run in another --trainer.default_root_dir"
        )


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


def checkpoint_preprocessing(current: Preprocessing, state: Mapping[str, Any] | None) -> dict[str, object]:
    """The checkpoint's preprocessing options (``data.preprocessing.NAME`` → value) that differ from ``current``: what
    a scoring command takes from the checkpoint. Nothing for a checkpoint without a contract (it says nothing of its
    preprocessing).
    """
    trained = (state or {}).get("preprocessing")
    if trained is None:
        return {}
    contract = current.contract()
    return {
        f"data.preprocessing.{name}": _option_value(value)
        for name, value in trained.items()
        if not ((name in ("channels", "label_encoding") and value is None) or value == contract.get(name))
    }


def adoption_lines(current: Preprocessing, adopted: Mapping[str, object]) -> list[str]:
    """One console line per option :func:`checkpoint_preprocessing` changes."""
    contract = current.contract()
    return [
        f"{key} {_short(value)} taken from the checkpoint (the config says "
        f"{_short(_option_value(contract.get(key.rpartition('.')[2])))})"
        for key, value in adopted.items()
    ]


def adopt_preprocessing(data: Namespace, state: Mapping[str, Any] | None) -> list[str]:
    """Set the parsed ``data`` group's preprocessing (its ``init_args`` in subclass mode) to the checkpoint's where it
    differs; return a line per change.
    """
    group = data.init_args.preprocessing if "init_args" in data else data.preprocessing
    current = Preprocessing(**group.as_dict())
    adopted = checkpoint_preprocessing(current, state)
    for key, value in adopted.items():
        group[key.rpartition(".")[2]] = value
    return adoption_lines(current, adopted)


def _option_value(value: object) -> object:
    """A contract value as the option is written: an isotropic (D, H, W) size as one int."""
    if isinstance(value, list) and len(value) == 3 and all(isinstance(v, int) for v in value) and len(set(value)) == 1:
        return value[0]
    return value


def _short(value: object) -> object:
    """A channel map by its channel names; anything else as it is."""
    return list(value) if isinstance(value, Mapping) else value
