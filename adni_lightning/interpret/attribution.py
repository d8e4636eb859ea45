"""Voxel attribution: Integrated Gradients (Captum) of a class probability with respect to the network input.

The baseline is the all-zero input, which is background both for one-hot label channels (no structure
anywhere) and for normalised intensities. IG's completeness makes the attributions of an image add up to
``p(class | image) − p(class | baseline)`` (up to the Riemann error Captum reports as the convergence delta),
so the voxel map and the structure occlusion share one unit: probability. The map is summed over channels; a
one-hot input is non-zero in at most one channel per voxel, so the sum is that structure's attribution. With a
background baseline, only labelled voxels can receive attribution: IG cannot point at tissue that is missing.
Age and sex are held at the image's values (they are an additional forward argument, not attributed).

A score task's model (a regression) is attributed the same way with its predicted score, in the score's units, in place
of a probability (:class:`ScoreModel`): the attributions then add up to the score's change from the baseline.

Captum is an optional dependency (``pip install adni_lightning[interpret]``), imported when first needed.
"""

from __future__ import annotations

from typing import Any, Protocol, cast

import torch
from torch import nn


def captum_attr() -> Any:
    """``captum.attr``, or an ImportError that says how to install it."""
    try:
        import captum.attr
    except ImportError as err:
        raise ImportError(
            "interpret needs Captum: pip install 'adni_lightning[interpret]' (or pip install captum)"
        ) from err
    return captum.attr


class ProbabilityModel(nn.Module):
    """A classifier's softmax probabilities as a function of the network input, for Captum."""

    def __init__(self, model: nn.Module) -> None:
        super().__init__()
        self.model = model

    def forward(self, image: torch.Tensor, tabular: torch.Tensor) -> torch.Tensor:
        return self.model(image, tabular.expand(len(image), -1)).float().softmax(dim=1)


class Regressor(Protocol):
    """A score task's model (``ADNIClassifier`` with ``objective: regression``): outputs, and them in the score's
    units.
    """

    def __call__(self, image: torch.Tensor, tabular: torch.Tensor) -> torch.Tensor: ...

    def in_units(self, outputs: torch.Tensor) -> torch.Tensor: ...


def predicted_score(model: nn.Module, image: torch.Tensor, tabular: torch.Tensor) -> torch.Tensor:
    """A score task's ``(B, 1)`` predicted score, in its units."""
    regressor = cast(Regressor, model)
    return regressor.in_units(regressor(image, tabular).float())[:, None]


class ScoreModel(nn.Module):
    """A score task's predicted score, in its units, as a ``(B, 1)`` function of the network input, for Captum."""

    def __init__(self, model: nn.Module) -> None:
        super().__init__()
        self.model = model

    def forward(self, image: torch.Tensor, tabular: torch.Tensor) -> torch.Tensor:
        return predicted_score(self.model, image, tabular.expand(len(image), -1))


def integrated_gradients(
    model: nn.Module,
    image: torch.Tensor,
    tabular: torch.Tensor,
    target: int,
    steps: int = 32,
    chunk: int = 8,
    score: bool = False,
) -> tuple[torch.Tensor, float]:
    """IG of ``p(target)`` (with ``score``: of the predicted score, ``target`` 0) for one ``(1, C, D, H, W)`` input:
    the ``(D, H, W)`` map summed over channels, and Captum's convergence delta (sum of attributions minus the output's
    change from the baseline).

    ``chunk`` inputs go through the network at a time (Captum's ``internal_batch_size``).
    """
    ig = captum_attr().IntegratedGradients(ScoreModel(model) if score else ProbabilityModel(model))
    attributions, delta = ig.attribute(
        image,
        baselines=torch.zeros_like(image),
        target=target,
        additional_forward_args=(tabular,),
        n_steps=steps,
        internal_batch_size=chunk,
        return_convergence_delta=True,
    )
    return attributions[0].sum(dim=0).detach(), float(delta.item())
