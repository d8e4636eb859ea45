"""Reading a checkpoint before Lightning does: damaged files named as such, other models explained in one line."""

from __future__ import annotations

import struct
import zipfile
from pathlib import Path

import lightning as L
import pytest
import torch
from torch import nn

from adni_lightning.checkpoint import (
    CheckpointError,
    ResumeError,
    check_model,
    check_options,
    finished_epochs,
    read_checkpoint,
)
from adni_lightning.data.contract import ContractError
from tests.helpers import with_dotted


class Tiny(L.LightningModule):
    """A network with one shape-deciding hyper-parameter the checker knows (``in_channels``) and one it does not."""

    def __init__(self, in_channels: int = 2, width: int = 4) -> None:
        super().__init__()
        self.save_hyperparameters()
        self.layer = nn.Linear(in_channels, width)
        self.head = nn.Linear(width, 3)


def _save(model: L.LightningModule, path: Path) -> Path:
    torch.save({"state_dict": model.state_dict(), "hyper_parameters": dict(model.hparams)}, path)
    return path


def _first_tensor_byte(path: Path) -> int:
    """Offset of the first byte of the first tensor's data inside the checkpoint's zip archive."""
    with zipfile.ZipFile(path) as archive:
        entry = next(i for i in archive.infolist() if "/data/" in i.filename)
    raw = path.read_bytes()
    name_length, extra_length = struct.unpack("<HH", raw[entry.header_offset + 26 : entry.header_offset + 30])
    return entry.header_offset + 30 + name_length + extra_length


def test_a_sound_checkpoint_is_read_on_the_cpu(tmp_path):
    checkpoint = read_checkpoint(_save(Tiny(), tmp_path / "model.ckpt"))
    assert checkpoint["hyper_parameters"] == {"in_channels": 2, "width": 4}
    assert checkpoint["state_dict"]["layer.weight"].device.type == "cpu"


def test_missing_truncated_and_corrupt_checkpoints_are_named(tmp_path):
    path = _save(Tiny(), tmp_path / "model.ckpt")
    with pytest.raises(CheckpointError) as missing:
        read_checkpoint(tmp_path / "nowhere.ckpt")
    assert str(missing.value) == f"--ckpt_path {tmp_path / 'nowhere.ckpt'}: no such file"

    truncated = tmp_path / "truncated.ckpt"
    truncated.write_bytes(path.read_bytes()[:-200])
    with pytest.raises(CheckpointError) as cut:
        read_checkpoint(truncated)
    assert str(cut.value) == (
        f"{truncated} is truncated or not a checkpoint ({truncated.stat().st_size} bytes; File is not a zip file)"
    )

    raw = bytearray(path.read_bytes())
    raw[_first_tensor_byte(path)] ^= 0xFF  # torch.load would read the flipped weight without complaint
    corrupt = tmp_path / "corrupt.ckpt"
    corrupt.write_bytes(bytes(raw))
    with pytest.raises(CheckpointError) as flipped:
        read_checkpoint(corrupt)
    assert str(flipped.value).startswith(f"{corrupt} is corrupt: its entry ")
    assert str(flipped.value).endswith(" fails its CRC check") and "/data/" in str(flipped.value)

    torch.save({"weights": torch.zeros(2)}, tmp_path / "plain.pt")
    with pytest.raises(CheckpointError, match=r"plain.pt is not a Lightning checkpoint \(no state_dict\)$"):
        read_checkpoint(tmp_path / "plain.pt")


def test_another_model_is_explained_by_its_hyper_parameters_or_its_first_parameter(tmp_path):
    checkpoint = read_checkpoint(_save(Tiny(in_channels=2, width=4), tmp_path / "model.ckpt"))
    check_model(checkpoint, Tiny(in_channels=2, width=4), "model.ckpt")
    with pytest.raises(ContractError) as channels:
        check_model(checkpoint, Tiny(in_channels=5, width=4), "model.ckpt")
    assert (
        str(channels.value) == "model.ckpt does not fit this configuration: model.in_channels: checkpoint 2, config 5"
    )
    with pytest.raises(ContractError) as width:
        check_model(checkpoint, Tiny(in_channels=2, width=8), "model.ckpt")
    assert str(width.value) == (
        "model.ckpt does not fit this configuration: parameter layer.weight: checkpoint (4, 2), model (8, 2) "
        "(and 2 more)"
    )


OPTIONS = {
    "seed_everything": 42,
    "trainer": {"max_epochs": 2, "precision": "32-true", "devices": 1},
    "model": {"optimizer": {"class_path": "torch.optim.AdamW", "init_args": {"lr": 0.001}}, "num_logged_volumes": 4},
    "data": {"class_path": "x.DataModule", "init_args": {"loader": {"batch_size": 4, "num_workers": 2}}},
}


def _changed(**values: object) -> dict:
    """``OPTIONS`` with dotted options set, e.g. ``_changed(**{"trainer.max_epochs": 5})``."""
    return with_dotted(OPTIONS, **values)


def test_a_resume_may_change_its_length_logging_and_hardware_but_nothing_that_shapes_training():
    checkpoint = {"options": OPTIONS}
    resumable = {
        "trainer.max_epochs": 5,
        "trainer.devices": 2,
        "model.num_logged_volumes": 0,
        "data.init_args.loader.num_workers": 0,
    }
    check_options(checkpoint, _changed(**resumable), "last.ckpt")
    shaping = {"trainer.precision": "bf16-mixed", "data.init_args.loader.batch_size": 2, "seed_everything": 1}
    with pytest.raises(ResumeError) as refused:
        check_options(checkpoint, _changed(**resumable, **shaping), "last.ckpt")
    assert str(refused.value) == (
        "last.ckpt was trained with other options than this run asks for: seed_everything: checkpoint 42, config 1; "
        "trainer.precision: checkpoint 32-true, config bf16-mixed; data.loader.batch_size: checkpoint 4, config 2; "
        "only the run's length, logging, paths and hardware may change on resume (docs/CHECKS.md): give the "
        "checkpoint's values, or train a new run in another --trainer.default_root_dir"
    )


def test_a_checkpoint_without_its_options_is_compared_on_its_model_hyper_parameters():
    checkpoint = {"hyper_parameters": {**OPTIONS["model"], "_instantiator": "lightning.pytorch.cli.instantiate_module"}}
    check_options(checkpoint, _changed(**{"trainer.precision": "bf16-mixed"}), "old.ckpt")  # not stored: not compared
    with pytest.raises(ResumeError, match=r"^old.ckpt .*: model.optimizer.init_args.lr: checkpoint 0.001, config 0.1;"):
        check_options(checkpoint, _changed(**{"model.optimizer.init_args.lr": 0.1}), "old.ckpt")


def test_finished_epochs_come_from_the_fit_loop_or_the_epoch():
    progress = {"loops": {"fit_loop": {"epoch_progress": {"current": {"processed": 3}}}}, "epoch": 2}
    assert finished_epochs(progress) == 3
    assert finished_epochs({"epoch": 4}) == 5
