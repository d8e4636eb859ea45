"""The module's performance options change how the network runs, not what it computes or stores."""

from __future__ import annotations

import torch

from adni_lightning.models import ResNet3d
from adni_lightning.module import ADNIClassifier


def _classifier(**options) -> ADNIClassifier:
    torch.manual_seed(0)
    return ADNIClassifier(lambda c: ResNet3d(c, widths=[4, 8], blocks=[1, 1]), in_channels=9, **options).eval()


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
