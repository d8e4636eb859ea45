"""The data layer: CSV → manifest → split → cache → dataset → batch, one small module per step.

Nothing here imports from the package root or from :mod:`adni_lightning.synth`.
"""

from adni_lightning.data.datamodule import ADNIDataModule

__all__ = ["ADNIDataModule"]
