"""Interpreting a trained classifier: which FreeSurfer structures and voxels drive its predictions.

Structure occlusion (:mod:`.occlusion`, label maps only) removes one structure at a time; Integrated
Gradients (:mod:`.attribution`, Captum) attributes the predicted probability to voxels, which :mod:`.maps` puts
back on the source file's grid. :mod:`.ranking` aggregates over images, :mod:`.figures` draws, and
:class:`.callback.Interpreter` runs them all inside a ``predict`` run. The command is
``python -m adni_lightning interpret`` (:mod:`adni_lightning.commands.interpret`).
"""

from adni_lightning.interpret.callback import Interpreter
from adni_lightning.interpret.maps import ClassMaps, to_source_grid
from adni_lightning.interpret.occlusion import occlude, present_structures, structure_occlusion, visible_labels
from adni_lightning.interpret.ranking import bilateral_name, rank_structures

__all__ = [
    "ClassMaps",
    "Interpreter",
    "bilateral_name",
    "occlude",
    "present_structures",
    "rank_structures",
    "structure_occlusion",
    "to_source_grid",
    "visible_labels",
]
