"""The module's performance options change how the network runs, not what it computes or stores; its fusion
options build the wide-and-deep network and give its deep branch its own weight decay.
"""

from __future__ import annotations

from functools import partial

import pytest
import torch

from adni_lightning.checkpoint import check_model
from adni_lightning.data.contract import ContractError
from adni_lightning.errors import OptionError
from adni_lightning.models import FusionNet, ResNet3d, WideAndDeepNet
from adni_lightning.module import ADNIClassifier

#: One encoder factory for every model here, so that checkpoints compare equal on it.
ENCODER = partial(ResNet3d, widths=[4, 8], blocks=[1, 1])


def _classifier(**options) -> ADNIClassifier:
    torch.manual_seed(0)
    return ADNIClassifier(ENCODER, in_channels=9, **options).eval()


def test_channels_last_keeps_weights_and_input_in_that_format_and_the_same_logits():
    plain, fast = _classifier(), _classifier(channels_last=True)
    convs = [p for p in fast.parameters() if p.dim() == 5]
    assert convs and all(p.is_contiguous(memory_format=torch.channels_last_3d) for p in convs)
    assert not all(p.is_contiguous(memory_format=torch.channels_last_3d) for p in plain.parameters() if p.dim() == 5)
    seen = []
    fast.net.image_encoder.stem[0].register_forward_pre_hook(lambda module, inputs: seen.append(inputs[0]))
    image, tabular = torch.rand(2, 9, 16, 16, 16), torch.randn(2, 3)
    with torch.no_grad():
        torch.testing.assert_close(fast(image, tabular), plain(image, tabular), rtol=1e-4, atol=1e-5)
    assert seen[0].is_contiguous(memory_format=torch.channels_last_3d)


def test_a_plain_checkpoint_loads_into_a_channels_last_or_compiled_model():
    state = _classifier().state_dict()
    for options in ({"channels_last": True}, {"compile": True}):
        model = _classifier(**options)
        assert list(model.state_dict()) == list(state)  # compiling in place keeps the keys
        model.load_state_dict(state)
        assert all(torch.equal(model.state_dict()[k], v) for k, v in state.items())
        stem = model.net.image_encoder.stem[0].weight
        assert stem.is_contiguous(memory_format=torch.channels_last_3d) == bool(options.get("channels_last"))


def test_concat_fusion_gives_the_optimizer_every_parameter_in_one_group():
    model = _classifier()
    assert type(model.net) is FusionNet and model.hparams["fusion"] == "concat"
    model.optimizer_factory = partial(torch.optim.AdamW, lr=1e-3, weight_decay=0.05)
    (group,) = model.configure_optimizers().param_groups
    assert [id(p) for p in group["params"]] == [id(p) for p in model.parameters()]
    assert group["weight_decay"] == 0.05


def test_the_deep_branch_gets_its_own_weight_decay():
    model = _classifier(fusion="wide_deep", deep_weight_decay=0.5)
    assert type(model.net) is WideAndDeepNet
    model.optimizer_factory = partial(torch.optim.AdamW, lr=1e-3, weight_decay=0.05)
    wide, deep = model.configure_optimizers().param_groups
    assert [id(p) for p in wide["params"]] == [id(model.net.wide.weight), id(model.net.wide.bias)]
    assert [id(p) for p in deep["params"]] == [id(p) for p in model.net.deep.parameters()]
    assert (wide["weight_decay"], deep["weight_decay"]) == (0.05, 0.5)
    assert wide["lr"] == deep["lr"] == 1e-3
    unset = _classifier(fusion="wide_deep")  # null: the optimizer's weight decay everywhere, one group
    unset.optimizer_factory = partial(torch.optim.AdamW, weight_decay=0.05)
    (group,) = unset.configure_optimizers().param_groups
    assert len(group["params"]) == len(list(unset.parameters())) and group["weight_decay"] == 0.05


@pytest.mark.parametrize(
    ("options", "message"),
    [
        (
            {"deep_weight_decay": 0.1},
            "model.deep_weight_decay 0.1 applies to the deep branch of model.fusion wide_deep, and model.fusion is "
            "concat: set model.fusion wide_deep, or leave model.deep_weight_decay null",
        ),
        (
            {"fusion": "wide_deep", "deep_weight_decay": -0.1},
            "model.deep_weight_decay -0.1: it must be 0 or more (null: the optimizer's weight decay)",
        ),
    ],
)
def test_a_deep_weight_decay_that_cannot_apply_is_refused(options, message):
    with pytest.raises(OptionError) as refused:
        _classifier(**options)
    assert str(refused.value) == message


def test_a_wide_and_deep_checkpoint_loads_into_its_own_model_only():
    model = _classifier(fusion="wide_deep", deep_weight_decay=0.5)
    checkpoint = {"hyper_parameters": dict(model.hparams), "state_dict": model.state_dict()}
    assert "net.wide.weight" in checkpoint["state_dict"] and "net.deep.classifier.weight" in checkpoint["state_dict"]
    check_model(checkpoint, _classifier(fusion="wide_deep"), "last.ckpt")  # the decay does not shape the network
    _classifier(fusion="wide_deep").load_state_dict(checkpoint["state_dict"])
    with pytest.raises(ContractError) as refused:
        check_model(checkpoint, _classifier(), "last.ckpt")
    assert (
        str(refused.value)
        == "last.ckpt does not fit this configuration: model.fusion: checkpoint wide_deep, config concat"
    )
