"""The four kinds of value that name a class or a structure, told apart for the type checker.

A diagnosis is a class *name* (``"AD"``) in the CSV, the manifest and the reports, and a class *index* (its
position in ``data.manifest.classes``) in tensors and checkpoints. A structure is a FreeSurfer *label id*
(``17``, the left hippocampus) in the ``.mgz`` files, the channel maps and the interpretation reports, and a
*compact label* (its position in :data:`~adni_lightning.data.labels.KNOWN_LABELS`, stored as uint8) in the cache.
Indices and ids are all ints at run time: a class index passed where a label id belongs runs and answers
nonsense. As :class:`~typing.NewType` s they cost nothing at run time and ``make typecheck`` (mypy) refuses the
mix-up. A leaf module, so ``data/``, ``models/`` and ``evaluation/`` import it without a cycle.
"""

from __future__ import annotations

from typing import NewType

#: A diagnosis as written in the manifest and the reports (``"CN"``, ``"MCI"``, ``"AD"``).
ClassName = NewType("ClassName", str)

#: Position of a class in ``data.manifest.classes``: a target of the loss, a column of the probabilities.
ClassIndex = NewType("ClassIndex", int)

#: A FreeSurfer label id as in ``FreeSurferColorLUT.txt`` and the label maps (``17`` left hippocampus).
LabelId = NewType("LabelId", int)

#: Position of a label id in ``KNOWN_LABELS``: what a cached label map holds (uint8) per voxel.
CompactLabel = NewType("CompactLabel", int)
