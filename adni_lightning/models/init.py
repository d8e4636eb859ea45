"""Weight initialisation shared by every network in :mod:`adni_lightning.models`.

PyTorch's per-layer defaults (Kaiming-uniform with ``a=sqrt(5)``) under-scale deep ReLU stacks; one explicit
scheme keeps the encoders comparable and their starting point reproducible from the seed alone.
"""

from __future__ import annotations

from torch import nn
from torch.nn.modules.batchnorm import _BatchNorm


def init_weights(module: nn.Module) -> None:
    """Initialise ``module`` and all its submodules in place.

    * ``Conv3d``: Kaiming-normal, ``fan_out``, ReLU gain (He et al. 2015, as torchvision's ResNets), zero bias.
      ``fan_out`` keeps the gradient variance constant through the backward pass.
    * BatchNorm: weight 1, bias 0, so every block starts as a plain normalisation.
    * ``Linear``: Xavier-uniform, zero bias; gain 1 suits both the heads that feed a ReLU and the logit layer,
      whose outputs should start small and symmetric.
    """
    for m in module.modules():
        if isinstance(m, nn.Conv3d):
            nn.init.kaiming_normal_(m.weight, mode="fan_out", nonlinearity="relu")
            if m.bias is not None:
                nn.init.zeros_(m.bias)
        elif isinstance(m, _BatchNorm):
            if m.weight is not None:
                nn.init.ones_(m.weight)
                nn.init.zeros_(m.bias)
        elif isinstance(m, nn.Linear):
            nn.init.xavier_uniform_(m.weight)
            if m.bias is not None:
                nn.init.zeros_(m.bias)
