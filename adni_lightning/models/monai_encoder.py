"""Any ``monai.networks.nets`` network as the image encoder, chosen by name in the config.

One adapter instead of a wrapper per network: MONAI's nets disagree on argument names (``in_channels`` vs
``n_input_channels``, ``out_channels`` vs ``num_classes``) and on what they return, so the adapter finds the
names in the signature and reduces the output to ``(B, feature_dim)``. MONAI stays an optional extra: it is
imported only when a :class:`MonaiEncoder` is built.
"""

from __future__ import annotations

import difflib
import importlib
import inspect
import typing
from collections.abc import Callable
from typing import Any

import torch
from torch import nn

from adni_lightning.errors import OptionError

_INPUT_NAMES = ("in_channels", "n_input_channels")  # n_input_channels: monai's ResNet
_OUTPUT_NAMES = ("out_channels", "num_classes")  # out_channels: DenseNet, UNet...; num_classes: ResNet, ViT...


def _network_factory(network: str) -> Callable[..., nn.Module]:
    """``monai.networks.nets.<network>``, imported here so that MONAI is needed only when it is used."""
    try:
        nets = importlib.import_module("monai.networks.nets")
    except ImportError as err:
        raise ImportError("MonaiEncoder needs MONAI: pip install adni_lightning[monai]") from err
    factory = getattr(nets, network, None)
    if not network.startswith("_") and callable(factory):
        return factory
    names: dict[str, str] = {}  # lower case → first spelling in dir() order: DenseNet121 over densenet121
    for name in dir(nets):
        if not name.startswith("_") and callable(getattr(nets, name)):
            names.setdefault(name.lower(), name)
    close = [names[name] for name in difflib.get_close_matches(network.lower(), names, n=3)]
    hint = f"; did you mean {', '.join(close)}?" if close else ""
    raise OptionError(f"model.image_encoder.init_args.network: monai.networks.nets has no network {network!r}{hint}")


def _parameter_names(factory: Callable[..., nn.Module]) -> set[str]:
    """Keyword arguments ``factory`` accepts, following ``**kwargs`` up the class hierarchy (``SEResNet50`` →
    ``SENet``) or into the class a function returns (``resnet10`` → ``ResNet``).
    """
    chain: list[Any]  # classes, or a function and the annotation of what it returns
    if isinstance(factory, type):
        chain = [cls for cls in factory.__mro__ if issubclass(cls, nn.Module) and cls is not nn.Module]
    else:
        chain = [factory, typing.get_type_hints(factory).get("return")]
    names: set[str] = set()
    for target in filter(callable, chain):
        params = inspect.signature(target).parameters.values()
        names |= {p.name for p in params if p.kind not in (p.VAR_POSITIONAL, p.VAR_KEYWORD)}
        if all(p.kind is not p.VAR_KEYWORD for p in params):
            break
    return names


class MonaiEncoder(nn.Module):
    """``monai.networks.nets.<network>`` built for 3D with ``in_channels`` inputs and ``feature_dim`` outputs.

    ``kwargs`` go to the network unchanged (e.g. ``block_config`` for DenseNet, ``layers`` for ResNet). A
    tuple/list output (ViT with ``classification: true``: ``(logits, hidden_states)``) is reduced to its first
    element, and spatial dimensions left over (segmentation nets such as UNet) are averaged away. The result
    goes through a ReLU, as the features of :class:`ResNet3d`, :class:`SeedCNN` and :class:`TabularNet` do:
    MONAI's classification heads end in a plain ``Linear``, which followed directly by FusionNet's ``Linear``
    would only be a factorised linear map; the ReLU makes the head a real hidden layer of width ``feature_dim``.
    """

    def __init__(
        self,
        in_channels: int,
        network: str = "DenseNet121",
        feature_dim: int = 128,
        kwargs: dict[str, Any] | None = None,
    ) -> None:
        super().__init__()
        factory = _network_factory(network)
        accepted = _parameter_names(factory)
        input_name = next((name for name in _INPUT_NAMES if name in accepted), None)
        output_name = next((name for name in _OUTPUT_NAMES if name in accepted), None)
        if input_name is None or output_name is None:
            raise OptionError(
                f"model.image_encoder.init_args.network: {network} takes none of {_INPUT_NAMES} or of "
                f"{_OUTPUT_NAMES}: not usable as an encoder"
            )
        args: dict[str, Any] = {input_name: in_channels, output_name: feature_dim}
        if "spatial_dims" in accepted:
            args["spatial_dims"] = 3
        if clash := sorted(args.keys() & (kwargs or {}).keys()):
            raise OptionError(
                f"model.image_encoder.init_args.kwargs may not set {clash}: MonaiEncoder sets them from in_channels "
                "and feature_dim"
            )
        self.out_features = feature_dim
        self.network: nn.Module = factory(**args, **(kwargs or {}))

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        """``(B, C, D, H, W)`` → ``(B, feature_dim)``, non-negative (after ReLU)."""
        out = self.network(x)
        if isinstance(out, (tuple, list)):
            out = out[0]
        if out.ndim > 2:
            out = out.flatten(2).mean(dim=2)
        if out.shape[1:] != (self.out_features,):
            raise OptionError(
                f"model.image_encoder: {type(self.network).__name__} gave {tuple(out.shape[1:])} features, "
                f"not ({self.out_features},): "
                "its kwargs switch off the head that takes the output size (ResNet: feed_forward, ViT: classification)"
            )
        return torch.relu(out)
