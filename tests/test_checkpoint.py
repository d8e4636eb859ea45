"""Reading a checkpoint before Lightning does: damaged files named as such, other models explained in one line."""

from __future__ import annotations

import struct
import zipfile
from pathlib import Path

import lightning as L
import pytest
import torch
from torch import nn

from adni_lightning.checkpoint import CheckpointError, check_model, read_checkpoint
from adni_lightning.data.contract import ContractError


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
